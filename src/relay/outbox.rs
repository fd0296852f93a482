//! A member's link to its connection: a bounded send queue the room offers frames to without
//! waiting, and the close (code and reason) the room or the relay asks for. The connection's one
//! task polls it beside the socket.
//!
//! Lighter than a tokio mpsc channel plus a cancellation token, which allocate a 32-slot block
//! and a tree node per connection up front (≈1.4 KiB per idle connection): this holds nothing
//! until a frame arrives, gives its capacity back once drained, and wakes one task.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

/// Why [`Outbox::try_send`] did not queue a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The member has `capacity` frames waiting: it cannot keep up.
    Full,
    /// The connection is gone or being closed.
    Closed,
}

/// See [`Outbox::poll_next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Close now ([`Outbox::kick`]).
    Kicked,
    /// Send this.
    Frame(Bytes),
    /// Nothing queued.
    Idle,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    waker: AtomicWaker,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    closed: bool,
    /// The close frame to send, once somebody asked for one. The first request wins.
    kick: Option<(u16, Box<str>)>,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` unless the queue is full or closed.
    pub fn try_send(&self, frame: Bytes) -> Result<(), Refused> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(Refused::Closed);
            }
            if st.queue.len() >= self.capacity {
                return Err(Refused::Full);
            }
            st.queue.push_back(frame);
        }
        self.waker.wake();
        Ok(())
    }

    /// The next frame, if one is queued. A drained queue gives its memory back: an idle
    /// member costs no queue at all.
    pub fn try_recv(&self) -> Option<Bytes> {
        let mut st = self.lock();
        let frame = st.queue.pop_front();
        if st.queue.is_empty() && st.queue.capacity() > KEEP {
            st.queue = VecDeque::new();
        }
        frame
    }

    /// The next frame; `Ready(None)` once closed and drained. Registers the task to be woken
    /// by the next frame, close or kick.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.waker.register(cx.waker());
        if let Some(frame) = self.try_recv() {
            return Poll::Ready(Some(frame));
        }
        if self.lock().closed {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Waits for the next frame; `None` once closed and drained.
    pub async fn recv(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Refuses further frames and wakes the connection.
    pub fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }

    /// Asks the connection to close with `code` and `reason` (clipped to what a close frame
    /// holds). Frames still queued are dropped; later offers are refused.
    pub fn kick(&self, code: u16, reason: &str) {
        {
            let mut st = self.lock();
            if st.kick.is_none() {
                st.kick = Some((code, clip(reason, MAX_CLOSE_REASON).into()));
            }
            st.closed = true;
            st.queue = VecDeque::new();
        }
        self.waker.wake();
    }

    /// The close asked for with [`Outbox::kick`], if any.
    pub fn kicked(&self) -> Option<(u16, String)> {
        self.lock()
            .kick
            .as_ref()
            .map(|(code, reason)| (*code, reason.to_string()))
    }

    /// What the connection should do next, in one look (one lock). Registers the task to be
    /// woken by the next frame, close or kick.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Next {
        self.waker.register(cx.waker());
        let mut st = self.lock();
        if st.kick.is_some() {
            return Next::Kicked;
        }
        let frame = st.queue.pop_front();
        if st.queue.is_empty() && st.queue.capacity() > KEEP {
            st.queue = VecDeque::new();
        }
        frame.map_or(Next::Idle, Next::Frame)
    }

    /// Whether [`Outbox::kick`] was called; registers the task to be woken when it is.
    pub fn poll_kicked(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.lock().kick.is_some()
    }
}

/// Queue slots kept once drained (a live room sends a frame per tick; an idle member's few
/// hello frames fit, so it holds no queue at all after them).
const KEEP: usize = 0;

/// A close frame's reason must fit in 123 bytes (RFC 6455 §5.5), or the frame is invalid.
pub const MAX_CLOSE_REASON: usize = 123;

/// `s` cut to at most `max` bytes, on a char boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_ordered_and_closable() {
        let q = std::sync::Arc::new(Outbox::new(2));
        assert_eq!(q.try_send(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(q.try_send(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(q.try_send(Bytes::from_static(b"c")), Err(Refused::Full));
        assert_eq!(q.recv().await.as_deref(), Some(&b"a"[..]));
        let reader = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(f) = q.recv().await {
                    got.push(f);
                }
                got
            })
        };
        assert_eq!(q.try_send(Bytes::from_static(b"d")), Ok(()));
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(q.try_send(Bytes::from_static(b"e")), Err(Refused::Closed));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("reader ends after close")
            .expect("reader task");
        assert_eq!(
            got,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"d")]
        );
    }

    #[tokio::test]
    async fn a_kick_wakes_the_connection_and_the_first_reason_wins() {
        let q = std::sync::Arc::new(Outbox::new(4));
        assert_eq!(q.try_send(Bytes::from_static(b"a")), Ok(()));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move {
                std::future::poll_fn(|cx| {
                    if q.poll_kicked(cx) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        q.kick(1008, &"é".repeat(100));
        q.kick(1000, "second");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the kick")
            .expect("task");
        let (code, reason) = q.kicked().expect("kicked");
        assert_eq!(code, 1008);
        assert!(reason.len() <= MAX_CLOSE_REASON && reason.len() >= 121);
        assert_eq!(q.try_recv(), None, "queued frames are dropped");
        assert_eq!(q.try_send(Bytes::from_static(b"b")), Err(Refused::Closed));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(clip("short", 123), "short");
        assert_eq!(clip("éé", 3), "é");
    }
}
