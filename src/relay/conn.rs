//! One connection: a reader loop that feeds the room, and a writer task draining a bounded queue.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;

use super::Relay;
use super::room::Room;
use crate::protocol::{Role, close};

/// A close frame's reason must fit in 123 bytes (RFC 6455 §5.5), or the frame is invalid.
const MAX_CLOSE_REASON: usize = 123;

/// `s` cut to at most `max` bytes, on a char boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A handle that closes one connection from outside (slow consumer, shutdown, refusal), with the
/// close code and reason the peer will see. The first reason given wins.
#[derive(Clone, Debug)]
pub struct Kick {
    token: CancellationToken,
    reason: Arc<Mutex<Option<(u16, String)>>>,
}

impl Kick {
    pub fn new(token: CancellationToken) -> Kick {
        Kick {
            token,
            reason: Arc::default(),
        }
    }

    pub fn close(&self, code: u16, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((code, clip(reason, MAX_CLOSE_REASON).to_string()));
        }
        drop(r);
        self.token.cancel();
    }

    fn frame(&self) -> CloseFrame {
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        let (code, reason) = r
            .clone()
            .unwrap_or((close::GOING_AWAY, "relay shutting down".to_string()));
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// Runs one member's session until it disconnects or is kicked.
pub async fn serve(relay: Arc<Relay>, room: Arc<Room>, role: Role, socket: WebSocket) {
    let conn_id = relay.next_conn_id();
    let kick = Kick::new(relay.shutdown.child_token());
    let tx = Arc::new(super::outbox::Outbox::new(relay.config.send_queue));
    let rx = tx.clone();
    let (mut sink, mut stream) = socket.split();

    let Some(hello) = room.join(
        conn_id,
        role,
        tx.clone(),
        kick.clone(),
        relay.config.max_members,
    ) else {
        relay
            .metrics
            .rejected_room_full
            .fetch_add(1, Ordering::Relaxed);
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: close::POLICY,
                reason: "room is full".into(),
            })))
            .await;
        return;
    };
    let gauge = match role {
        Role::Writer => &relay.metrics.writers,
        Role::Viewer => &relay.metrics.viewers,
    };
    gauge.fetch_add(1, Ordering::Relaxed);
    relay
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    for frame in hello {
        let len = frame.len() as u64;
        // The queue is fresh; it only fails if send_queue is configured below the hello size.
        if tx.try_send(frame).is_ok() {
            relay.metrics.messages_out.fetch_add(1, Ordering::Relaxed);
            relay.metrics.bytes_out.fetch_add(len, Ordering::Relaxed);
        }
    }

    let writer_kick = kick.clone();
    let writer = tokio::spawn(async move {
        let cancelled = writer_kick.token.clone();
        loop {
            let frame = tokio::select! {
                biased;
                _ = cancelled.cancelled() => break,
                frame = rx.recv() => frame,
            };
            let Some(frame) = frame else { break };
            tokio::select! {
                _ = cancelled.cancelled() => break,
                sent = sink.send(Message::Binary(frame)) => if sent.is_err() { return },
            }
        }
        let close = Message::Close(Some(writer_kick.frame()));
        let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(close)).await;
    });

    loop {
        tokio::select! {
            _ = kick.token.cancelled() => break,
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    relay.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                    relay.metrics.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Err(refusal) = room.handle(conn_id, &data) {
                        tracing::info!(room = %room.id, conn_id, "closing connection: {refusal}");
                        let counter = match refusal.close_code() {
                            close::TOO_BIG => &relay.metrics.oversized_closes,
                            _ => &relay.metrics.malformed_closes,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        kick.close(refusal.close_code(), &refusal.to_string());
                        break;
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    relay.metrics.malformed_closes.fetch_add(1, Ordering::Relaxed);
                    kick.close(close::PROTOCOL_ERROR, "text frames are not part of the y-websocket protocol");
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    if is_capacity_error(e) {
                        relay.metrics.oversized_closes.fetch_add(1, Ordering::Relaxed);
                        let limit = relay.config.max_frame;
                        kick.close(close::TOO_BIG, &format!("message larger than the relay's limit of {limit} bytes"));
                    }
                    break;
                }
            }
        }
    }
    room.leave(conn_id);
    tx.close();
    gauge.fetch_sub(1, Ordering::Relaxed);
    let refused = kick.token.is_cancelled();
    if !refused {
        kick.close(1000, "bye");
    }
    // Let the writer send the close frame, then stop it.
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
    if refused {
        linger(stream, Duration::from_secs(1)).await;
    }
}

/// Keeps a refused connection open briefly after our close frame: closing a socket with unread
/// input (the rest of an oversized message) makes the kernel send a reset, which can destroy the
/// close frame — and its reason — before the peer reads it.
async fn linger(mut stream: futures_util::stream::SplitStream<WebSocket>, at_most: Duration) {
    let deadline = tokio::time::Instant::now() + at_most;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Err(_) => return,
            Ok(Some(Ok(_))) => {}
            // After a read error the stream reports its end at once, whatever the peer does:
            // keep the socket open until the deadline all the same.
            Ok(Some(Err(_)) | None) => {
                tokio::time::sleep_until(deadline).await;
                return;
            }
        }
    }
}

fn is_capacity_error(e: axum::Error) -> bool {
    let inner = e.into_inner();
    matches!(
        inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let clipped = super::clip(&long, super::MAX_CLOSE_REASON);
        assert!(clipped.len() <= 123 && clipped.len() >= 121);
        assert_eq!(super::clip("short", 123), "short");
    }
}
