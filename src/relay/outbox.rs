//! A member's bounded send queue: the room offers frames without waiting; the connection's
//! writer takes them in order. Lighter than a tokio mpsc channel, which allocates a 32-slot
//! block per channel up front (≈1.2 KiB per idle connection): this queue holds nothing until a
//! frame arrives and gives back large spare capacity once drained.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why [`Outbox::try_send`] did not queue a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The member has `capacity` frames waiting: it cannot keep up.
    Full,
    /// The connection is gone.
    Closed,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    closed: bool,
}

/// Spare capacity kept after the queue drains; more is returned to the allocator.
const KEEP: usize = 8;

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
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
        self.ready.notify_one();
        Ok(())
    }

    /// The next frame, if one is queued.
    pub fn try_recv(&self) -> Option<Bytes> {
        let mut st = self.lock();
        let frame = st.queue.pop_front();
        if st.queue.is_empty() && st.queue.capacity() > KEEP {
            st.queue.shrink_to(KEEP);
        }
        frame
    }

    /// Waits for the next frame; `None` once closed and drained.
    pub async fn recv(&self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            if self.lock().closed {
                return None;
            }
            // A notify_one with nobody waiting leaves a permit, so a frame queued between the
            // check above and this await is not missed.
            self.ready.notified().await;
        }
    }

    /// Refuses further frames and wakes the reader.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
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
}
