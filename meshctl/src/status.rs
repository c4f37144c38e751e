//! `meshctl status`: the controller's version and, per connected agent or waypoint, the version
//! it acknowledged, as a table.

use std::fmt::Write as _;

use mesh_controller::admin::StatusReport;

/// Renders the report as a table.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "controller version {} ({} configuration errors, {} clients)",
        report.version,
        report.errors,
        report.clients.len()
    );
    // Why traffic is refused (policies and waypoints nothing enforces yet) among them.
    for message in &report.error_messages {
        let _ = writeln!(out, "  error: {message}");
    }
    if !report.error_messages.is_empty() && report.errors > report.error_messages.len() {
        let _ = writeln!(
            out,
            "  ... {} more (meshctl errors)",
            report.errors - report.error_messages.len()
        );
    }
    if report.clients.is_empty() {
        return out;
    }
    let rows: Vec<[String; 7]> = report
        .clients
        .iter()
        .map(|c| {
            let synced = if c.acked_version == report.version {
                "SYNCED"
            } else if c.last_nack.is_some() {
                "REJECTED"
            } else {
                "STALE"
            };
            [
                c.client_id.clone(),
                c.kind.clone(),
                c.node.clone(),
                c.acked_version.clone(),
                synced.to_owned(),
                c.resources.to_string(),
                c.peer.clone(),
            ]
        })
        .collect();
    let header = [
        "CLIENT",
        "KIND",
        "NODE",
        "ACKED",
        "STATUS",
        "RESOURCES",
        "PEER",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    // Version skew: what a client applied without understanding it (a newer controller).
    for c in report.clients.iter().filter(|c| !c.warnings.is_empty()) {
        let _ = writeln!(
            out,
            "{} applied config it does not fully understand:",
            c.client_id
        );
        for w in &c.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_controller::server::ClientInfo;

    #[test]
    fn renders_synced_and_stale_clients() {
        let report = StatusReport {
            version: "v2".to_owned(),
            errors: 1,
            error_messages: Vec::new(),
            clients: vec![
                ClientInfo {
                    client_id: "agent/a".to_owned(),
                    kind: "agent".to_owned(),
                    node: "a".to_owned(),
                    acked_version: "v2".to_owned(),
                    ..ClientInfo::default()
                },
                ClientInfo {
                    client_id: "agent/b".to_owned(),
                    kind: "agent".to_owned(),
                    node: "b".to_owned(),
                    acked_version: "v1".to_owned(),
                    warnings: vec!["Workload default/x: unknown field zone".to_owned()],
                    ..ClientInfo::default()
                },
            ],
        };
        let text = render(&report);
        assert!(text.starts_with("controller version v2 (1 configuration errors, 2 clients)"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("CLIENT"));
        assert!(lines[2].contains("agent/a") && lines[2].contains("SYNCED"));
        assert!(lines[3].contains("agent/b") && lines[3].contains("STALE"));
        assert_eq!(
            lines[4],
            "agent/b applied config it does not fully understand:"
        );
        assert_eq!(lines[5], "  Workload default/x: unknown field zone");
        let report = StatusReport {
            errors: 2,
            error_messages: vec!["x.yaml: AuthorizationPolicy apps/p: spec.targetRefs[0]: policy apps/p targets Service apps/echo: no waypoint runs to enforce it; traffic to it is denied".to_owned()],
            ..report
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("error: ") && lines[1].ends_with("traffic to it is denied"),
            "{text}"
        );
        assert!(lines[2].contains("1 more"), "{text}");
        assert!(lines[3].starts_with("CLIENT"), "{text}");
    }
}
