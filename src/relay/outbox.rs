//! A member's link to its connection: a bounded send queue the room offers frames to without
//! waiting, and the close (code and reason) the room or the relay asks for. The connection's one
//! task polls it beside the socket.
//!
//! Lighter than a tokio mpsc channel plus a cancellation token, which allocate a 32-slot block
//! and a tree node per connection up front (≈1.4 KiB per idle connection): this holds nothing
//! until a frame arrives, gives its capacity back once drained, and wakes one task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Waker};

use bytes::Bytes;

/// Why [`Outbox::try_send`] did not queue a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The member has `capacity` frames waiting: it cannot keep up.
    Full,
    /// The connection is being closed.
    Closed,
}

/// See [`Outbox::poll_next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Close now ([`Outbox::kick`]).
    Kicked,
    /// Send this.
    Frame(Bytes),
    /// Send a WebSocket ping ([`Outbox::ping`]).
    Ping,
    /// Nothing queued.
    Idle,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    /// Whether the connection heard from its peer since the last [`Outbox::silent_for`].
    heard: AtomicBool,
    /// Sweeps of [`Outbox::silent_for`] in a row that found nothing heard.
    silent: AtomicU8,
}

#[derive(Debug, Default)]
struct State {
    /// The oldest queued frame. One frame, the common case (each update reaches each member
    /// and is written before the next), takes no allocation: a queue made and given back per
    /// frame was a `malloc` on the broadcasting thread and a `free` on the writing one, and at
    /// 1,000 viewers the two workers then fought over glibc's arena lock (~100 futex calls per
    /// update).
    head: Option<Bytes>,
    /// Frames queued behind `head` (empty while `head` is `None`).
    queue: VecDeque<Bytes>,
    /// The close frame to send, once somebody asked for one. The first request wins; frames
    /// are refused from then on.
    kick: Option<(u16, Box<str>)>,
    /// The connection's task, while it waits. Kept under the lock both sides take anyway (an
    /// `AtomicWaker` beside it cost two more atomic operations per frame on a line the other
    /// thread had just written: 6 % of the relay's time in a 1,000-viewer fan-out).
    waker: Option<Waker>,
    /// A ping is to be sent.
    ping: bool,
}

impl State {
    /// Remembers `cx`'s task to be woken (cloning its waker only when it changed).
    fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.queue.len()
    }

    fn push(&mut self, frame: Bytes) {
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.queue.push_back(frame);
        }
    }

    /// The next frame. A drained queue gives its memory back: an idle member holds no queue.
    fn pop(&mut self) -> Option<Bytes> {
        let frame = self.head.take();
        self.head = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        frame
    }

    fn clear(&mut self) {
        self.head = None;
        self.queue = VecDeque::new();
    }
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            heard: AtomicBool::new(false),
            silent: AtomicU8::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `frame` unless the queue is full or the connection is closing.
    pub fn try_send(&self, frame: Bytes) -> Result<(), Refused> {
        let waker = {
            let mut st = self.lock();
            if st.kick.is_some() {
                return Err(Refused::Closed);
            }
            if st.len() >= self.capacity {
                return Err(Refused::Full);
            }
            st.push(frame);
            st.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The next frame, if one is queued.
    pub fn try_recv(&self) -> Option<Bytes> {
        self.lock().pop()
    }

    /// Asks the connection to close with `code` and `reason` (clipped to what a close frame
    /// holds). Frames still queued are dropped; later offers are refused.
    pub fn kick(&self, code: u16, reason: &str) {
        let waker = {
            let mut st = self.lock();
            if st.kick.is_none() {
                st.kick = Some((code, clip(reason, MAX_CLOSE_REASON).into()));
            }
            st.clear();
            st.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks the connection to send a ping (its peer's pong counts as hearing from it).
    pub fn ping(&self) {
        let waker = {
            let mut st = self.lock();
            st.ping = true;
            st.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The connection heard from its peer (any frame, a pong too).
    pub fn heard(&self) {
        self.heard.store(true, Ordering::Relaxed);
    }

    /// For a periodic sweep: how many sweeps in a row (this one included) found nothing heard
    /// from the peer since the one before.
    pub fn silent_for(&self) -> u8 {
        if self.heard.swap(false, Ordering::Relaxed) {
            self.silent.store(0, Ordering::Relaxed);
            0
        } else {
            let n = self.silent.load(Ordering::Relaxed).saturating_add(1);
            self.silent.store(n, Ordering::Relaxed);
            n
        }
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
        let mut st = self.lock();
        st.register(cx);
        if st.kick.is_some() {
            return Next::Kicked;
        }
        if std::mem::take(&mut st.ping) {
            return Next::Ping;
        }
        st.pop().map_or(Next::Idle, Next::Frame)
    }

    /// Whether [`Outbox::kick`] was called, and whether a ping was asked for (taken: it is the
    /// caller's to send); registers the task to be woken by either.
    pub fn poll_control(&self, cx: &mut Context<'_>) -> (bool, bool) {
        let mut st = self.lock();
        st.register(cx);
        (st.kick.is_some(), std::mem::take(&mut st.ping))
    }
}

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
    use std::task::Poll;

    #[tokio::test]
    async fn bounded_ordered_and_closable() {
        let q = std::sync::Arc::new(Outbox::new(2));
        assert_eq!(q.try_send(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(q.try_send(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(q.try_send(Bytes::from_static(b"c")), Err(Refused::Full));
        assert_eq!(q.try_recv().as_deref(), Some(&b"a"[..]));
        // The connection's side: frames in order until the kick, woken for each.
        let reader = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match std::future::poll_fn(|cx| match q.poll_next(cx) {
                        Next::Idle => Poll::Pending,
                        next => Poll::Ready(next),
                    })
                    .await
                    {
                        Next::Frame(f) => got.push(f),
                        _ => return got,
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(q.try_send(Bytes::from_static(b"d")), Ok(()));
        tokio::task::yield_now().await;
        q.kick(1000, "bye");
        assert_eq!(q.try_send(Bytes::from_static(b"e")), Err(Refused::Closed));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("reader ends after the kick")
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
                    if q.poll_control(cx).0 {
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

    proptest::proptest! {
        /// Frames come out in the order they went in, the bound counts every queued frame
        /// (the one kept inline too), and a drained outbox holds no queue memory.
        #[test]
        fn queues_like_a_bounded_fifo(ops in proptest::collection::vec(0u8..3, 0..200), cap in 1usize..6) {
            let q = Outbox::new(cap);
            let mut model = VecDeque::new();
            let mut next = 0u32;
            for op in ops {
                if op < 2 {
                    let frame = Bytes::from(next.to_le_bytes().to_vec());
                    next += 1;
                    let got = q.try_send(frame.clone());
                    if model.len() < cap {
                        proptest::prop_assert_eq!(got, Ok(()));
                        model.push_back(frame);
                    } else {
                        proptest::prop_assert_eq!(got, Err(Refused::Full));
                    }
                } else {
                    proptest::prop_assert_eq!(q.try_recv(), model.pop_front());
                }
                if model.is_empty() {
                    proptest::prop_assert_eq!(q.lock().queue.capacity(), 0);
                }
            }
            while let Some(frame) = model.pop_front() {
                proptest::prop_assert_eq!(q.try_recv(), Some(frame));
            }
            proptest::prop_assert_eq!(q.try_recv(), None);
        }
    }
}
