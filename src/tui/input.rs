//! Keys from the terminal, read on the editor's own thread.
//!
//! crossterm's `EventStream` waits for input on a helper thread of its own, which then wakes
//! the task that reads the event: every key wakes two threads, one after the other, before
//! the editor sees it. When stdin is the terminal (as it is whenever the editor runs in one),
//! this instead waits for stdin to be readable in the editor's own runtime, so the key wakes
//! the editor's thread straight away, and crossterm then reads and parses what is there
//! without blocking. A resize (SIGWINCH) wakes the editor too, with the terminal's new size.
//! Otherwise (stdin redirected: crossterm reads `/dev/tty`) it is `EventStream`.
//!
//! crossterm reads stdin until what it read makes an event: on a blocking descriptor an
//! unfinished sequence (Alt-[ is `ESC [`) would hold the editor's thread in `read` until the
//! next key. So stdin is, while the editor runs, a description of the terminal of its own,
//! non-blocking (stdout, the same terminal, stays blocking). And crossterm reads a hung-up
//! terminal (`read` gives 0) forever: a hang-up is looked for before crossterm may read
//! (through the readiness epoll has just reported, when it woke us: a key then costs no
//! system call for it).

use std::io::{self, IsTerminal as _};
use std::os::fd::OwnedFd;
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
        /// epoll has just reported stdin readable and not hung up.
        fresh: bool,
        _own: OwnStdin,
    },
    /// Anything else: crossterm's own stream.
    Stream(EventStream),
}

/// stdin replaced by a non-blocking description of the terminal; the old one is put back on
/// drop.
pub struct OwnStdin {
    saved: OwnedFd,
}

impl OwnStdin {
    fn take() -> io::Result<OwnStdin> {
        // The terminal stdin is (through /proc, which needs no controlling terminal), else
        // the controlling one.
        let open = |path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
        };
        let tty = open("/proc/self/fd/0").or_else(|_| open("/dev/tty"))?;
        if !tty.is_terminal() {
            return Err(io::Error::other("stdin is not a terminal"));
        }
        let saved = rustix::io::dup(rustix::stdio::stdin())?;
        rustix::io::ioctl_fionbio(&tty, true)?;
        rustix::stdio::dup2_stdin(&tty)?;
        Ok(OwnStdin { saved })
    }
}

impl Drop for OwnStdin {
    fn drop(&mut self) {
        let _ = rustix::stdio::dup2_stdin(&self.saved);
    }
}

/// Whether the terminal on stdin hung up (then crossterm would read it forever).
fn hung_up() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let stdin = rustix::stdio::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).is_ok()
        && fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
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
            && let Ok(own) = OwnStdin::take()
            && let Ok(stdin) = AsyncFd::with_interest(stdin, Interest::READABLE)
            && let Ok(resized) = signal(SignalKind::window_change())
        {
            return Input::Tty {
                stdin,
                resized,
                fresh: false,
                _own: own,
            };
        }
        Input::Stream(EventStream::new())
    }

    /// The next event; `None` when there will be none.
    pub async fn next(&mut self) -> Option<io::Result<Event>> {
        match self {
            Input::Stream(events) => events.next().await,
            Input::Tty {
                stdin,
                resized,
                fresh,
                ..
            } => loop {
                // Asked of the terminal itself, unless epoll has just said it is readable and
                // not hung up (the check is then already made, and costs a key a system call).
                if !std::mem::take(fresh) && hung_up() {
                    return None;
                }
                // What crossterm holds already (one read can bring several events), or what
                // stdin has now: neither blocks.
                match crossterm::event::poll(Duration::ZERO) {
                    Ok(true) => return Some(crossterm::event::read()),
                    Ok(false) => {}
                    Err(e) => return Some(Err(e)),
                }
                tokio::select! {
                    biased;
                    ready = stdin.readable() => match ready {
                        Ok(guard) if guard.ready().is_read_closed() => return None,
                        // Cleared before crossterm reads, so input that comes after that
                        // read sets it again.
                        Ok(mut guard) => {
                            guard.clear_ready();
                            *fresh = true;
                        }
                        Err(e) => return Some(Err(e)),
                    },
                    // crossterm reports a resize it sees; it can miss one (a signal before its
                    // reader existed, or together with input), so the size goes out from here.
                    _ = resized.recv() => {
                        if let Ok((w, h)) = crossterm::terminal::size() {
                            return Some(Ok(Event::Resize(w, h)));
                        }
                    }
                }
            },
        }
    }
}
