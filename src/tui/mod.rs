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
use tokio::sync::{mpsc, oneshot, watch};

use app::App;
use update::{Effect, Msg, update};

/// Frames or updates slower than this are logged (half a 60 Hz frame).
const SLOW: Duration = Duration::from_millis(8);

/// How long after an Escape the next key may come and still be read as part of the same
/// escape sequence ([`keys::escape_tail`]): a terminal writes a sequence at once, a person
/// is far slower.
const ESC_WAIT: Duration = Duration::from_millis(5);

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
async fn after_escape(events: &mut input::Input, esc: Event) -> std::io::Result<Vec<Event>> {
    let mut chars = Vec::new();
    let mut taken = vec![esc];
    while let Ok(Some(next)) = tokio::time::timeout(ESC_WAIT, events.next()).await {
        let next = next?;
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
            keys::EscTail::Key(key) => return Ok(vec![Event::Key(key)]),
            keys::EscTail::More => {}
            keys::EscTail::NotOne => break,
        }
    }
    Ok(taken)
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
    /// Why the editor stopped, if not because the user quit.
    pub result: anyhow::Result<()>,
}

/// Runs the editor on the app `make_app` makes until the user quits. The terminal is restored
/// on return, on error, and on panic (ratatui's panic hook).
/// `first_frame` is told once the first frame is on screen (so heavy startup work can wait).
///
/// The editor gets a thread and a runtime of its own, so that a key wakes that thread straight
/// from the terminal ([`input`]); the session and the relay go on on the caller's runtime. The
/// app is made there: the highlighter's parser state cannot move between threads.
pub async fn run(
    make_app: impl FnOnce() -> App + Send + 'static,
    changes: watch::Receiver<u64>,
    first_frame: Option<oneshot::Sender<()>>,
) -> Closed {
    let never_ran = |result| Closed {
        ran: false,
        dirty: false,
        discarded: false,
        result,
    };
    let (done, closed) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("pairedit-editor".into())
        .spawn(move || {
            let closed = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let mut app = make_app();
                    let result = runtime.block_on(run_here(&mut app, changes, first_frame));
                    Closed {
                        ran: true,
                        dirty: app.dirty,
                        discarded: app.discarded,
                        result,
                    }
                }
                Err(e) => never_ran(Err(e.into())),
            };
            let _ = done.send(closed);
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

async fn run_here(
    app: &mut App,
    changes: watch::Receiver<u64>,
    first_frame: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut screen = term::Screen::init()?;
    let _ = crossterm::execute!(std::io::stdout(), EnableBracketedPaste);
    let result = event_loop(&mut screen, app, changes, first_frame).await;
    let _ = crossterm::execute!(std::io::stdout(), DisableBracketedPaste);
    ratatui::restore();
    result
}

async fn event_loop(
    screen: &mut term::Screen,
    app: &mut App,
    changes: watch::Receiver<u64>,
    mut first_frame: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut events = input::Input::open();
    let (saved_tx, mut saved_rx) = mpsc::unbounded_channel::<Msg>();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut changes = Some(changes);
    // Events read ahead (after an Escape), handled before any new one.
    let mut ahead: VecDeque<Event> = VecDeque::new();
    loop {
        let drawn = std::time::Instant::now();
        screen.draw(|frame| view::render(frame, app))?;
        if drawn.elapsed() > SLOW {
            tracing::warn!("slow frame: {:?}", drawn.elapsed());
        }
        if let Some(tx) = first_frame.take() {
            let _ = tx.send(());
        }
        let msg = if let Some(event) = ahead.pop_front() {
            match msg_of(event) {
                Some(msg) => msg,
                None => continue,
            }
        } else {
            tokio::select! {
            // Input first, and the other branches not polled at all when it is there: a
            // key's wake-up costs less (each branch polled registers its waker anew). Input
            // that never stops coming would hold the rest back while it lasted; keys and
            // pastes stop.
            biased;
            event = events.next() => match event {
                Some(Ok(event)) if plain_escape(&event) => {
                    ahead.extend(after_escape(&mut events, event).await?);
                    continue;
                }
                Some(Ok(event)) => match msg_of(event) {
                    Some(msg) => msg,
                    None => continue,
                },
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            changed = async {
                match changes.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                if !changed {
                    // The session task ended; its last state is already in place.
                    changes = None;
                }
                Msg::Remote
            }
            Some(msg) = saved_rx.recv() => msg,
            _ = tick.tick() => Msg::Tick,
            }
        };
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
                    let tx = saved_tx.clone();
                    // Disk I/O off the render loop; the answer comes back as a message.
                    tokio::task::spawn_blocking(move || {
                        let result = crate::fsutil::save_checked(&path, &text, expect, force)
                            .map(|stamp| (path, stamp));
                        let _ = tx.send(Msg::Saved { generation, result });
                    });
                }
                Effect::Flush => app.session.flush(),
                Effect::WriteRecovery { path, text } => {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = crate::fsutil::write_atomic(&path, text.as_bytes()) {
                            tracing::warn!(
                                "cannot write the recovery copy {}: {e}",
                                path.display()
                            );
                        }
                    });
                }
                Effect::RemoveRecovery { path } => {
                    tokio::task::spawn_blocking(move || {
                        let _ = std::fs::remove_file(path);
                    });
                }
                Effect::Quit => return Ok(()),
            }
        }
    }
}
