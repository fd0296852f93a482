//! The relay's HTTP server: one task per TCP (or TLS) connection, serving HTTP/1.1 until the
//! connection becomes a WebSocket or ends.
//!
//! Written over hyper instead of `axum::serve` for what a server on the internet needs and
//! axum's loop does not do (it sets no timer, so hyper's header timeout never runs):
//! - a request's headers must arrive within [`RelayConfig::header_timeout`], counted from the
//!   connection's start or the previous response (a connection that sends nothing, or one byte
//!   at a time, is closed: "slowloris");
//! - a connection that has not become a WebSocket within [`pre_upgrade_life`] is closed (a slow
//!   request body, or a keep-alive connection asking one room after another);
//! - connections not yet upgraded are counted per address (256; an IPv6 host by its /64) and in
//!   all (4,096) ([`super::limits`]): past either limit a new one is closed at once, so
//!   half-finished requests cannot use up the relay's file descriptors. Upgraded connections
//!   have their own per-address limit.
//!
//! [`RelayConfig::header_timeout`]: super::RelayConfig::header_timeout

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use super::Relay;

/// How long a connection may stay plain HTTP before it is closed: three header timeouts
/// (30 s by default).
pub fn pre_upgrade_life(header_timeout: Duration) -> Duration {
    header_timeout.saturating_mul(3)
}

/// After shutdown or [`pre_upgrade_life`], how long a request under way may take to finish.
const GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on every connection `listener` accepts until `shutdown`, then lets the requests
/// under way finish (for at most [`GRACE`]). Upgraded connections are not waited for here: they
/// run in the relay's own task tracker.
pub async fn serve<L>(mut listener: L, app: Router, relay: Arc<Relay>, shutdown: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let connections = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        if !relay
            .limits
            .try_pending(peer.ip(), relay.config.max_pending_per_ip)
        {
            relay
                .metrics
                .rejected_too_many_pending
                .fetch_add(1, Ordering::Relaxed);
            drop(io);
            continue;
        }
        let pending = super::limits::PendingSlot {
            relay: relay.clone(),
            ip: peer.ip(),
        };
        let app = app.clone();
        let header_timeout = relay.config.header_timeout;
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _pending = pending;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move {
                    let Ok(response) = app.call(req.map(Body::new)).await;
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let mut conn = pin!(
                builder
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades()
            );
            let life = tokio::time::sleep(pre_upgrade_life(header_timeout));
            tokio::select! {
                // Served, upgraded (the socket now belongs to the WebSocket), or failed.
                _ = conn.as_mut() => return,
                _ = life => tracing::debug!("{peer}: closing a connection that stayed HTTP"),
                _ = shutdown.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        });
    }
    connections.close();
    connections.wait().await;
}
