//! Opaque TCP through the waypoint: a connection that is not HTTP (declared `tcp`, or detected)
//! is authorized on what a TCP connection shows — the source and the port; rules that need
//! request attributes never allow it and, in a DENY policy, deny it (fail closed, as Istio does)
//! — then routed by the destination's TCP and TLS routes ([`crate::l4`]; TLS by the
//! ClientHello's server name, read within [`HELLO_TIMEOUT`] and at most [`sni::MAX_HELLO`] bytes
//! only when the destination has TLS routes, and replayed upstream) and relayed byte for byte
//! to an endpoint of the destination chosen.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::io::Prefixed;
use crate::l4::Seen;
use crate::metrics::TcpLabels;
use crate::proxy::{choose_endpoint, Downstream, Shared};
use crate::sni::{self, Hello};

/// How long a connection to a destination with TLS routes may take to send its ClientHello; a
/// client that sends nothing first (a server-first protocol) is routed as opaque after it.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// Relays `io` to an endpoint of the destination, or closes it when it is refused.
pub async fn pass<S>(shared: &Shared, downstream: &Downstream, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let table = shared.state.table();
    let Some(target) = table.target(downstream.authority) else {
        tracing::warn!(dst = %downstream.authority, "TCP destination left the mesh; closed");
        return;
    };
    let source = table.source_info(Some(downstream.peer.clone()), downstream.remote.ip());
    if let Some(e) = table.authorize_tcp(&target, &source).error() {
        tracing::info!(src.identity = %downstream.peer, dst = %downstream.authority, error = %e, "TCP connection denied");
        return;
    }
    let (hello, mut io) = if table.has_tls_routes(&target) {
        peek_hello(io).await
    } else {
        (Hello::NotTls, Prefixed::new(Bytes::new(), io))
    };
    let seen = match &hello {
        Hello::Tls(sni) => Seen::Tls(sni.as_deref()),
        Hello::NotTls | Hello::NeedMore => Seen::Opaque,
    };
    let decision = match table.decide_l4(&target, &source, seen) {
        Ok(decision) => decision,
        Err(e) => {
            tracing::warn!(dst = %downstream.authority, error = %e, "TCP connection without a destination; closed");
            return;
        }
    };
    let route = decision.route.as_deref().unwrap_or("-");
    shared
        .metrics
        .tcp
        .get_or_create(&TcpLabels {
            route: route.to_owned(),
        })
        .inc();
    let backend = decision.backend;
    let picked = match choose_endpoint(shared, &table, &backend, downstream, None, None) {
        Ok(picked) => picked,
        Err(e) => {
            tracing::warn!(dst = %downstream.authority, route, backend = %backend.host, error = %e, "TCP connection without an endpoint; closed");
            return;
        }
    };
    let endpoint = picked.endpoint.clone();
    let mut upstream = match shared.upstreams.open_stream(&endpoint).await {
        Ok(upstream) => upstream,
        Err(e) => {
            picked.report(crate::balance::TryOutcome::LocalOrigin);
            tracing::warn!(dst = %downstream.authority, route, upstream = %endpoint.addr, error = %e, "TCP upstream connect failed; closed");
            return;
        }
    };
    let (mut labels, settings) = crate::istio_request::request_labels(
        &table,
        &downstream.peer,
        downstream.remote.ip(),
        Some(&target),
        Some(endpoint.addr),
        mesh_common::istio_metrics::RequestProtocol::Tcp,
    );
    labels.response_code = None;
    let istio = shared.metrics.istio.tcp(&labels, &settings.metrics);
    istio.open();
    let copied = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
    let (sent, received) = copied.as_ref().map_or((0, 0), |&(s, r)| (s, r));
    istio.close(sent, received);
    picked.report(match copied {
        Ok(_) => crate::balance::TryOutcome::Success,
        Err(_) => crate::balance::TryOutcome::LocalOrigin,
    });
    let sni = match &hello {
        Hello::Tls(Some(name)) => name.as_str(),
        _ => "-",
    };
    tracing::info!(src.identity = %downstream.peer, dst = %downstream.authority, route, sni, backend = %backend.host, upstream = %endpoint.addr, result = ?copied, "TCP connection");
}

/// Reads the start of `io` until it shows whether it is a TLS ClientHello (bounded by
/// [`sni::MAX_HELLO`] and [`HELLO_TIMEOUT`]); the bytes read are put back in front.
async fn peek_hello<S: AsyncRead + Unpin>(mut io: S) -> (Hello, Prefixed<S>) {
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let hello = loop {
        match sni::parse(&buf) {
            Hello::NeedMore if buf.len() < sni::MAX_HELLO => {}
            Hello::NeedMore => break Hello::NotTls,
            decided => break decided,
        }
        let room = sni::MAX_HELLO - buf.len();
        let mut chunk = vec![0u8; room.min(4096)];
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // Closed, failed or silent: not a ClientHello (the relay sees the rest).
            _ => break Hello::NotTls,
        }
    };
    (hello, Prefixed::new(buf.freeze(), io))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn client_hellos_are_peeked_and_replayed() {
        let hello = sni::client_hello(Some("a.test"));
        // (case, bytes the client sends in chunks, then closes, want)
        let cases: Vec<(&str, Vec<Vec<u8>>, Hello)> = vec![
            (
                "one write",
                vec![hello.clone()],
                Hello::Tls(Some("a.test".into())),
            ),
            (
                "byte by byte at first",
                vec![
                    hello[..1].to_vec(),
                    hello[1..4].to_vec(),
                    hello[4..].to_vec(),
                ],
                Hello::Tls(Some("a.test".into())),
            ),
            ("not TLS", vec![b"SSH-2.0-x\r\n".to_vec()], Hello::NotTls),
            ("cut short", vec![hello[..20].to_vec()], Hello::NotTls),
        ];
        for (case, chunks, want) in cases {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let sent: Vec<u8> = chunks.concat();
            let writer = tokio::spawn(async move {
                for c in chunks {
                    client.write_all(&c).await.expect("write");
                    tokio::task::yield_now().await;
                }
                client.shutdown().await.expect("shutdown");
            });
            let (got, mut replay) = peek_hello(server).await;
            assert_eq!(got, want, "{case}");
            let mut all = Vec::new();
            replay.read_to_end(&mut all).await.expect("read");
            assert_eq!(all, sent, "{case}: every byte replayed");
            writer.await.expect("writer");
        }
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let (got, _) = peek_hello(server).await;
        assert_eq!(got, Hello::NotTls);
        let waited = started.elapsed();
        assert!(
            waited >= HELLO_TIMEOUT && waited < HELLO_TIMEOUT * 3,
            "{waited:?}"
        );
    }
}
