//! Keys from the terminal, read on the editor's own thread.
//!
//! crossterm's `EventStream` waits for input on a helper thread of its own, which then wakes
//! the task that reads the event: every key wakes two threads, one after the other, before
//! the editor sees it. When stdin is the terminal (as it is whenever the editor runs in one),
//! this instead waits for stdin to be readable in the editor's own runtime, so the key wakes
//! the editor's thread straight away, and crossterm then reads and parses what is there
//! without blocking. crossterm learns of a resize from a signal (SIGWINCH), so that wakes the
//! editor too. Otherwise (stdin redirected: crossterm reads `/dev/tty`) it is `EventStream`.

use std::io::{self, IsTerminal as _};
use std::time::Duration;

use crossterm::event::{Event, EventStream};
use futures_util::StreamExt as _;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Terminal input: see the module documentation.
pub enum Input {
    /// stdin is the terminal: its readiness wakes us, crossterm reads it.
    Tty {
        stdin: AsyncFd<io::Stdin>,
        resized: Signal,
    },
    /// Anything else: crossterm's own stream.
    Stream(EventStream),
}

impl Input {
    /// Input for the runtime this is called in.
    // `AsyncFd::with_interest` is deprecated because it cannot know that the descriptor stays
    // open while registered; its replacement is `unsafe`, which this crate forbids. Here the
    // descriptor is stdin's, 0, which nothing closes while the process lives.
    #[allow(deprecated)]
    pub fn open() -> Input {
        let stdin = io::stdin();
        if stdin.is_terminal()
            && let Ok(stdin) = AsyncFd::with_interest(stdin, Interest::READABLE)
            && let Ok(resized) = signal(SignalKind::window_change())
        {
            return Input::Tty { stdin, resized };
        }
        Input::Stream(EventStream::new())
    }

    /// The next event; `None` when there will be none.
    pub async fn next(&mut self) -> Option<io::Result<Event>> {
        match self {
            Input::Stream(events) => events.next().await,
            Input::Tty { stdin, resized } => loop {
                // What crossterm holds already (one read can bring several events), or what
                // stdin has now: neither blocks.
                match crossterm::event::poll(Duration::ZERO) {
                    Ok(true) => return Some(crossterm::event::read()),
                    Ok(false) => {}
                    Err(e) => return Some(Err(e)),
                }
                tokio::select! {
                    ready = stdin.readable() => match ready {
                        // Cleared before crossterm reads, so input that comes after that
                        // read sets it again.
                        Ok(mut guard) => guard.clear_ready(),
                        Err(e) => return Some(Err(e)),
                    },
                    _ = resized.recv() => {}
                }
            },
        }
    }
}
