//! The L7 clients of the waypoint rows, run in pods (bounded in time): `wrk --latency`
//! (HTTP/1.1 req/s, p50/p99), `h2load` (HTTP/2 req/s) and a streamed upload
//! (`mesh-httpapp upload`); their output parsed into figures or into why the run failed.

use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_tests::agent::binary;
use mesh_tests::Pod;

use super::tools::{parse_wrk, run_in, Http};

/// HTTP/1.1 figures from `wrk --latency`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLatency {
    /// Requests per second and requests completed.
    pub http: Http,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
}

/// `wrk --latency` with `connections` keep-alive connections (1 or 2 threads) against `url`.
pub fn wrk_latency(
    client: &Pod,
    url: &str,
    seconds: u64,
    connections: u32,
) -> anyhow::Result<HttpLatency> {
    let threads = connections.clamp(1, 2).to_string();
    let (c, d) = (connections.to_string(), format!("{seconds}s"));
    let out = run_in(
        client,
        "wrk",
        &["--latency", "-t", &threads, "-c", &c, "-d", &d, url],
        Duration::from_secs(seconds + 30),
    )?;
    parse_wrk_latency(&out).map_err(|e| anyhow::anyhow!("wrk: {e}"))
}

/// wrk's figures (an error for any request it counted as failed, see [`parse_wrk`]) and the
/// 50 % and 99 % lines of its `Latency Distribution`.
pub fn parse_wrk_latency(out: &str) -> Result<HttpLatency, String> {
    let http = parse_wrk(out)?;
    let percentile = |p: &str| -> Result<f64, String> {
        let value = out
            .lines()
            .skip_while(|l| !l.contains("Latency Distribution"))
            .find_map(|l| l.trim().strip_prefix(p))
            .ok_or_else(|| format!("no {p} line in the latency distribution:\n{out}"))?;
        duration_us(value.trim())
    };
    Ok(HttpLatency {
        http,
        p50_us: percentile("50%")?,
        p99_us: percentile("99%")?,
    })
}

/// A duration as wrk or h2load print it (`173.00us`, `0.97ms`, `1.02s`), in µs.
pub fn duration_us(text: &str) -> Result<f64, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return Err(format!("{text:?}: not a duration in us, ms or s"));
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|e| format!("{text:?}: {e}"))?;
    Ok(n * scale)
}

/// HTTP/2 figures from h2load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H2 {
    /// Requests per second over the measured duration.
    pub rps: f64,
    /// Requests completed.
    pub requests: f64,
    /// Mean time per request, µs.
    pub mean_us: f64,
}

/// `h2load` (HTTP/2 with prior knowledge) with `connections` connections, one stream in
/// flight on each (`-m 1`, as wrk's one request per connection), 1 s of warm-up, then
/// `seconds` measured.
pub fn h2load(client: &Pod, url: &str, seconds: u64, connections: u32) -> anyhow::Result<H2> {
    let threads = connections.clamp(1, 2).to_string();
    let (c, d) = (connections.to_string(), seconds.to_string());
    let out = run_in(
        client,
        "h2load",
        &[
            "-c",
            &c,
            "-t",
            &threads,
            "-m",
            "1",
            "-D",
            &d,
            "--warm-up-time=1",
            url,
        ],
        Duration::from_secs(seconds + 30),
    )?;
    parse_h2load(&out).map_err(|e| anyhow::anyhow!("h2load: {e}"))
}

/// The numbers before each of `names` in a line like `5438 done, 0 failed` (the word after
/// each number is its name).
fn counts(line: &str, names: &[&str]) -> Result<Vec<f64>, String> {
    let words: Vec<&str> = line.split([',', ' ']).filter(|w| !w.is_empty()).collect();
    names
        .iter()
        .map(|name| {
            words
                .windows(2)
                .find(|w| w[1] == *name)
                .ok_or_else(|| format!("no {name} count in {line:?}"))?[0]
                .parse()
                .map_err(|e| format!("{name} in {line:?}: {e}"))
        })
        .collect()
}

/// h2load's summary: the rate of `finished in <t>, <x> req/s`, the `requests:` and
/// `status codes:` counts and the mean of `time for request:`; an error when any request
/// failed, errored or timed out, any answer was 4xx or 5xx, or none completed.
pub fn parse_h2load(out: &str) -> Result<H2, String> {
    let line = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .ok_or_else(|| format!("no {prefix:?} line in its output:\n{out}"))
    };
    let finished = line("finished in ")?;
    let rps: f64 = finished
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" req/s"))
        .ok_or_else(|| format!("no req/s in {finished:?}"))?
        .trim()
        .parse()
        .map_err(|e| format!("req/s in {finished:?}: {e}"))?;
    let requests = counts(
        line("requests:")?,
        &["done", "failed", "errored", "timeout"],
    )?;
    let statuses = counts(line("status codes:")?, &["4xx", "5xx"])?;
    let mut errors = Vec::new();
    for (n, what) in requests[1..].iter().zip(["failed", "errored", "timed out"]) {
        if *n > 0.0 {
            errors.push(format!("{n} requests {what}"));
        }
    }
    for (n, what) in statuses.iter().zip(["4xx", "5xx"]) {
        if *n > 0.0 {
            errors.push(format!("{n} {what} responses"));
        }
    }
    if requests[0] == 0.0 {
        errors.push("no request completed".to_owned());
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let timing = line("time for request:")?;
    let mean_us = duration_us(
        timing
            .split_whitespace()
            .nth(2)
            .ok_or_else(|| format!("no mean in {timing:?}"))?,
    )?;
    Ok(H2 {
        rps,
        requests: requests[0],
        mean_us,
    })
}

/// `mesh-httpapp upload <url> <bytes>` from `client` (a chunked POST generated as it is sent);
/// the seconds it took. An error unless the server counted every byte.
pub fn upload(client: &Pod, url: &str, bytes: u64) -> anyhow::Result<f64> {
    let app = binary("mesh-httpapp")?.display().to_string();
    let started = Instant::now();
    let out = run_in(
        client,
        &app,
        &["upload", url, &bytes.to_string()],
        Duration::from_secs(300),
    )?;
    let took = started.elapsed().as_secs_f64();
    let answer: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("mesh-httpapp upload printed {out:?}"))?;
    if answer["bytes"].as_u64() != Some(bytes) {
        anyhow::bail!("the server counted {} of {bytes} bytes", answer["bytes"]);
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://198.19.0.40:8080/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   588.71us    1.71ms  19.42ms   94.07%
    Req/Sec     4.92k     0.97k    7.67k    75.00%
  Latency Distribution
     50%  173.00us
     75%  207.00us
     90%    0.97ms
     99%   10.44ms
  9796 requests in 2.00s, 2.60MB read
Requests/sec:   4894.42
Transfer/sec:      1.30MB
";

    #[test]
    fn durations_in_each_unit() {
        for (text, us) in [
            ("173.00us", Ok(173.0)),
            ("0.97ms", Ok(970.0)),
            ("1.02s", Ok(1_020_000.0)),
            ("45us", Ok(45.0)),
            ("2m", Err("not a duration")),
            ("fastms", Err("fastms")),
        ] {
            match (duration_us(text), us) {
                (Ok(got), Ok(want)) => assert!((got - want).abs() < 1e-6, "{text}: {got}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn wrk_latency_distribution() {
        let h = parse_wrk_latency(WRK).expect("clean");
        assert_eq!(h.http.rps, 4894.42);
        assert_eq!(h.http.requests, 9796.0);
        assert_eq!((h.p50_us, h.p99_us), (173.0, 10_440.0));
        // Without --latency there is no distribution (the Latency line of the thread stats
        // is not one).
        let plain = WRK.replace("  Latency Distribution\n", "");
        let e = parse_wrk_latency(&plain).expect_err("no distribution");
        assert!(e.contains("no 50% line"), "{e}");
        // Failed requests fail the run before any percentile is read.
        let bad = WRK.replace(
            "  9796 requests in 2.00s, 2.60MB read\n",
            "  9796 requests in 2.00s, 2.60MB read\n  Non-2xx or 3xx responses: 4\n",
        );
        let e = parse_wrk_latency(&bad).expect_err("non-2xx");
        assert!(e.contains("4 non-2xx/3xx responses"), "{e}");
    }

    fn h2load_output(requests: &str, statuses: &str) -> String {
        format!(
            "starting benchmark...
spawning thread #0: 1 total client(s). Timing-based test with 1s of warm-up time and 2s of main duration for measurements.
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 3.01s, 2719.00 req/s, 552.34KB/s
requests: {requests}
status codes: {statuses}
traffic: 1.08MB (1131196) total, 63.54KB (65064) headers (space savings 90.88%), 1.41MB (1475474) data
                     min         max         mean         sd        +/- sd
time for request:      200us     17.18ms       723us      1.27ms    96.41%
time for connect:        0us         0us         0us         0us     0.00%
"
        )
    }

    #[test]
    fn h2load_summaries() {
        const OK_REQ: &str =
            "5438 total, 5442 started, 5438 done, 5438 succeeded, 0 failed, 0 errored, 0 timeout";
        const OK_STATUS: &str = "5438 2xx, 0 3xx, 0 4xx, 0 5xx";
        // (what, requests line, status line, Ok((rps, done, mean)) or the error it names)
        type Expected = Result<(f64, f64, f64), &'static str>;
        let cases: [(&str, &str, &str, Expected); 6] = [
            ("clean", OK_REQ, OK_STATUS, Ok((2719.0, 5438.0, 723.0))),
            (
                "failed and timed out",
                "10 total, 12 started, 10 done, 8 succeeded, 2 failed, 0 errored, 3 timeout",
                OK_STATUS,
                Err("2 requests failed; 3 requests timed out"),
            ),
            (
                "errored",
                "10 total, 10 started, 10 done, 9 succeeded, 1 failed, 1 errored, 0 timeout",
                OK_STATUS,
                Err("1 requests errored"),
            ),
            (
                "5xx answers",
                OK_REQ,
                "5000 2xx, 0 3xx, 0 4xx, 438 5xx",
                Err("438 5xx responses"),
            ),
            (
                "nothing completed",
                "0 total, 1 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout",
                "0 2xx, 0 3xx, 0 4xx, 0 5xx",
                Err("no request completed"),
            ),
            ("garbled", "many total", OK_STATUS, Err("no done count")),
        ];
        for (what, requests, statuses, expected) in cases {
            let out = h2load_output(requests, statuses);
            match (parse_h2load(&out), expected) {
                (Ok(h), Ok((rps, done, mean))) => assert_eq!(
                    h,
                    H2 {
                        rps,
                        requests: done,
                        mean_us: mean
                    },
                    "{what}"
                ),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{what}: {e}"),
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
        let e = parse_h2load("connect failed\n").expect_err("no summary");
        assert!(e.contains("no \"finished in \" line"), "{e}");
    }
}
