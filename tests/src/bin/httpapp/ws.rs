//! WebSocket: the server side of `/ws` (an HTTP/1.1 upgrade, then an echo of every message
//! prefixed with the server's name) and the `ws` client that checks those echoes.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::args::ClientOptions;
use super::json::emit;
use super::net::{SERVER_IDLE, TIMEOUT};
use super::server::{bad_request, Body};

/// The largest message either side takes.
const MAX_MESSAGE: usize = 1 << 20;
/// The most messages one server connection echoes.
const MAX_ECHOES: u64 = 10_000_000;
/// The most control frames (pings, pongs) a client skips while waiting for one echo.
const MAX_SKIPPED: usize = 100;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Whether `headers` ask for a WebSocket upgrade this server does (RFC 6455 over HTTP/1.1);
/// the client's key if so.
pub fn upgrade_key<'a>(
    method: &Method,
    version: Version,
    headers: &'a HeaderMap,
) -> Result<&'a [u8], String> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if version != Version::HTTP_11 {
        return Err(format!(
            "WebSocket needs HTTP/1.1 (this request is {version:?}; RFC 8441 is not served)"
        ));
    }
    if method != Method::GET {
        return Err(format!("WebSocket upgrade needs GET, not {method}"));
    }
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err("not a WebSocket upgrade (Upgrade: websocket, Connection: upgrade)".into());
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("Sec-WebSocket-Version must be 13".into());
    }
    headers
        .get(SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .ok_or_else(|| "no Sec-WebSocket-Key".into())
}

/// Answers `101 Switching Protocols` and echoes on the upgraded connection, or 400.
pub fn accept(req: &mut Request<Incoming>, name: Arc<str>) -> Response<Body> {
    let accept_key = match upgrade_key(req.method(), req.version(), req.headers()) {
        Ok(key) => derive_accept_key(key),
        Err(reason) => return bad_request(&name, reason),
    };
    let Ok(accept_value) = HeaderValue::from_str(&accept_key) else {
        return bad_request(&name, "cannot encode Sec-WebSocket-Accept");
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match timeout(TIMEOUT, on_upgrade).await {
            Ok(Ok(upgraded)) => echo(TokioIo::new(upgraded), &name).await,
            Ok(Err(e)) => eprintln!("mesh-httpapp: WebSocket upgrade: {e}"),
            Err(_) => eprintln!("mesh-httpapp: WebSocket upgrade did not complete in {TIMEOUT:?}"),
        }
    });
    let mut response = Response::new(http_body_util::BodyExt::boxed(http_body_util::Empty::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept_value);
    response
}

/// Echoes every message prefixed `<name>: ` until the peer closes or is silent too long.
async fn echo<S>(io: S, name: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    for _ in 0..MAX_ECHOES {
        let message = match timeout(SERVER_IDLE, ws.next()).await {
            Err(_) => {
                let _ = timeout(TIMEOUT, ws.close(None)).await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                eprintln!("mesh-httpapp: WebSocket: {e}");
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        let reply = match message {
            Message::Text(text) => Message::text(format!("{name}: {}", text.as_str())),
            Message::Binary(data) => {
                let mut out = Vec::with_capacity(name.len() + 2 + data.len());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(&data);
                Message::binary(out)
            }
            // Pings are answered by the library; a close is answered as the stream ends.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => continue,
        };
        match timeout(TIMEOUT, ws.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("mesh-httpapp: WebSocket send: {e}");
                return;
            }
            Err(_) => {
                eprintln!("mesh-httpapp: WebSocket send blocked for {TIMEOUT:?}");
                return;
            }
        }
    }
}

/// `http://` and `ws://` URLs both name a WebSocket endpoint here (`https`/`wss` are refused).
pub fn ws_url(url: &str) -> anyhow::Result<String> {
    if let Some(rest) = url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if url.starts_with("ws://") {
        Ok(url.to_string())
    } else {
        bail!("{url:?} is not a ws:// or http:// URL")
    }
}

/// Splits an echo `<name>: <text>` at the first `: ` (names have no colon).
pub fn split_echo(echo: &str) -> Option<(&str, &str)> {
    echo.split_once(": ")
}

/// Sends `n` messages and checks each echo; prints `{"ok": n, "server": name}`.
pub async fn client(url: &str, n: u64, opts: &ClientOptions) -> anyhow::Result<()> {
    let url = ws_url(url)?;
    let t = opts.timeout;
    let (mut ws, _) = timeout(
        t,
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config()), true),
    )
    .await
    .map_err(|_| anyhow!("WebSocket handshake with {url}: no answer within {t:?}"))?
    .with_context(|| format!("WebSocket handshake with {url}"))?;
    let mut server: Option<String> = None;
    for i in 0..n {
        let sent = format!("message {i}");
        timeout(t, ws.send(Message::text(sent.clone())))
            .await
            .map_err(|_| anyhow!("sending message {i}: blocked for {t:?}"))?
            .with_context(|| format!("sending message {i}"))?;
        let echo = next_text(&mut ws, i, t).await?;
        let (who, text) =
            split_echo(&echo).ok_or_else(|| anyhow!("echo {i} {echo:?} is not '<name>: ...'"))?;
        if text != sent {
            bail!("echo {i} is {echo:?}, not of {sent:?}");
        }
        match &server {
            Some(s) if s != who => bail!("echo {i} came from {who:?}, earlier ones from {s:?}"),
            Some(_) => {}
            None => server = Some(who.to_string()),
        }
    }
    let _ = timeout(t, ws.close(None)).await;
    emit(&json!({"ok": n, "server": server}))
}

async fn next_text<S>(
    ws: &mut WebSocketStream<S>,
    i: u64,
    t: std::time::Duration,
) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for _ in 0..MAX_SKIPPED {
        let message = timeout(t, ws.next())
            .await
            .map_err(|_| anyhow!("no echo of message {i} within {t:?}"))?
            .ok_or_else(|| anyhow!("connection closed before the echo of message {i}"))?
            .with_context(|| format!("reading the echo of message {i}"))?;
        match message {
            Message::Text(text) => return Ok(text.as_str().to_string()),
            Message::Binary(_) => bail!("echo of message {i} is binary"),
            Message::Close(frame) => bail!("closed by the server before echo {i}: {frame:?}"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        }
    }
    bail!("more than {MAX_SKIPPED} control frames before echo {i}")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn upgrades_are_checked() {
        let good = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let keep_alive_too = [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "k"),
        ];
        let no_key = &good[..3];
        let old_version = [good[0], good[1], ("sec-websocket-version", "8"), good[3]];
        let h2c = [("upgrade", "h2c"), good[1], good[2], good[3]];
        type Case<'a> = (
            Method,
            Version,
            &'a [(&'a str, &'a str)],
            Result<&'a str, &'a str>,
        );
        let cases: &[Case] = &[
            (
                Method::GET,
                Version::HTTP_11,
                &good,
                Ok("dGhlIHNhbXBsZSBub25jZQ=="),
            ),
            (Method::GET, Version::HTTP_11, &keep_alive_too, Ok("k")),
            (
                Method::GET,
                Version::HTTP_11,
                no_key,
                Err("no Sec-WebSocket-Key"),
            ),
            (
                Method::GET,
                Version::HTTP_11,
                &old_version,
                Err("Sec-WebSocket-Version must be 13"),
            ),
            (
                Method::GET,
                Version::HTTP_11,
                &h2c,
                Err("not a WebSocket upgrade (Upgrade: websocket, Connection: upgrade)"),
            ),
            (
                Method::POST,
                Version::HTTP_11,
                &good,
                Err("WebSocket upgrade needs GET, not POST"),
            ),
            (
                Method::GET,
                Version::HTTP_2,
                &good,
                Err("WebSocket needs HTTP/1.1 (this request is HTTP/2.0; RFC 8441 is not served)"),
            ),
        ];
        for (method, version, pairs, want) in cases {
            let map = headers(pairs);
            let got = upgrade_key(method, *version, &map)
                .map(|k| String::from_utf8_lossy(k).into_owned());
            assert_eq!(
                got,
                want.map(String::from).map_err(String::from),
                "{pairs:?}"
            );
        }
        // RFC 6455's example key and answer.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn urls_and_echoes() {
        assert_eq!(ws_url("http://a:1/ws").unwrap(), "ws://a:1/ws");
        assert_eq!(ws_url("ws://a:1/ws").unwrap(), "ws://a:1/ws");
        assert!(ws_url("wss://a/ws").is_err());
        assert!(ws_url("a:1/ws").is_err());
        assert_eq!(split_echo("v1: message 3"), Some(("v1", "message 3")));
        assert_eq!(split_echo("v1: a: b"), Some(("v1", "a: b")));
        assert_eq!(split_echo("no colon"), None);
    }
}
