//! The relay's small HTTP API, from the client side.

use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

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

/// `POST /api/rooms` on the relay: a new room and its two codes.
pub async fn create_room(relay: &str, create_token: Option<&str>) -> anyhow::Result<CreatedRoom> {
    let base = relay_base(relay);
    if base.starts_with("https://") {
        anyhow::bail!("TLS relays are not supported yet: use an http:// or ws:// relay URL");
    }
    let url = format!("{base}/api/rooms");
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::post(&url).header("content-type", "application/json");
    if let Some(token) = create_token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(bytes::Bytes::from_static(b"{}")))?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| anyhow::anyhow!("timed out creating a room at {url}"))?
            .map_err(|e| anyhow::anyhow!("could not reach the relay at {base}: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
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
