//! Running the load generators inside pods (bounded in time) and reading agent processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh_tests::agent::binary;
use mesh_tests::Pod;

/// Ports of the servers in each server pod.
pub const IPERF_PORT: u16 = 5201;
/// The raw echo server (ping-pong, new connections, idle connections).
pub const ECHO_PORT: u16 = 7000;
/// The tiny HTTP/1.1 server (wrk).
pub const HTTP_PORT: u16 = 8080;
/// An echo server in the direct client pod, reached over its own loopback: the "direct loopback
/// TCP" baseline of the same-node splice.
pub const LOOPBACK_ECHO_PORT: u16 = 7100;

/// Runs `program args` in `pod` under coreutils `timeout` (killed after `limit`); its stdout, or
/// an error with its stderr.
pub fn run_in(pod: &Pod, program: &str, args: &[&str], limit: Duration) -> anyhow::Result<String> {
    let secs = limit.as_secs().max(1).to_string();
    let mut cmd = pod.command("timeout");
    cmd.args(["-k", "5", &secs, program]).args(args);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} in {}", pod.uid()))?;
    if !out.status.success() {
        bail!(
            "{program} {} in {} failed ({}): {}{}",
            args.join(" "),
            pod.uid(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn testapp() -> anyhow::Result<String> {
    Ok(binary("mesh-testapp")?.display().to_string())
}

/// `key=value` from a line of `k=v` words.
fn field(text: &str, key: &str) -> anyhow::Result<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= in {text:?}"))?
        .parse()
        .with_context(|| format!("{key} in {text:?}"))
}

/// iperf3 result: bits per second received and bytes received.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Gbit/s at the receiver.
    pub gbits: f64,
    /// Bytes the receiver got.
    pub bytes: f64,
}

/// `iperf3 -c` from `client` to `server` for `seconds` (the first second omitted), `streams`
/// parallel streams.
pub fn iperf(client: &Pod, server: &Pod, seconds: u64, streams: u32) -> anyhow::Result<Throughput> {
    let server_ip = server.ip4.to_string();
    let (port, t, p) = (
        IPERF_PORT.to_string(),
        seconds.to_string(),
        streams.to_string(),
    );
    let args = [
        "-c", &server_ip, "-p", &port, "-t", &t, "-O", "1", "-P", &p, "-J",
    ];
    let limit = Duration::from_secs(seconds + 30);
    // The server takes one test at a time and may still be closing the previous one.
    let out = match run_in(client, "iperf3", &args, limit) {
        Ok(out) => out,
        Err(_) => {
            std::thread::sleep(Duration::from_secs(1));
            run_in(client, "iperf3", &args, limit)?
        }
    };
    parse_iperf(&out).map_err(|e| anyhow::anyhow!("iperf3: {e}"))
}

/// The receiver's figures from `iperf3 -J` output; an error when iperf3 reported one (its JSON
/// has an `error` member) or gave no end summary.
pub fn parse_iperf(out: &str) -> Result<Throughput, String> {
    let json: serde_json::Value =
        serde_json::from_str(out).map_err(|e| format!("no JSON output ({e}): {out}"))?;
    if let Some(error) = json["error"].as_str() {
        return Err(format!("reported an error: {error}"));
    }
    let sum = &json["end"]["sum_received"];
    let (Some(bps), Some(bytes)) = (sum["bits_per_second"].as_f64(), sum["bytes"].as_f64()) else {
        return Err(format!("no end.sum_received: {out}"));
    };
    Ok(Throughput {
        gbits: bps / 1e9,
        bytes,
    })
}

/// Ping-pong latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median round trip.
    pub p50: f64,
    /// 99th percentile round trip.
    pub p99: f64,
}

/// `mesh-testapp pingpong` from `client` to `server`'s echo port.
pub fn pingpong(client: &Pod, server: &Pod, count: u32, size: u32) -> anyhow::Result<Latency> {
    pingpong_to(client, &format!("{}:{ECHO_PORT}", server.ip4), count, size)
}

/// Ping-pong from `client` to an echo server at `addr`.
pub fn pingpong_to(client: &Pod, addr: &str, count: u32, size: u32) -> anyhow::Result<Latency> {
    let out = run_in(
        client,
        &testapp()?,
        &["pingpong", addr, &count.to_string(), &size.to_string()],
        Duration::from_secs(150),
    )?;
    Ok(Latency {
        p50: field(&out, "p50_us")?,
        p99: field(&out, "p99_us")?,
    })
}

/// New connections per second (`mesh-testapp crr`); an error if any connection failed.
pub fn crr(client: &Pod, server: &Pod, seconds: u64) -> anyhow::Result<f64> {
    let addr = format!("{}:{ECHO_PORT}", server.ip4);
    let out = run_in(
        client,
        &testapp()?,
        &["crr", &addr, &seconds.to_string()],
        Duration::from_secs(seconds + 30),
    )?;
    parse_crr(&out).map_err(|e| anyhow::anyhow!("mesh-testapp crr: {e}"))
}

/// `ok=<n> failed=<n> per_second=<x>` from `mesh-testapp crr`: the rate, or an error when any
/// connection failed (the testapp tolerates up to 1 % and counts only the good ones; a figure
/// with failed connections in its run is not reported).
pub fn parse_crr(out: &str) -> Result<f64, String> {
    let failed = field(out, "failed").map_err(|e| format!("{e:#}"))?;
    if failed > 0.0 {
        return Err(format!("{failed} connections failed: {}", out.trim()));
    }
    field(out, "per_second").map_err(|e| format!("{e:#}"))
}

/// wrk result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Http {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: f64,
}

/// `wrk` with `connections` keep-alive connections against `server`'s HTTP port; an error when
/// wrk reports non-2xx/3xx responses or socket errors (their requests are in its req/s).
pub fn wrk(client: &Pod, server: &Pod, seconds: u64, connections: u32) -> anyhow::Result<Http> {
    let url = format!("http://{}:{HTTP_PORT}/", server.ip4);
    let threads = connections.clamp(1, 2).to_string();
    let (c, d) = (connections.to_string(), format!("{seconds}s"));
    let out = run_in(
        client,
        "wrk",
        &["-t", &threads, "-c", &c, "-d", &d, &url],
        Duration::from_secs(seconds + 30),
    )?;
    parse_wrk(&out).map_err(|e| anyhow::anyhow!("wrk: {e}"))
}

/// The figures of wrk's report, or an error naming what wrk counted as failed: a
/// `Non-2xx or 3xx responses: N` line, or a `Socket errors: connect A, read B, write C, timeout
/// D` line with any non-zero count (wrk prints either line only when it has something to say).
pub fn parse_wrk(out: &str) -> Result<Http, String> {
    let mut errors = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            let n: u64 = n.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
            if n > 0 {
                errors.push(format!("{n} non-2xx/3xx responses"));
            }
        } else if let Some(counts) = line.strip_prefix("Socket errors:") {
            let mut bad = Vec::new();
            for part in counts.split(',') {
                let (what, n) = part
                    .trim()
                    .rsplit_once(' ')
                    .ok_or_else(|| format!("{line:?}: no count in {part:?}"))?;
                let n: u64 = n.parse().map_err(|e| format!("{line:?}: {e}"))?;
                if n > 0 {
                    bad.push(format!("{what} {n}"));
                }
            }
            if !bad.is_empty() {
                errors.push(format!("socket errors ({})", bad.join(", ")));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .ok_or_else(|| format!("no Requests/sec in its output:\n{out}"))?
        .trim()
        .parse()
        .map_err(|e| format!("Requests/sec: {e}"))?;
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .ok_or_else(|| format!("no request count in its output:\n{out}"))?
        .0
        .trim()
        .parse()
        .map_err(|e| format!("request count: {e}"))?;
    Ok(Http { rps, requests })
}

/// Retries a short ping-pong until the path answers (the HBONE server of a pod starts once its
/// certificate is in hand): at most `limit`.
pub fn wait_path(client: &Pod, server: &Pod, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match pingpong(client, server, 20, 64) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!(
                    "{} -> {} did not answer within {limit:?}",
                    client.uid(),
                    server.uid()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// A `mesh-testapp hold` process holding idle connections open until it is released.
#[derive(Debug)]
pub struct Hold {
    child: std::process::Child,
}

impl Hold {
    /// Opens `n` connections from `client` to `server`'s echo port; returns once all are
    /// established end to end (at most 120 s).
    pub fn open(client: &Pod, server: &Pod, n: u32) -> anyhow::Result<Hold> {
        let addr = format!("{}:{ECHO_PORT}", server.ip4);
        let mut cmd: Command = client.command("timeout");
        cmd.args([
            "-k",
            "5",
            "300",
            &testapp()?,
            "hold",
            &addr,
            &n.to_string(),
            "240",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting mesh-testapp hold")?;
        let stdout = child.stdout.take().context("hold stdout")?;
        let mut hold = Hold { child };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ready") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            hold.kill();
            bail!("mesh-testapp hold did not establish {n} connections within 120 s");
        }
        Ok(hold)
    }

    /// Closes the connections (closing the process's stdin) and waits (at most 10 s).
    pub fn release(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    crate::sh::output("getconf", &["CLK_TCK"])
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("malformed /proc/pid/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); the first after the name is field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i - 3)
            .context("short /proc/pid/stat")?
            .parse::<f64>()
            .context("stat field")
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks())
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("VmRSS")
}

/// Sum of a per-process reading over several processes.
pub fn sum(pids: &[u32], read: fn(u32) -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    pids.iter().map(|&p| read(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_CLEAN: &str = "Running 5s test @ http://198.18.2.3:8080/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    71.34us   20.11us   1.23ms   95.12%
    Req/Sec    13.52k   512.34    14.21k    70.59%
  67283 requests in 5.10s, 3.21MB read
Requests/sec:  13193.45
Transfer/sec:    644.21KB
";

    fn wrk_with(extra: &str) -> String {
        WRK_CLEAN.replace(
            "  67283 requests in 5.10s, 3.21MB read\n",
            &format!("  67283 requests in 5.10s, 3.21MB read\n{extra}"),
        )
    }

    #[test]
    fn wrk_reports_with_errors_fail() {
        // (what, output, Ok(rps, requests) or the error it must name)
        type Expected = Result<(f64, f64), &'static str>;
        let cases: Vec<(&str, String, Expected)> = vec![
            ("clean", WRK_CLEAN.to_owned(), Ok((13193.45, 67283.0))),
            (
                "socket error lines with zero counts",
                wrk_with("  Socket errors: connect 0, read 0, write 0, timeout 0\n"),
                Ok((13193.45, 67283.0)),
            ),
            (
                "non-2xx responses",
                wrk_with("  Non-2xx or 3xx responses: 12\n"),
                Err("12 non-2xx/3xx responses"),
            ),
            (
                "socket errors",
                wrk_with("  Socket errors: connect 0, read 5, write 0, timeout 2\n"),
                Err("socket errors (read 5, timeout 2)"),
            ),
            (
                "both",
                wrk_with("  Socket errors: connect 1, read 0, write 0, timeout 0\n  Non-2xx or 3xx responses: 3\n"),
                Err("socket errors (connect 1); 3 non-2xx/3xx responses"),
            ),
            (
                "no summary",
                "Running 5s test\n".to_owned(),
                Err("no Requests/sec"),
            ),
            (
                "garbled count",
                wrk_with("  Non-2xx or 3xx responses: many\n"),
                Err("Non-2xx or 3xx responses: many"),
            ),
        ];
        for (what, out, expected) in cases {
            match (parse_wrk(&out), expected) {
                (Ok(h), Ok((rps, requests))) => {
                    assert_eq!(h, Http { rps, requests }, "{what}")
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{what}: {e}"),
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn iperf_and_crr_errors_fail() {
        let ok = r#"{"end":{"sum_received":{"bits_per_second":8.26e9,"bytes":5.1e9}}}"#;
        let t = parse_iperf(ok).expect("clean");
        assert!((t.gbits - 8.26).abs() < 1e-9 && (t.bytes - 5.1e9).abs() < 1.0);
        for (what, out, needle) in [
            (
                "iperf3 error member",
                r#"{"start":{},"end":{},"error":"unable to connect to server"}"#,
                "unable to connect",
            ),
            ("no summary", r#"{"end":{}}"#, "no end.sum_received"),
            ("not JSON", "iperf3: error", "no JSON output"),
        ] {
            let e = parse_iperf(out).expect_err(what);
            assert!(e.contains(needle), "{what}: {e}");
        }
        assert_eq!(
            parse_crr("ok=15000 failed=0 per_second=3000.5\n"),
            Ok(3000.5)
        );
        for (what, out, needle) in [
            (
                "some connections failed",
                "ok=15000 failed=3 per_second=3000.5\n",
                "3 connections failed",
            ),
            ("no counts", "per_second=3000.5\n", "no failed="),
        ] {
            let e = parse_crr(out).expect_err(what);
            assert!(e.contains(needle), "{what}: {e}");
        }
    }
}
