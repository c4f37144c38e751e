//! A trace collector for the end-to-end tests, run in a pod of the local cluster: OTLP/gRPC on
//! 4317, OTLP/HTTP (protobuf `POST /v1/traces`) on 4318 and Zipkin v2 (`POST /api/v2/spans`) on
//! 9411, dual-stack. Once all three listen it prints `{"listening": [ports]}`, then every span
//! it receives as one JSON line (`mesh_tests::trace::ReceivedSpan`), until killed.

use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mesh_tests::trace::{self, HttpKind, SpanStore, OTLP_GRPC_PORT, OTLP_HTTP_PORT, ZIPKIN_PORT};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

fn listen(port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into()).with_context(|| format!("listening on {addr}"))
}

async fn run() -> anyhow::Result<()> {
    let store = Arc::new(SpanStore::echoing());
    let grpc = listen(OTLP_GRPC_PORT)?;
    let http = listen(OTLP_HTTP_PORT)?;
    let zipkin = listen(ZIPKIN_PORT)?;
    println!(
        "{}",
        serde_json::json!({"listening": [OTLP_GRPC_PORT, OTLP_HTTP_PORT, ZIPKIN_PORT]})
    );
    tokio::try_join!(
        trace::serve_otlp_grpc(grpc, store.clone()),
        trace::serve_http(HttpKind::Otlp, http, store.clone()),
        trace::serve_http(HttpKind::Zipkin, zipkin, store),
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-trace-receiver: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-trace-receiver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
