//! Keys from the terminal, and everything else that wakes the editor, on the editor's own
//! thread: it sleeps in one `poll(2)` on the terminal and on a pipe ([`Wake`]) that the rest of
//! the program writes to when it has something for the editor (a remote edit, a save's
//! result, a resize). No async runtime runs on that thread: waking a tokio runtime's thread and
//! polling its tasks cost a key 27 µs before crossterm read it (`perf trace`), cold code and
//! data mostly; a `poll` returning costs a few.
//!
//! crossterm reads and parses what the terminal sent, without blocking: crossterm reads until
//! what it read makes an event, so on a blocking descriptor an unfinished sequence (Alt-[ is
//! `ESC [`) would hold the editor's thread in `read` until the next key. So stdin is, while the
//! editor runs, a description of the terminal of its own, non-blocking (stdout, the same
//! terminal, stays blocking): the terminal stdin is, else the controlling one (`/dev/tty`, when
//! stdin was redirected). And crossterm reads a hung-up terminal (`read` gives 0) forever: a
//! hang-up is looked for before crossterm may read (through what `poll` has just reported, when
//! it woke us: a key then costs no system call for it).

use std::io::{self, IsTerminal as _};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::Event;
use rustix::event::{PollFd, PollFlags, Timespec};

/// stdin replaced by a non-blocking description of the terminal; the old one is put back on
/// drop.
pub struct OwnStdin {
    saved: OwnedFd,
}

impl OwnStdin {
    fn take() -> io::Result<OwnStdin> {
        let open = |path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
        };
        // The terminal stdin is (through /proc, which needs no controlling terminal), else the
        // controlling one.
        let tty = if io::stdin().is_terminal() {
            open("/proc/self/fd/0").or_else(|_| open("/dev/tty"))?
        } else {
            open("/dev/tty")?
        };
        if !tty.is_terminal() {
            return Err(io::Error::other("no terminal to read keys from"));
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

/// The pipe that wakes the editor's thread: any thread may [`Wake::wake`] it.
#[derive(Clone)]
pub struct Wake {
    write: Arc<OwnedFd>,
}

impl Wake {
    /// Wakes the editor if it sleeps, or makes its next sleep return at once.
    pub fn wake(&self) {
        // A full pipe already wakes it.
        let _ = rustix::io::write(&*self.write, &[1]);
    }
}

/// What ended a wait ([`Input::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The terminal has input.
    Input,
    /// Something was sent to the editor ([`Wake::wake`]).
    Woken,
    /// The time given passed.
    Timeout,
    /// The terminal hung up.
    HungUp,
}

/// What [`Input::ready_event`] found.
#[derive(Debug)]
pub enum Ready {
    Event(Event),
    Nothing,
    /// The terminal hung up: there will be no more.
    HungUp,
}

/// The terminal's input and the wake-up pipe.
pub struct Input {
    _own: OwnStdin,
    wake_read: OwnedFd,
    wake: Wake,
    /// `poll` has just reported stdin readable and not hung up.
    fresh: bool,
}

impl Input {
    /// Takes stdin over (see the module documentation).
    pub fn open() -> io::Result<Input> {
        let own = OwnStdin::take()?;
        let (read, write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        Ok(Input {
            _own: own,
            wake_read: read,
            wake: Wake {
                write: Arc::new(write),
            },
            fresh: false,
        })
    }

    /// A handle that wakes this input's waits from any thread.
    pub fn waker(&self) -> Wake {
        self.wake.clone()
    }

    /// The next terminal event if one is there now: what crossterm has parsed already, or
    /// what stdin holds. Never blocks.
    pub fn ready_event(&mut self) -> io::Result<Ready> {
        if !std::mem::take(&mut self.fresh) && hung_up() {
            return Ok(Ready::HungUp);
        }
        if crossterm::event::poll(Duration::ZERO)? {
            return crossterm::event::read().map(Ready::Event);
        }
        Ok(Ready::Nothing)
    }

    /// Sleeps until the terminal has input, the pipe is written to, or `until` comes (`None`:
    /// no time limit).
    pub fn wait(&mut self, until: Option<Instant>, watch_wake: bool) -> io::Result<Woke> {
        let stdin = rustix::stdio::stdin();
        loop {
            let timeout = until.map(|t| {
                let left = t.saturating_duration_since(Instant::now());
                Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            let mut fds = [
                PollFd::new(&stdin, PollFlags::IN),
                PollFd::new(&self.wake_read, PollFlags::IN),
            ];
            let n = if watch_wake { 2 } else { 1 };
            match rustix::event::poll(&mut fds[..n], timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let input = fds[0].revents();
            if input.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                return Ok(Woke::HungUp);
            }
            let woken = n == 2 && !fds[1].revents().is_empty();
            if woken {
                // Drained: whoever woke us set what they had for us before writing.
                let mut buf = [0u8; 64];
                while matches!(rustix::io::read(&self.wake_read, &mut buf), Ok(k) if k > 0) {}
            }
            if input.contains(PollFlags::IN) {
                self.fresh = true;
                return Ok(Woke::Input);
            }
            if woken {
                return Ok(Woke::Woken);
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return Ok(Woke::Timeout);
            }
        }
    }
}

/// Whether the terminal on stdin hung up (then crossterm would read it forever).
fn hung_up() -> bool {
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
