//! One connection, one task: it reads frames into the room and writes what the room queued for
//! it, polling both halves of the socket and its [`Outbox`] (which also carries kicks and the
//! relay's shutdown) together.
//! (A reader task plus a writer task cost a second task, a lock around the socket and a
//! cancellation node per connection: about a fifth of an idle connection's memory.)

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};

use super::limits::IpSlot;
use super::outbox::{Next, Outbox};
use super::room::Arrival;
use super::upgrade::Socket as WebSocket;
use crate::protocol::{Role, close};

/// Messages larger than this go out as fragments of this size: tungstenite copies what it sends
/// into a write buffer whose capacity it keeps, so one unfragmented join of a 10 MB room left
/// 10 MB behind in every member's connection.
pub const FRAGMENT: usize = 64 * 1024;

/// What woke the connection.
enum Event {
    /// A frame from the peer, the end of its stream, or a read error.
    Incoming(Option<Result<Message, tungstenite::Error>>),
    /// The room, a limit or the relay's shutdown asked this connection to close
    /// ([`Outbox::kick`]).
    Kicked,
    /// The socket failed while writing: nothing more can be sent.
    WriteFailed,
}

/// The write half's progress between polls.
#[derive(Default)]
struct Writing {
    /// A message taken from the outbox that the socket has not taken whole yet.
    held: Option<Bytes>,
    /// How much of `held` went out already (as fragments).
    sent: usize,
    /// Frames handed to the socket but not yet flushed.
    unflushed: bool,
    /// A ping the outbox asked for that the socket has not taken yet.
    ping: bool,
}

impl Writing {
    /// The next WebSocket message or fragment of `held`, and how much of `held` is out after it.
    fn next_piece(&self, held: &Bytes) -> (Message, usize) {
        if self.sent == 0 && held.len() <= FRAGMENT {
            return (Message::Binary(held.clone()), held.len());
        }
        let end = (self.sent + FRAGMENT).min(held.len());
        let opcode = if self.sent == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let last = end == held.len();
        let piece = Frame::message(held.slice(self.sent..end), opcode, last);
        (Message::Frame(piece), end)
    }
}

/// Moves queued frames into the socket as far as it accepts them, then looks for input.
fn pump(
    cx: &mut Context<'_>,
    socket: &mut WebSocket,
    outbox: &Outbox,
    writing: &mut Writing,
) -> Poll<Event> {
    // A member whose socket stopped taking frames is kicked when its queue fills up: look for
    // that even while a frame is held (the outbox is otherwise looked at below), and for a ping
    // asked for meanwhile (a long message to a slow reader takes a while).
    if writing.held.is_some() {
        let (kicked, ping) = outbox.poll_control(cx);
        if kicked {
            return Poll::Ready(Event::Kicked);
        }
        writing.ping |= ping;
    }
    loop {
        if writing.ping {
            // (A control frame may go between the fragments of a message.)
            match socket.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    if socket
                        .start_send_unpin(Message::Ping(Bytes::new()))
                        .is_err()
                    {
                        return Poll::Ready(Event::WriteFailed);
                    }
                    writing.ping = false;
                    writing.unflushed = true;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
                Poll::Pending => break,
            }
        }
        let held = match writing.held.take() {
            Some(held) => held,
            None => match outbox.poll_next(cx) {
                Next::Kicked => return Poll::Ready(Event::Kicked),
                Next::Ping => {
                    writing.ping = true;
                    continue;
                }
                Next::Frame(frame) => {
                    writing.sent = 0;
                    frame
                }
                Next::Idle => break,
            },
        };
        match socket.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                let (piece, end) = writing.next_piece(&held);
                if socket.start_send_unpin(piece).is_err() {
                    return Poll::Ready(Event::WriteFailed);
                }
                writing.unflushed = true;
                if end < held.len() {
                    writing.sent = end;
                    writing.held = Some(held);
                }
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
            Poll::Pending => {
                writing.held = Some(held);
                break;
            }
        }
    }
    if writing.unflushed {
        match socket.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => writing.unflushed = false,
            Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
            Poll::Pending => {}
        }
    }
    socket.poll_next_unpin(cx).map(Event::Incoming)
}

/// Runs one member's session until it disconnects or is kicked. `slot` is the connection's
/// place in the per-address limit, given back when the session ends; `arrival` keeps the room
/// from being evicted until the member is in it.
///
/// The future is kept small (it is most of an idle connection's memory): the socket comes
/// boxed (an async fn's argument keeps its own slot in the future beside any local it moves
/// to) and the rare close handshakes run boxed, so their timers cost nothing while the session
/// lives. 2,320 bytes per connection before, under 300 after.
pub async fn serve(
    slot: IpSlot,
    arrival: Arrival,
    role: Role,
    outbox: Arc<Outbox>,
    mut socket: Box<WebSocket>,
) {
    let relay = &slot.relay;
    let room = arrival.room().clone();
    let conn_id = relay.next_conn_id();

    let joined = room.join(conn_id, role, outbox.clone(), relay.config.max_members);
    // A member now (or refused): the room's idleness is its members' business again.
    drop(arrival);
    let Some(hello) = joined else {
        relay
            .metrics
            .rejected_room_full
            .fetch_add(1, Ordering::Relaxed);
        let full = CloseFrame {
            code: close::POLICY.into(),
            reason: "room is full".into(),
        };
        Box::pin(finish(&mut socket, full, false)).await;
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
        if outbox.try_send(frame).is_ok() {
            relay.metrics.messages_out.fetch_add(1, Ordering::Relaxed);
            relay.metrics.bytes_out.fetch_add(len, Ordering::Relaxed);
        }
    }

    // Joined after the relay's shutdown swept the rooms: close like the others.
    if relay.shutdown.is_cancelled() {
        outbox.kick(close::GOING_AWAY, "relay shutting down");
    }
    let mut writing = Writing::default();
    // Whether the relay ended the session (kick or shutdown) rather than the peer.
    let mut refused = false;
    let mut write_failed = false;
    loop {
        // (Bytes coming in count as hearing from the peer: see `upgrade::Heard`.)
        let event = poll_fn(|cx| pump(cx, &mut socket, &outbox, &mut writing)).await;
        match event {
            Event::Incoming(Some(Ok(Message::Binary(data)))) => {
                relay.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
                relay
                    .metrics
                    .bytes_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Err(refusal) = room.handle(conn_id, &data) {
                    tracing::info!(room = %room.id, conn_id, "closing connection: {refusal}");
                    let counter = match refusal.close_code() {
                        close::TOO_BIG => &relay.metrics.oversized_closes,
                        _ => &relay.metrics.malformed_closes,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    outbox.kick(refusal.close_code(), &refusal.to_string());
                }
            }
            Event::Incoming(Some(Ok(Message::Text(_)))) => {
                relay
                    .metrics
                    .malformed_closes
                    .fetch_add(1, Ordering::Relaxed);
                outbox.kick(
                    close::PROTOCOL_ERROR,
                    "text frames are not part of the y-websocket protocol",
                );
            }
            Event::Incoming(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
            Event::Incoming(Some(Ok(Message::Close(_))) | None) => break,
            Event::Incoming(Some(Err(e))) => {
                if is_capacity_error(e) {
                    relay
                        .metrics
                        .oversized_closes
                        .fetch_add(1, Ordering::Relaxed);
                    let limit = relay.config.max_frame;
                    outbox.kick(
                        close::TOO_BIG,
                        &format!("message larger than the relay's limit of {limit} bytes"),
                    );
                    refused = true;
                }
                break;
            }
            Event::Kicked => {
                refused = true;
                break;
            }
            Event::WriteFailed => {
                write_failed = true;
                break;
            }
        }
    }
    room.leave(conn_id);
    gauge.fetch_sub(1, Ordering::Relaxed);
    if write_failed {
        return;
    }
    let frame = match outbox.kicked() {
        Some((code, reason)) => CloseFrame {
            code: code.into(),
            reason: reason.into(),
        },
        None => CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        },
    };
    Box::pin(finish(&mut socket, frame, refused)).await;
}

/// Sends our close frame and, when the relay ended the session, lingers for the peer's.
async fn finish(socket: &mut WebSocket, frame: CloseFrame, refused: bool) {
    let sent = tokio::time::timeout(
        Duration::from_secs(2),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
    if refused && matches!(sent, Ok(Ok(()))) {
        linger(socket, Duration::from_secs(1)).await;
    }
}

/// Keeps a refused connection open briefly after our close frame: closing a socket with unread
/// input (the rest of an oversized message) makes the kernel send a reset, which can destroy the
/// close frame — and its reason — before the peer reads it.
async fn linger(socket: &mut WebSocket, at_most: Duration) {
    let deadline = tokio::time::Instant::now() + at_most;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
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

fn is_capacity_error(e: tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}
