//! gRPC: the `echo.Echo` server of `grpc-serve` (tonic) and the `grpc` client, which tells a
//! gRPC status (printed, exit 0) from a transport failure (exit 1).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::args::ClientOptions;
use super::json::emit;
use super::net::{SERVER_IDLE, TIMEOUT};

/// Generated from `tests/proto/echo.proto`.
#[allow(clippy::all, missing_debug_implementations, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

use proto::echo::echo_client::EchoClient;
use proto::echo::echo_server::{Echo, EchoServer};
use proto::echo::{CountReq, Msg};

/// The most messages one `Count` streams.
const MAX_COUNT: u32 = 10_000;
/// The gap between two streamed messages.
const COUNT_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct EchoService {
    name: String,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let text = request.into_inner().text;
        if text == "fail" {
            return Err(Status::unavailable(format!(
                "{} was asked to fail",
                self.name
            )));
        }
        Ok(Response::new(Msg {
            text: format!("{}: {text}", self.name),
        }))
    }

    type CountStream = ReceiverStream<Result<Msg, Status>>;

    async fn count(
        &self,
        request: Request<CountReq>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let n = request.into_inner().n;
        if n > MAX_COUNT {
            return Err(Status::invalid_argument(format!(
                "n {n} is more than {MAX_COUNT}"
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let name = self.name.clone();
        tokio::spawn(async move {
            for i in 0..n {
                if i > 0 {
                    tokio::time::sleep(COUNT_INTERVAL).await;
                }
                let msg = Msg {
                    text: format!("{name}: {i}"),
                };
                // The client went away or stopped reading: stop.
                match timeout(SERVER_IDLE, tx.send(Ok(msg))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves `echo.Echo` until the process is killed.
pub async fn serve(listener: TcpListener, name: String) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(TIMEOUT))
        .concurrency_limit_per_connection(256)
        .add_service(EchoServer::new(EchoService { name }))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
        .context("serving gRPC")
}

/// The lower snake case name of a gRPC code (`UNAVAILABLE` is `unavailable`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A status the peer answered is printed (exit 0); one tonic made of a transport error (it
/// carries that error as its source) fails.
fn answer_status(status: &Status) -> anyhow::Result<()> {
    if let Some(source) = std::error::Error::source(status) {
        bail!("transport error ({}): {source}", code_name(status.code()));
    }
    emit(&json!({"code": code_name(status.code()), "message": status.message()}))
}

async fn connect(addr: &str, t: Duration) -> anyhow::Result<EchoClient<Channel>> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("{addr:?} is not host:port"))?
        .connect_timeout(t)
        .tcp_nodelay(true);
    let channel = timeout(t, endpoint.connect())
        .await
        .map_err(|_| anyhow!("connecting to {uri}: no answer within {t:?}"))?
        .with_context(|| format!("connecting to {uri}"))?;
    Ok(EchoClient::new(channel))
}

/// `Say(text)`: prints `{"reply": ..}` or the status.
pub async fn say(addr: &str, text: &str, opts: &ClientOptions) -> anyhow::Result<()> {
    let t = opts.timeout;
    let mut client = connect(addr, t).await?;
    let reply = timeout(
        t,
        client.say(Msg {
            text: text.to_string(),
        }),
    )
    .await
    .map_err(|_| anyhow!("no answer to Say within {t:?}"))?;
    match reply {
        Ok(reply) => emit(&json!({"reply": reply.into_inner().text})),
        Err(status) => answer_status(&status),
    }
}

/// `Count(n)`: reads the stream, checks each message is `<name>: <i>` from one server, prints
/// `{"messages": n, "server": name}` or the status.
pub async fn count(addr: &str, n: u32, opts: &ClientOptions) -> anyhow::Result<()> {
    let t = opts.timeout;
    let mut client = connect(addr, t).await?;
    let response = timeout(t, client.count(CountReq { n }))
        .await
        .map_err(|_| anyhow!("no answer to Count within {t:?}"))?;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return answer_status(&status),
    };
    let mut server: Option<String> = None;
    let mut received: u64 = 0;
    // One pass per message; the server sends at most `n`, then the end.
    for _ in 0..=u64::from(n) {
        let next = timeout(t, stream.message())
            .await
            .map_err(|_| anyhow!("no message {received} within {t:?}"))?;
        let msg = match next {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(status) => return answer_status(&status),
        };
        let (who, index) = msg
            .text
            .split_once(": ")
            .ok_or_else(|| anyhow!("message {received} {:?} is not '<name>: <i>'", msg.text))?;
        if index != received.to_string() {
            bail!("message {received} is {:?}", msg.text);
        }
        match &server {
            Some(s) if s != who => {
                bail!("message {received} came from {who:?}, earlier ones from {s:?}")
            }
            Some(_) => {}
            None => server = Some(who.to_string()),
        }
        received += 1;
    }
    if received != u64::from(n) {
        bail!("the stream ended after {received} of {n} messages");
    }
    emit(&json!({"messages": received, "server": server}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_grpc_names() {
        let cases = [
            (Code::Ok, "ok"),
            (Code::Unavailable, "unavailable"),
            (Code::PermissionDenied, "permission_denied"),
            (Code::Unauthenticated, "unauthenticated"),
            (Code::DeadlineExceeded, "deadline_exceeded"),
            (Code::Unimplemented, "unimplemented"),
        ];
        for (code, want) in cases {
            assert_eq!(code_name(code), want, "{code:?}");
        }
        // Every code has its own name.
        let all: std::collections::BTreeSet<&str> =
            (0..=16).map(|i| code_name(Code::from_i32(i))).collect();
        assert_eq!(all.len(), 17);
    }
}
