//! Workload locality from Nodes (and Istio's `istio-locality` pod label) and a Service's
//! `spec.trafficDistribution`, from recorded objects.

use mesh_common::model::{Locality, Snapshot, TrafficDistribution};
use mesh_controller::controller::{Change, Controller};
use mesh_controller::load::parse_yaml;
use mesh_controller::translate::TranslateOptions;

const NODES: &str = include_str!("data/locality/nodes.yaml");

fn pod(name: &str, node: &str, ip: &str, extra_labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web{extra_labels}}}}}\n\
         spec: {{nodeName: {node}, containers: [{{name: app, image: web}}]}}\n\
         status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
    )
}

fn load(files: &[(&str, &str)]) -> (Snapshot, Vec<String>) {
    let controller = Controller::new(TranslateOptions::default());
    controller
        .apply(
            files
                .iter()
                .map(|(unit, text)| Change::ReplaceUnit {
                    unit: (*unit).to_owned(),
                    parsed: parse_yaml(unit, text),
                })
                .collect(),
        )
        .expect("apply");
    let current = controller.current();
    let errors = current.errors.iter().map(ToString::to_string).collect();
    ((*current.snapshot).clone(), errors)
}

fn loc(region: &str, zone: &str, subzone: &str) -> Locality {
    Locality {
        region: region.into(),
        zone: zone.into(),
        subzone: subzone.into(),
    }
}

#[test]
fn workloads_take_their_nodes_locality_unless_the_pod_label_overrides() {
    let pods = [
        pod("a", "worker-a", "10.244.1.5", ""),
        pod("b", "worker-b", "10.244.2.5", ""),
        pod("c", "worker-c", "10.244.3.5", ""),
        pod("d", "worker-unknown", "10.244.4.5", ""),
        pod(
            "e",
            "worker-a",
            "10.244.1.6",
            ", istio-locality: us-east-1.us-east-1c.r9",
        ),
    ]
    .join("---\n");
    let (s, errors) = load(&[("nodes.yaml", NODES), ("pods.yaml", &pods)]);
    assert!(errors.is_empty(), "{errors:#?}");
    let cases = [
        ("a", loc("eu-west-1", "eu-west-1a", "rack-3")),
        ("b", loc("", "eu-west-1b", "")),
        ("c", loc("", "", "")),
        ("d", loc("", "", "")),
        ("e", loc("us-east-1", "us-east-1c", "r9")),
    ];
    for (name, want) in cases {
        let w = s
            .workloads
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("workload {name}: {:#?}", s.workloads));
        assert_eq!(w.locality, want, "workload {name}");
    }
}

#[test]
fn a_node_change_moves_its_workloads() {
    let pods = pod("a", "worker-b", "10.244.2.5", "");
    let (s, _) = load(&[("nodes.yaml", NODES), ("pods.yaml", &pods)]);
    assert_eq!(s.workloads[0].locality, loc("", "eu-west-1b", ""));
    let relabelled = NODES.replace(
        "topology.kubernetes.io/zone: eu-west-1b",
        "topology.kubernetes.io/zone: eu-west-1c",
    );
    let (s, _) = load(&[("nodes.yaml", &relabelled), ("pods.yaml", &pods)]);
    assert_eq!(s.workloads[0].locality, loc("", "eu-west-1c", ""));
}

#[test]
fn nodes_are_cluster_scoped_and_schema_checked() {
    let parsed = parse_yaml(
        "n.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, namespace: ignored}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: [not, a, map]}\n",
    );
    assert_eq!(parsed.objects.len(), 1, "{:#?}", parsed.errors);
    assert_eq!(parsed.objects[0].1.key().to_string(), "Node n1");
    assert_eq!(parsed.errors.len(), 1);
    let message = parsed.errors[0].to_string();
    assert!(
        message.contains("Node n2") && message.contains("metadata.labels"),
        "{message}"
    );
}

#[test]
fn traffic_distribution_by_value() {
    use TrafficDistribution::*;
    let cases: [(Option<&str>, Option<TrafficDistribution>, Option<&str>); 6] = [
        (None, None, None),
        (Some("PreferClose"), Some(PreferClose), None),
        (Some("PreferSameZone"), Some(PreferSameZone), None),
        (Some("PreferSameNode"), Some(PreferSameNode), None),
        (Some("Nearest"), None, Some("\"Nearest\"")),
        (Some("preferClose"), None, Some("\"preferClose\"")),
    ];
    for (value, want, warning) in cases {
        let field = value
            .map(|v| format!(", trafficDistribution: {v}"))
            .unwrap_or_default();
        let svc = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
             spec: {{clusterIP: 10.96.0.20, ports: [{{port: 80}}], selector: {{app: web}}{field}}}\n"
        );
        let (s, errors) = load(&[("svc.yaml", &svc)]);
        let service = s
            .services
            .iter()
            .find(|s| s.name == "web")
            .expect("service");
        assert_eq!(service.traffic_distribution, want, "{value:?}");
        match warning {
            None => assert!(errors.is_empty(), "{value:?}: {errors:#?}"),
            Some(part) => {
                assert_eq!(errors.len(), 1, "{errors:#?}");
                for p in [
                    "svc.yaml (document 1)",
                    "Service default/web",
                    "spec.trafficDistribution",
                    "warning",
                    part,
                ] {
                    assert!(errors[0].contains(p), "{p:?} not in {:?}", errors[0]);
                }
            }
        }
    }
}
