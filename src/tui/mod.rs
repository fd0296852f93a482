//! The full-screen editor, in the Elm style: [`app::App`] is the state, [`update::update`] turns
//! a [`update::Msg`] into a new state plus effects, [`view::render`] draws it. The loop here is
//! the only place that touches the terminal, and disk and network reach it through channels.

pub mod app;
pub mod highlight;
pub mod input;
pub mod keys;
pub mod term;
pub mod text;
pub mod update;
pub mod view;

use std::collections::VecDeque;
use std::time::Duration;

use crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, Event, KeyCode, KeyEvent, KeyEventKind,
    KeyModifiers,
};
use tokio::sync::{oneshot, watch};

use app::App;
use update::{Effect, Msg, update};

/// Frames or updates slower than this are logged (half a 60 Hz frame).
const SLOW: Duration = Duration::from_millis(8);

/// How long after an Escape the next key may come and still be read as part of the same
/// escape sequence ([`keys::escape_tail`]): a terminal writes a sequence at once, a person
/// is far slower.
const ESC_WAIT: Duration = Duration::from_millis(5);

/// How often the editor looks at the clock's business ([`Msg::Tick`]) and the terminal's size.
const TICK: Duration = Duration::from_secs(1);

/// How long after a frame the work it did not wait for ([`Msg::Idle`]) may start, if no key
/// comes first. The terminal reads and shows the frame meanwhile: started at once, a line's
/// parse would take the CPU the terminal was woken on, and the key would show that much later.
/// Far below what an eye sees (a 60 Hz frame is 16.7 ms): the colours follow as if at once.
const IDLE_AFTER: Duration = Duration::from_millis(3);

/// The message for a terminal event (`None`: nothing the editor reacts to).
fn msg_of(event: Event) -> Option<Msg> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => Some(Msg::Key(key)),
        Event::Paste(text) => Some(Msg::Paste(text)),
        Event::Resize(w, h) => Some(Msg::Resize(w, h)),
        _ => None,
    }
}

/// A plain Escape key press: crossterm may have split an escape sequence after it.
fn plain_escape(event: &Event) -> bool {
    matches!(event, Event::Key(k) if k.code == KeyCode::Esc
        && k.modifiers.is_empty()
        && k.kind == KeyEventKind::Press)
}

/// The events that follow an Escape within [`ESC_WAIT`] of each other, read back into the key
/// of an escape sequence if that is what they were; else the Escape and them, as they came.
/// `None` if the terminal hung up meanwhile.
fn after_escape(events: &mut input::Input, esc: Event) -> std::io::Result<Option<Vec<Event>>> {
    let mut chars = Vec::new();
    let mut taken = vec![esc];
    loop {
        let until = std::time::Instant::now() + ESC_WAIT;
        let next = loop {
            match events.ready_event()? {
                input::Ready::Event(e) => break Some(e),
                input::Ready::HungUp => return Ok(None),
                input::Ready::Nothing => {}
            }
            match events.wait(Some(until), false)? {
                input::Woke::Input | input::Woke::Woken => {}
                input::Woke::Timeout => break None,
                input::Woke::HungUp => return Ok(None),
            }
        };
        let Some(next) = next else { break };
        let c = match &next {
            Event::Key(KeyEvent {
                code: KeyCode::Char(c),
                modifiers,
                kind: KeyEventKind::Press,
                ..
            }) if (*modifiers - KeyModifiers::SHIFT).is_empty() => Some(*c),
            _ => None,
        };
        taken.push(next);
        let Some(c) = c else { break };
        chars.push(c);
        match keys::escape_tail(&chars) {
            keys::EscTail::Key(key) => return Ok(Some(vec![Event::Key(key)])),
            keys::EscTail::More => {}
            keys::EscTail::NotOne => break,
        }
    }
    Ok(Some(taken))
}

/// How an editing session ended.
#[derive(Debug)]
pub struct Closed {
    /// The editor ran: the fields below say how it left the text.
    pub ran: bool,
    /// The text had changes not written to the file.
    pub dirty: bool,
    /// The user chose to quit without saving them.
    pub discarded: bool,
    /// Where the text was written as we quit with edits the relay had not got.
    pub kept: Option<std::path::PathBuf>,
    /// Why the editor stopped, if not because the user quit.
    pub result: anyhow::Result<()>,
}

/// Runs the editor on the app `make_app` makes until the user quits. The terminal is restored
/// on return, on error, and on panic (ratatui's panic hook).
/// `first_frame` is told once the first frame is on screen (so heavy startup work can wait).
///
/// The editor gets a thread of its own, which sleeps in `poll(2)` on the terminal and on a
/// pipe ([`input`]), so a key wakes that thread straight from the terminal. The session and the
/// relay go on on the caller's runtime, and so do the editor's saves and the small tasks that
/// wake it for a remote change or a resize. The app is made on the editor's thread: the
/// highlighter's parser state cannot move between threads.
pub async fn run(
    make_app: impl FnOnce() -> App + Send + 'static,
    changes: watch::Receiver<u64>,
    first_frame: Option<oneshot::Sender<()>>,
) -> Closed {
    let never_ran = |result| Closed {
        ran: false,
        dirty: false,
        discarded: false,
        kept: None,
        result,
    };
    let runtime = tokio::runtime::Handle::current();
    let (done, closed) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("pairedit-editor".into())
        .spawn(move || {
            let mut app = make_app();
            let result = run_here(&mut app, &runtime, changes, first_frame);
            let _ = done.send(Closed {
                ran: true,
                dirty: app.dirty,
                discarded: app.discarded,
                kept: app.kept.clone(),
                result,
            });
        });
    let thread = match thread {
        Ok(thread) => thread,
        Err(e) => {
            return never_ran(Err(
                anyhow::Error::new(e).context("cannot start the editor's thread")
            ));
        }
    };
    match closed.await {
        Ok(closed) => closed,
        // The thread ended without a word: it panicked. Pass the panic on.
        Err(_) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => never_ran(Err(anyhow::anyhow!("the editor's thread ended"))),
        },
    }
}

fn run_here(
    app: &mut App,
    runtime: &tokio::runtime::Handle,
    changes: watch::Receiver<u64>,
    first_frame: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut screen = term::Screen::init()?;
    let _ = crossterm::execute!(std::io::stdout(), EnableBracketedPaste);
    let recovery = RecoveryOrder::default();
    // A panic too ends here first (and is passed on below): the typing is kept as well.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        input::Input::open()
            .map_err(anyhow::Error::from)
            .and_then(|mut events| {
                let mut inbox = Inbox::start(runtime, &events, changes);
                inbox.recovery = recovery.clone();
                event_loop(
                    &mut screen,
                    app,
                    &mut events,
                    runtime,
                    &mut inbox,
                    first_frame,
                )
            })
    }));
    // Unsaved changes first: the terminal may be gone (its window closed).
    keep_unsaved(app, &recovery);
    keep_unsent(app);
    let _ = crossterm::execute!(std::io::stdout(), DisableBracketedPaste);
    // Not `ratatui::restore`: it reports a failure with `eprintln!`, which panics when the
    // terminal is gone, and a panic there (in ratatui's panic hook) aborts.
    if let Err(e) = ratatui::try_restore() {
        tracing::warn!("cannot give the terminal back: {e}");
    }
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// However the editor ended (the terminal hung up, a signal, an error), unsaved changes to a
/// file are in its recovery copy as they are now, not as they were at the last tick: written
/// here, at once, on this thread.
fn keep_unsaved(app: &App, order: &RecoveryOrder) {
    let Some(path) = app.path.as_ref() else {
        return;
    };
    if !app.dirty || app.discarded || app.role != crate::protocol::Role::Writer {
        return;
    }
    let recovery = crate::fsutil::recovery_path(path);
    let text = app.file_text();
    // After any write or removal asked for before (one may still be in flight).
    order.land(order.ticket(), || {
        let chunks = text.chunks().map(str::as_bytes);
        if let Err(e) = crate::fsutil::write_atomic_chunks(&recovery, chunks) {
            tracing::error!("cannot write the recovery copy {}: {e}", recovery.display());
        }
    });
}

/// However the editor ended, edits the relay has not got, by a member with no file of its own
/// (offline, or the relay gone), are kept with the whole text in `NAME.unsent-SECS` here, as
/// quitting does ([`App::kept`] says where).
fn keep_unsent(app: &mut App) {
    if app.path.is_some()
        || app.kept.is_some()
        || app.role != crate::protocol::Role::Writer
        || !app.unsent()
    {
        return;
    }
    let name = update::unsent_name(app);
    let text = app.file_text();
    // Never over a file that is there: the next free name.
    for n in 0..100 {
        let path = match n {
            0 => name.clone(),
            n => std::path::PathBuf::from(format!("{}-{n}", name.display())),
        };
        let chunks = text.chunks().map(str::as_bytes);
        match crate::fsutil::write_atomic_with(&path, chunks, crate::fsutil::Replace::Nothing) {
            Ok(()) => {
                app.kept = Some(path);
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::error!("cannot keep the unsent edits in {}: {e}", path.display());
                return;
            }
        }
    }
}

/// The recovery copy's writes and removals land in the order the editor asked for them: each
/// is numbered when asked, and one that finds a later one landed already does nothing. Else a
/// write still queued or in flight when the editor ends could replace the copy written at the
/// end with an older one, or bring back a copy a save had removed.
#[derive(Debug, Clone, Default)]
struct RecoveryOrder(std::sync::Arc<(std::sync::atomic::AtomicU64, std::sync::Mutex<u64>)>);

impl RecoveryOrder {
    /// The next number, on the editor's thread, as the write or removal is asked for.
    fn ticket(&self) -> u64 {
        self.0.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    /// Runs `act` (holding the order: one at a time) unless a later ticket has landed.
    fn land(&self, ticket: u64, act: impl FnOnce()) {
        let mut landed = self
            .0
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *landed > ticket {
            return;
        }
        act();
        *landed = ticket;
    }
}

/// Everything but the terminal that has something for the editor: the session's changes
/// (remote edits, members, the connection), resizes, finished saves, the 1 s tick. Tasks on
/// the caller's runtime wake the editor ([`input::Wake`]) for the first two; a save wakes it
/// itself.
struct Inbox {
    changes: Option<watch::Receiver<u64>>,
    resized: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A signal asked the program to end (SIGTERM, SIGHUP: the terminal's window closed,
    /// SIGINT): the editor stops as if the terminal had hung up, keeping unsaved changes.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    saved: std::sync::mpsc::Receiver<Msg>,
    /// Where saves send their result ([`Inbox::saved`]).
    save_results: std::sync::mpsc::Sender<Msg>,
    next_tick: std::time::Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The order the recovery copy's writes and removals land in.
    recovery: RecoveryOrder,
}

impl Inbox {
    fn start(
        runtime: &tokio::runtime::Handle,
        events: &input::Input,
        changes: watch::Receiver<u64>,
    ) -> Inbox {
        let resized = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wake = events.waker();
        let on_change = {
            let (wake, mut changes) = (wake.clone(), changes.clone());
            runtime.spawn(async move {
                while changes.changed().await.is_ok() {
                    wake.wake();
                }
                // The session ended: the editor sees its receiver closed.
                wake.wake();
            })
        };
        let on_resize = {
            let resized = resized.clone();
            runtime.spawn(async move {
                let Ok(mut signal) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while signal.recv().await.is_some() {
                    resized.store(true, std::sync::atomic::Ordering::SeqCst);
                    wake.wake();
                }
            })
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_stop = {
            let (stop, wake) = (stop.clone(), events.waker());
            runtime.spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let kinds = [
                    SignalKind::terminate(),
                    SignalKind::hangup(),
                    SignalKind::interrupt(),
                ];
                let mut signals: Vec<_> =
                    kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
                if signals.is_empty() {
                    return;
                }
                let any = futures_util::future::select_all(
                    signals.iter_mut().map(|s| Box::pin(s.recv())),
                );
                any.await;
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                wake.wake();
            })
        };
        let (save_results, saved) = std::sync::mpsc::channel();
        Inbox {
            changes: Some(changes),
            resized,
            stop,
            saved,
            save_results,
            next_tick: std::time::Instant::now() + TICK,
            tasks: vec![on_change, on_resize, on_stop],
            recovery: RecoveryOrder::default(),
        }
    }

    /// What is there for the editor now, in this order: a save's result, a resize, a
    /// change from the session, the tick.
    fn take(&mut self) -> Option<Msg> {
        if let Ok(msg) = self.saved.try_recv() {
            return Some(msg);
        }
        if self
            .resized
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && let Ok((w, h)) = crossterm::terminal::size()
        {
            return Some(Msg::Resize(w, h));
        }
        if let Some(rx) = self.changes.as_mut() {
            match rx.has_changed() {
                Ok(true) => {
                    rx.mark_unchanged();
                    return Some(Msg::Remote);
                }
                Ok(false) => {}
                Err(_) => {
                    // The session task ended; its last state is already in place.
                    self.changes = None;
                    return Some(Msg::Remote);
                }
            }
        }
        let now = std::time::Instant::now();
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            return Some(Msg::Tick);
        }
        None
    }
}

impl Drop for Inbox {
    /// Stops the tasks, however the editor ended (a panic included).
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What woke the editor, in the order it is looked at: input first (a key is never kept
/// waiting behind anything else), then the rest ([`Inbox::take`]), then [`Msg::Idle`] once
/// `idle_at` has come (`None`: no idle work). `None`: the terminal hung up, or a signal asked
/// the program to end.
fn next_msg(
    events: &mut input::Input,
    ahead: &mut VecDeque<Event>,
    inbox: &mut Inbox,
    idle_at: Option<std::time::Instant>,
) -> std::io::Result<Option<Msg>> {
    loop {
        if let Some(event) = ahead.pop_front() {
            if let Some(msg) = msg_of(event) {
                return Ok(Some(msg));
            }
            continue;
        }
        match events.ready_event()? {
            input::Ready::Event(event) if plain_escape(&event) => {
                match after_escape(events, event)? {
                    Some(taken) => ahead.extend(taken),
                    None => return Ok(None),
                }
                continue;
            }
            input::Ready::Event(event) => {
                if let Some(msg) = msg_of(event) {
                    return Ok(Some(msg));
                }
                continue;
            }
            input::Ready::HungUp => return Ok(None),
            input::Ready::Nothing => {}
        }
        if inbox.stop.load(std::sync::atomic::Ordering::SeqCst) {
            // A save that finished is taken in first: the file is saved, not "unsaved".
            return Ok(inbox.saved.try_recv().ok());
        }
        if let Some(msg) = inbox.take() {
            return Ok(Some(msg));
        }
        if idle_at.is_some_and(|at| std::time::Instant::now() >= at) {
            return Ok(Some(Msg::Idle));
        }
        let until = idle_at.map_or(inbox.next_tick, |at| at.min(inbox.next_tick));
        if events.wait(Some(until), true)? == input::Woke::HungUp {
            return Ok(None);
        }
    }
}

fn event_loop(
    screen: &mut term::Screen,
    app: &mut App,
    events: &mut input::Input,
    runtime: &tokio::runtime::Handle,
    inbox: &mut Inbox,
    mut first_frame: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    // Events read ahead (after an Escape), handled before any new one.
    let mut ahead: VecDeque<Event> = VecDeque::new();
    // When the idle work may start ([`IDLE_AFTER`]), and whether the last message was input
    // (a key puts the work off again; a teammate's changes, arriving often, do not).
    let (mut idle_at, mut after_input) = (None, false);
    loop {
        let drawn = std::time::Instant::now();
        screen.draw(|frame| view::render(frame, app))?;
        if drawn.elapsed() > SLOW {
            tracing::warn!("slow frame: {:?}", drawn.elapsed());
        }
        if let Some(tx) = first_frame.take() {
            let _ = tx.send(());
        }
        idle_at = match idle_at {
            _ if !app.idle_work() => None,
            Some(at) if !after_input => Some(at),
            _ => Some(std::time::Instant::now() + IDLE_AFTER),
        };
        let Some(msg) = next_msg(events, &mut ahead, inbox, idle_at)? else {
            // The terminal hung up.
            return Ok(());
        };
        after_input = matches!(msg, Msg::Key(_) | Msg::Paste(_));
        match msg {
            Msg::Resize(w, h) => screen.resize(w, h),
            // A resize crossterm did not report (it reports SIGWINCH) is caught within a second.
            Msg::Tick => screen.check_size()?,
            _ => {}
        }
        let started = std::time::Instant::now();
        let effects = update(app, msg);
        if started.elapsed() > SLOW {
            tracing::warn!("slow update: {:?}", started.elapsed());
        }
        for effect in effects {
            match effect {
                Effect::Save {
                    path,
                    text,
                    generation,
                    expect,
                    force,
                } => {
                    let (tx, wake) = (inbox.save_results.clone(), events.waker());
                    // Disk I/O off the render loop; the answer comes back as a message.
                    runtime.spawn_blocking(move || {
                        let result = crate::fsutil::save_checked(&path, &text, expect, force)
                            .map(|stamp| (path, stamp));
                        let _ = tx.send(Msg::Saved { generation, result });
                        wake.wake();
                    });
                }
                Effect::CheckDisk {
                    path,
                    epoch,
                    expect,
                    text,
                    said,
                } => {
                    let (tx, wake) = (inbox.save_results.clone(), events.waker());
                    runtime.spawn_blocking(move || {
                        if let Some(msg) = update::look_at_file(&path, epoch, expect, text, said) {
                            let _ = tx.send(msg);
                            wake.wake();
                        }
                    });
                }
                Effect::Reload { path, epoch } => {
                    let (tx, wake) = (inbox.save_results.clone(), events.waker());
                    runtime.spawn_blocking(move || {
                        let _ = tx.send(update::read_file_again(&path, epoch));
                        wake.wake();
                    });
                }
                Effect::Flush => app.session.flush(),
                Effect::WriteRecovery { path, text } => {
                    let (tx, wake) = (inbox.save_results.clone(), events.waker());
                    let (order, ticket) = (inbox.recovery.clone(), inbox.recovery.ticket());
                    runtime.spawn_blocking(move || {
                        order.land(ticket, || {
                            let chunks = text.chunks().map(str::as_bytes);
                            if let Err(e) = crate::fsutil::write_atomic_chunks(&path, chunks) {
                                tracing::warn!(
                                    "cannot write the recovery copy {}: {e}",
                                    path.display()
                                );
                                let _ = tx.send(Msg::RecoveryFailed(e.to_string()));
                                wake.wake();
                            }
                        });
                    });
                }
                Effect::RemoveRecovery { path } => {
                    let (order, ticket) = (inbox.recovery.clone(), inbox.recovery.ticket());
                    runtime.spawn_blocking(move || {
                        order.land(ticket, || {
                            let _ = std::fs::remove_file(path);
                        });
                    });
                }
                Effect::Quit => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RecoveryOrder;

    #[test]
    fn recovery_writes_land_in_the_order_they_were_asked_for() {
        let order = RecoveryOrder::default();
        let (first, second) = (order.ticket(), order.ticket());
        let landed = std::sync::Mutex::new(Vec::new());
        // The second lands first (the first was still queued): the first then does nothing.
        order.land(second, || landed.lock().unwrap().push("second"));
        order.land(first, || landed.lock().unwrap().push("first"));
        // A later one lands.
        order.land(order.ticket(), || landed.lock().unwrap().push("third"));
        assert_eq!(*landed.lock().unwrap(), ["second", "third"]);
    }
}
