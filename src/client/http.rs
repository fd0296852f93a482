//! The relay's small HTTP API, from the client side.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::relay::CreatedRoom;

/// Turns what a user may type for a relay (`127.0.0.1:7070`, `http://…`, `ws://…`) into an HTTP base URL.
pub fn relay_base(relay: &str) -> String {
    let relay = relay.trim().trim_end_matches('/');
    let rest = relay
        .strip_prefix("ws://")
        .map(|r| format!("http://{r}"))
        .or_else(|| relay.strip_prefix("wss://").map(|r| format!("https://{r}")));
    match rest {
        Some(url) => url,
        None if relay.starts_with("http://") || relay.starts_with("https://") => relay.to_string(),
        None => format!("http://{relay}"),
    }
}

/// `POST /api/rooms` on the relay: a new room and its two codes. `https://` (or `wss://`) relays
/// are reached over TLS with `tls` (default: the system's and Mozilla's roots).
pub async fn create_room(
    relay: &str,
    create_token: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<CreatedRoom> {
    let base = relay_base(relay);
    let url = format!("{base}/api/rooms");
    let authority = url::Url::parse(&url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .ok_or_else(|| anyhow::anyhow!("not a relay URL: {relay}"))?;
    let mut request = http::Request::post("/api/rooms")
        .header(http::header::HOST, authority)
        .header("content-type", "application/json");
    if let Some(token) = create_token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(bytes::Bytes::from_static(b"{}")))?;
    let exchange = async {
        let stream = crate::net::connect(&url, tls)
            .await
            .map_err(|e| anyhow::anyhow!("could not reach the relay at {base}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| anyhow::anyhow!("could not talk to the relay at {base}: {e}"))?;
        let conn = tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| anyhow::anyhow!("could not talk to the relay at {base}: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        conn.abort();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("timed out creating a room at {url}"))??;
    if status != http::StatusCode::CREATED {
        anyhow::bail!(
            "the relay refused to create a room (HTTP {status}): {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn relay_urls_are_normalised() {
        use super::relay_base;
        assert_eq!(relay_base("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(relay_base("ws://h:1/"), "http://h:1");
        assert_eq!(relay_base("wss://h"), "https://h");
        assert_eq!(relay_base("http://h:2"), "http://h:2");
    }
}
