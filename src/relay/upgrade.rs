//! The WebSocket upgrade (RFC 6455 §4.2), done here instead of by axum's `WebSocketUpgrade` so a
//! connection owns a tokio-tungstenite stream: axum's `Message` cannot send a frame by itself,
//! and sending a large message as fragments is what keeps tungstenite's write buffer (whose
//! capacity it never gives back) from holding a whole document per member after a join.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;

use super::outbox::Outbox;

/// An upgraded connection.
pub type Socket = WebSocketStream<Heard<TokioIo<hyper::upgrade::Upgraded>>>;

/// A connection's byte stream that tells its [`Outbox`] whenever bytes come in: a peer sending
/// one long message (a big paste on a slow uplink) is alive though no whole message arrived
/// for a minute. (Silent members are dropped: see `Room::sweep_silent`.)
pub struct Heard<T> {
    inner: T,
    outbox: Arc<Outbox>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Heard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.outbox.heard();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Heard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A valid upgrade request, ready to be answered with `101 Switching Protocols`.
pub struct Upgrade {
    accept: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket upgrade; answered with its status and reason.
#[derive(Debug)]
pub struct NotUpgrade(StatusCode, &'static str);

impl IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        super::error(self.0, self.1)
    }
}

/// Whether `name` lists `token` (comma-separated, any case), as `Connection: keep-alive, Upgrade`.
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = |reason| Err(NotUpgrade(StatusCode::BAD_REQUEST, reason));
        if parts.method != Method::GET {
            return Err(NotUpgrade(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade is a GET",
            ));
        }
        if !lists(&parts.headers, header::CONNECTION, "upgrade") {
            return bad("expected `Connection: upgrade`: this URL is a WebSocket");
        }
        if !lists(&parts.headers, header::UPGRADE, "websocket") {
            return bad("expected `Upgrade: websocket`: this URL is a WebSocket");
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return bad("expected `Sec-WebSocket-Version: 13`");
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return bad("missing `Sec-WebSocket-Key`");
        };
        let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
            return bad("invalid `Sec-WebSocket-Key`");
        };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(NotUpgrade(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(Upgrade { accept, on_upgrade })
    }
}

impl Upgrade {
    /// Answers `101` and, once the connection is handed over, runs `session` on it in a task
    /// of `tasks` (so a shutdown waits for connections still switching over too). Bytes that
    /// come in are noted in `outbox` ([`Heard`]).
    pub fn on_upgrade<F, Fut>(
        self,
        tasks: &TaskTracker,
        config: WebSocketConfig,
        outbox: Arc<Outbox>,
        session: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tasks.spawn(async move {
            // Fails when the client goes away before the switch: nothing to serve.
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let io = Heard {
                inner: TokioIo::new(upgraded),
                outbox,
            };
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            session(socket).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}
