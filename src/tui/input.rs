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
        let saved = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 0)?;
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
    /// stdin was readable but crossterm read nothing from it: crossterm only reads when its
    /// epoll reports new input, so what is left waits for that (or for [`nudge`]). Meanwhile
    /// `poll` would report stdin readable at once, again and again: it is looked at every
    /// [`STUCK_RETRY`] instead.
    stuck: bool,
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
            stuck: false,
        })
    }

    /// A handle that wakes this input's waits from any thread.
    pub fn waker(&self) -> Wake {
        self.wake.clone()
    }

    /// The next terminal event if one is there now: what crossterm has parsed already, or
    /// what stdin holds. Never blocks.
    pub fn ready_event(&mut self) -> io::Result<Ready> {
        let woke_for_input = std::mem::take(&mut self.fresh);
        if !woke_for_input && hung_up() {
            return Ok(Ready::HungUp);
        }
        if crossterm::event::poll(Duration::ZERO)? {
            self.stuck = false;
            return crossterm::event::read().map(Ready::Event);
        }
        if woke_for_input || self.stuck {
            // Bytes crossterm did not read (see `stuck`), or only the start of an escape
            // sequence it keeps for the rest (then stdin holds nothing).
            self.stuck = input_pending();
            if self.stuck {
                // Have the terminal wake crossterm's epoll again.
                nudge();
            }
        }
        Ok(Ready::Nothing)
    }

    /// Sleeps until the terminal has input, the pipe is written to (if `watch_wake`), or
    /// `until` comes (`None`: no time limit). Input that crossterm left unread ([`Input`]'s
    /// `stuck`) is looked at again every [`STUCK_RETRY`], not on every wake.
    pub fn wait(&mut self, until: Option<Instant>, watch_wake: bool) -> io::Result<Woke> {
        let stdin = rustix::stdio::stdin();
        loop {
            let now = Instant::now();
            if until.is_some_and(|t| now >= t) {
                return Ok(Woke::Timeout);
            }
            let retry = self.stuck.then(|| now + STUCK_RETRY);
            let deadline = until.into_iter().chain(retry).min();
            let timeout = deadline.map(|t| {
                let left = t.saturating_duration_since(now);
                Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            // Both always polled, so their places are fixed; with no events asked, stdin
            // still reports a hang-up, and the pipe (whose write end we hold) nothing.
            let asked = |yes: bool| {
                if yes {
                    PollFlags::IN
                } else {
                    PollFlags::empty()
                }
            };
            let mut fds = [
                PollFd::new(&stdin, asked(!self.stuck)),
                PollFd::new(&self.wake_read, asked(watch_wake)),
            ];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let (input, woken) = (fds[0].revents(), !fds[1].revents().is_empty());
            if input.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                return Ok(Woke::HungUp);
            }
            if woken {
                // Drained: whoever woke us set what they had for us before writing.
                let mut buf = [0u8; 64];
                while matches!(rustix::io::read(&self.wake_read, &mut buf), Ok(k) if k > 0) {}
                return Ok(Woke::Woken);
            }
            if input.contains(PollFlags::IN) {
                self.fresh = true;
                return Ok(Woke::Input);
            }
            if retry.is_some_and(|t| Instant::now() >= t) {
                // Time to see whether crossterm reads again.
                return Ok(Woke::Input);
            }
        }
    }
}

/// How often input crossterm left unread is looked at again.
const STUCK_RETRY: Duration = Duration::from_millis(10);

/// Has the terminal wake whoever waits to read it, crossterm's epoll included: setting the
/// terminal's modes, even to what they are, does (Linux's line discipline wakes its readers
/// after any change of modes). crossterm reads at most 1 KiB when its epoll, which reports only
/// changes, says stdin is readable, and stops at the first event it parses, so without this
/// the rest of a larger burst of input (a long unbracketed paste) would wait for the next key.
fn nudge() {
    let stdin = rustix::stdio::stdin();
    if let Ok(modes) = rustix::termios::tcgetattr(stdin) {
        let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &modes);
    }
}

/// What stdin is ready for now (empty if `poll` failed).
fn stdin_now() -> PollFlags {
    let stdin = rustix::stdio::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(_) => fds[0].revents(),
        Err(_) => PollFlags::empty(),
    }
}

/// Whether stdin holds input not read yet.
fn input_pending() -> bool {
    stdin_now().contains(PollFlags::IN)
}

/// Whether the terminal on stdin hung up (then crossterm would read it forever).
fn hung_up() -> bool {
    stdin_now().intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
}
