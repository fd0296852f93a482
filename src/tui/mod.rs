//! The full-screen editor, in the Elm style: [`app::App`] is the state, [`update::update`] turns
//! a [`update::Msg`] into a new state plus effects, [`view::render`] draws it. The loop here is
//! the only place that touches the terminal, and disk and network reach it through channels.

pub mod app;
pub mod highlight;
pub mod keys;
pub mod text;
pub mod update;
pub mod view;

use std::time::Duration;

use crossterm::event::{
    DisableBracketedPaste, EnableBracketedPaste, Event, EventStream, KeyEventKind,
};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use app::App;
use update::{Effect, Msg, update};

/// Frames or updates slower than this are logged (half a 60 Hz frame).
const SLOW: Duration = Duration::from_millis(8);

/// Runs the editor until the user quits. The terminal is restored on return, on error, and on
/// panic (ratatui's panic hook).
/// `first_frame` is told once the first frame is on screen (so heavy startup work can wait).
pub async fn run(
    app: &mut App,
    changes: watch::Receiver<u64>,
    first_frame: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _ = crossterm::execute!(std::io::stdout(), EnableBracketedPaste);
    let result = event_loop(&mut terminal, app, changes, first_frame).await;
    let _ = crossterm::execute!(std::io::stdout(), DisableBracketedPaste);
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    changes: watch::Receiver<u64>,
    mut first_frame: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut events = EventStream::new();
    let (saved_tx, mut saved_rx) = mpsc::unbounded_channel::<Msg>();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut changes = Some(changes);
    loop {
        let drawn = std::time::Instant::now();
        terminal.draw(|frame| view::render(frame, app))?;
        if drawn.elapsed() > SLOW {
            tracing::warn!("slow frame: {:?}", drawn.elapsed());
        }
        if let Some(tx) = first_frame.take() {
            let _ = tx.send(());
        }
        let msg = tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => Msg::Key(key),
                Some(Ok(Event::Paste(text))) => Msg::Paste(text),
                Some(Ok(Event::Resize(w, h))) => Msg::Resize(w, h),
                Some(Ok(_)) => continue,
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
        };
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
