//! `update`: one message in, the state changed, and the effects the loop must run (saving,
//! flushing, quitting) handed back — no terminal, socket or disk here.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ropey::Rope;

use super::app::{App, Mode, STATUS_TTL};
use super::keys::{Action, Motion, action_for};
use super::text;
use crate::client::ClientState;
use crate::protocol::Role;
use crate::sync::Edit;

#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    /// Bracketed paste from the terminal.
    Paste(String),
    /// The session changed (remote edits, members, connection).
    Remote,
    Resize(u16, u16),
    Saved {
        generation: u64,
        result: Result<(PathBuf, crate::fsutil::Stamp), crate::fsutil::SaveError>,
    },
    Tick,
    /// Nothing is waiting for the editor: time for the work a key's frame did not wait for
    /// (parsing the lines typed into, [`super::highlight::Highlighter::settle`]). The loop
    /// sends it only while there is some ([`App::idle_work`]).
    Idle,
    /// The crash-recovery copy could not be written (a full disk, a directory we may not
    /// write in): unsaved changes are not safe from a crash, and the user should know.
    RecoveryFailed(String),
    /// A look at the file ([`Effect::CheckDisk`]): its stamp now (`None`: gone), and whether
    /// it holds the text the look was given (a `touch`, a formatter that changed nothing).
    DiskChecked {
        epoch: u64,
        stamp: Option<crate::fsutil::Stamp>,
        same_text: bool,
    },
    /// The file read again ([`Effect::Reload`]): its text and stamp, or why not.
    Reloaded {
        epoch: u64,
        result: Result<(String, crate::fsutil::Stamp), String>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write `text` to `path` atomically; answer with [`Msg::Saved`]. The text is a snapshot
    /// of the document's rope: taken in constant time, so a save never holds up the editor
    /// for a copy of the whole text.
    Save {
        path: PathBuf,
        text: ropey::Rope,
        generation: u64,
        /// The file as last seen: if it no longer matches, someone else wrote it.
        expect: Option<crate::fsutil::Stamp>,
        force: bool,
    },
    /// Write the crash-recovery copy of unsaved text (a snapshot, as for [`Effect::Save`]).
    WriteRecovery {
        path: PathBuf,
        text: ropey::Rope,
    },
    /// The text is saved (or deliberately discarded): the recovery copy goes.
    RemoveRecovery {
        path: PathBuf,
    },
    /// Look at the file (off the editor's thread): answer with [`Msg::DiskChecked`]. If it
    /// is not `expect` and `text` is given, its text is compared with that.
    CheckDisk {
        path: PathBuf,
        epoch: u64,
        expect: crate::fsutil::Stamp,
        text: Option<ropey::Rope>,
        /// What an earlier look found and said ([`App::disk_changed`]): not news again.
        said: Option<Option<crate::fsutil::Stamp>>,
    },
    /// Read the file again: answer with [`Msg::Reloaded`].
    Reload {
        path: PathBuf,
        epoch: u64,
    },
    /// Send pending edits and presence now.
    Flush,
    Quit,
}

pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    let mut effects = Vec::new();
    if !matches!(msg, Msg::Remote) {
        let session = app.session.clone();
        take_remote_edits(app, &mut session.lock());
    }
    match msg {
        Msg::Key(key) => {
            if app.mode == Mode::Normal {
                let action = action_for(key);
                apply(app, action, &mut effects);
            } else {
                prompt_key(app, key, &mut effects);
            }
        }
        Msg::Paste(pasted) => match &mut app.mode {
            Mode::Find { .. } | Mode::GotoLine { .. } | Mode::Chat { .. } => {
                let first = pasted.lines().next().unwrap_or("").to_string();
                for c in first.chars() {
                    prompt_key(
                        app,
                        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE),
                        &mut effects,
                    );
                }
            }
            _ => {
                let normalized = pasted.replace("\r\n", "\n").replace('\r', "\n");
                let text = normalized.replace('\n', app.line_ending);
                apply(app, Action::Insert(text), &mut effects);
            }
        },
        Msg::Remote => remote(app),
        Msg::Resize(..) => {}
        Msg::Saved { generation, result } => {
            app.saving = false;
            match result {
                Ok((path, stamp)) => {
                    // The file itself (not a copy written beside it, or the unsent text).
                    if app.path.as_ref() == Some(&path) {
                        app.disk = Some(stamp);
                        app.disk_changed = None;
                    }
                    app.disk_epoch += 1;
                    if generation == app.change_gen {
                        app.dirty = false;
                    }
                    app.say(format!("saved {}", path.display()));
                    if app.quit {
                        effects.push(Effect::Quit);
                    }
                }
                Err(crate::fsutil::SaveError::ChangedOnDisk(_)) => {
                    app.mode = Mode::ConfirmOverwrite;
                }
                Err(e) => {
                    app.quit = false;
                    app.kept = None;
                    app.say(format!("save failed: {e}"));
                }
            }
        }
        Msg::DiskChecked {
            epoch,
            stamp,
            same_text,
        } => disk_checked(app, epoch, stamp, same_text),
        Msg::Reloaded { epoch, result } => reloaded(app, epoch, result),
        Msg::RecoveryFailed(why) => {
            app.say(format!(
                "cannot keep a recovery copy ({why}): unsaved changes would be lost in a crash; save them"
            ));
        }
        Msg::Idle => {
            let session = app.session.clone();
            let st = session.lock();
            app.highlighter.settle(st.doc.rope());
        }
        Msg::Tick => {
            if app
                .status
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > STATUS_TTL)
            {
                app.status = None;
            }
            follow(app);
            recovery(app, &mut effects);
            check_disk(app, &mut effects);
        }
    }
    effects
}

/// Once a second, a look at the file (off the editor's thread): changed by someone else since
/// we read or wrote it, it is said on the status line, and Ctrl-R loads it.
fn check_disk(app: &App, effects: &mut Vec<Effect>) {
    let (Some(path), Some(expect)) = (&app.path, app.disk) else {
        return;
    };
    if app.role != Role::Writer || app.saving {
        return;
    }
    effects.push(Effect::CheckDisk {
        path: path.clone(),
        epoch: app.disk_epoch,
        expect,
        // Without unsaved changes, a file whose text is the same is not news.
        text: (!app.dirty).then(|| app.file_text()),
        said: app.disk_changed,
    });
}

fn disk_checked(app: &mut App, epoch: u64, stamp: Option<crate::fsutil::Stamp>, same_text: bool) {
    let Some(known) = app.disk else {
        return;
    };
    // Begun before our own last read or write of the file: it may have seen it before that.
    if epoch != app.disk_epoch || app.saving {
        return;
    }
    match stamp {
        Some(now) if now == known => app.disk_changed = None,
        Some(now) if same_text => {
            app.disk = Some(now);
            app.disk_changed = None;
        }
        now if app.disk_changed != Some(now) => {
            app.disk_changed = Some(now);
            let name = app
                .path
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            app.say(match now {
                None => format!("{name} is gone from disk: Ctrl-S writes it again"),
                Some(_) if app.dirty => format!(
                    "{name} changed on disk: Ctrl-R loads it (the room's unsaved edits go), Ctrl-S asks before replacing it"
                ),
                Some(_) => format!("{name} changed on disk: Ctrl-R loads it into the room"),
            });
        }
        _ => {}
    }
}

/// [`Effect::CheckDisk`], run off the editor's thread: the message to send, if the file is
/// not as we know it (`expect`) nor as an earlier look found and said (`said`). `text`: the
/// text without unsaved changes, to tell a file rewritten with the same text from a change.
pub fn look_at_file(
    path: &std::path::Path,
    epoch: u64,
    expect: crate::fsutil::Stamp,
    text: Option<Rope>,
    said: Option<Option<crate::fsutil::Stamp>>,
) -> Option<Msg> {
    let stamp = crate::fsutil::stamp(path);
    if said == Some(stamp) || (stamp == Some(expect) && said.is_none()) {
        return None;
    }
    let same_text = stamp.is_some_and(|s| s != expect)
        && text.is_some_and(|text| {
            std::fs::read(path).is_ok_and(|bytes| {
                bytes.len() == text.len_bytes()
                    && text
                        .chunks()
                        .scan(0, |at, chunk| {
                            let from = *at;
                            *at += chunk.len();
                            Some(bytes.get(from..*at) == Some(chunk.as_bytes()))
                        })
                        .all(|same| same)
            })
        });
    Some(Msg::DiskChecked {
        epoch,
        stamp,
        same_text,
    })
}

/// [`Effect::Reload`], run off the editor's thread.
pub fn read_file_again(path: &std::path::Path, epoch: u64) -> Msg {
    let result = crate::fsutil::load_text(path)
        .map_err(|e| format!("{e:#}"))
        .and_then(|text| {
            crate::fsutil::stamp(path)
                .map(|stamp| (text, stamp))
                .ok_or_else(|| format!("{} is gone", path.display()))
        });
    Msg::Reloaded { epoch, result }
}

/// Ctrl-R: the file read again, asking first when that would replace unsaved edits.
fn reload(app: &mut App, effects: &mut Vec<Effect>, confirmed: bool) {
    let Some(path) = app.path.clone() else {
        app.say("no file to reload: this member joined without --file");
        return;
    };
    if app.role != Role::Writer {
        app.say("read-only: you joined with a view code");
        return;
    }
    if app.dirty && !confirmed {
        app.mode = Mode::ConfirmReload;
        return;
    }
    effects.push(Effect::Reload {
        path,
        epoch: app.disk_epoch,
    });
}

/// The file's text, read again, becomes the room's: one edit from the first char that differs
/// to the last (so the cursors elsewhere stay, and teammates see only what changed).
fn reloaded(app: &mut App, epoch: u64, result: Result<(String, crate::fsutil::Stamp), String>) {
    if epoch != app.disk_epoch {
        // Our own save came between: the file is what we wrote.
        return;
    }
    let (mut text, stamp) = match result {
        Ok(loaded) => loaded,
        Err(why) => {
            app.say(format!("not reloaded: {why}"));
            return;
        }
    };
    app.bom = text.starts_with('\u{feff}');
    if app.bom {
        text.remove(0);
    }
    let session = app.session.clone();
    let mut st = session.lock();
    let edit = {
        let rope = st.doc.rope();
        let (old_len, new_len) = (rope.len_chars(), text.chars().count());
        let prefix = rope
            .chars()
            .zip(text.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = rope
            .chars_at(old_len)
            .reversed()
            .zip(text.chars().rev())
            .take_while(|(a, b)| a == b)
            .count()
            .min(old_len - prefix)
            .min(new_len - prefix);
        let insert: String = text
            .chars()
            .skip(prefix)
            .take(new_len - prefix - suffix)
            .collect();
        Edit {
            at: prefix,
            delete: old_len - prefix - suffix,
            insert,
        }
    };
    let (cursor, anchor) = (app.cursor, app.anchor);
    if (edit.delete > 0 || !edit.insert.is_empty()) && !app.edit(&mut st, edit) {
        return;
    }
    // Where it was, as far as the text allows.
    let len = st.doc.len_chars();
    app.cursor = cursor.min(len);
    app.anchor = anchor.map(|a| a.min(len));
    drop(st);
    app.disk = Some(stamp);
    app.disk_changed = None;
    app.disk_epoch += 1;
    app.dirty = false;
    let name = app.path.as_ref().map(|p| p.display().to_string());
    app.say(format!("reloaded {} from disk", name.unwrap_or_default()));
}

/// Keeps the crash-recovery copy current: unsaved changes go to a file beside the real one
/// (at most once a second, see [`recovery_due`]), which a clean save removes and the next
/// `host` offers after a crash.
fn recovery(app: &mut App, effects: &mut Vec<Effect>) {
    let Some(path) = app.path.as_ref().filter(|_| app.role == Role::Writer) else {
        return;
    };
    let recovery = crate::fsutil::recovery_path(path);
    if app.dirty && app.recovered_gen != Some(app.change_gen) {
        // (Measured without the copy: ticks that find it not due make none.)
        let bytes = app.session.lock().doc.rope().len_bytes();
        if !recovery_due(bytes, app.recovered_at) {
            return;
        }
        app.recovered_at = Some(std::time::Instant::now());
        app.recovered_gen = Some(app.change_gen);
        let text = app.file_text();
        effects.push(Effect::WriteRecovery {
            path: recovery,
            text,
        });
    } else if !app.dirty && app.recovered_gen.is_some() {
        app.recovered_gen = None;
        effects.push(Effect::RemoveRecovery { path: recovery });
    }
}

/// The recovery copy is the whole text, written on another thread: for a big text, no more
/// often than it would be written at this rate, so it takes a small part of a core (a 100 MB
/// file typed into was written every second, its copy and write beside every key's work on a
/// 2-core machine). Quitting, a hang-up or a signal writes it at once all the same.
const RECOVERY_BYTES_PER_SEC: f64 = 20e6;

/// Whether a recovery copy of `bytes` is due, the last one having been asked for at `last`.
fn recovery_due(bytes: usize, last: Option<std::time::Instant>) -> bool {
    let every = std::time::Duration::from_secs_f64(bytes as f64 / RECOVERY_BYTES_PER_SEC);
    last.is_none_or(|at| at.elapsed() >= every)
}

/// Takes the session's news: others' edits move our cursor and scroll, language may change.
fn remote(app: &mut App) {
    let session = app.session.clone();
    let mut st = session.lock();
    if let Some(lang) = st.doc.meta("language") {
        app.highlighter.set_language(&lang);
    }
    take_remote_edits(app, &mut st);
    drop(st);
    follow(app);
}

/// Moves the cursor, the scroll and the colours through the teammates' edits the session
/// recorded since the last call. Done before anything else touches the text (a key, a paste,
/// the idle parse), so that the recorded edits' positions are still those of the text they
/// were made on; `Msg::Remote` comes later.
fn take_remote_edits(app: &mut App, st: &mut ClientState) {
    let edits = st.take_remote_edits();
    if !edits.is_empty() {
        let top_before = app.top;
        let top_char = st
            .doc
            .rope()
            .line_to_char(top_before.min(st.doc.len_lines().saturating_sub(1)));
        app.transform(&edits, &st.doc);
        // Keep the first visible line in place unless the change was above it.
        let moved: isize = edits
            .iter()
            .filter(|e| e.at < top_char)
            .map(|e| e.insert.chars().filter(|&c| c == '\n').count() as isize)
            .sum();
        if moved != 0 {
            app.top = (top_before as isize + moved).max(0) as usize;
            app.clamp(&st.doc);
        }
    }
}

/// In follow mode, the view tracks the followed member's cursor.
fn follow(app: &mut App) {
    let Some(id) = app.follow else { return };
    let session = app.session.clone();
    let st = session.lock();
    let Some(member) = st.members().into_iter().find(|m| m.client_id == id) else {
        app.follow = None;
        app.say("stopped following: they left");
        return;
    };
    if let Some(head) = member
        .cursor
        .as_ref()
        .and_then(|c| st.resolve_position(&c.head))
    {
        let line = st.doc.rope().char_to_line(head);
        app.center_on(line);
    }
}

fn publish_cursor(app: &App, st: &mut ClientState) {
    st.set_cursor(app.anchor.unwrap_or(app.cursor), app.cursor);
}

fn apply(app: &mut App, action: Action, effects: &mut Vec<Effect>) {
    if action.edits() && app.role == Role::Viewer {
        app.say("read-only: you joined with a view code");
        return;
    }
    let session = app.session.clone();
    let mut st = session.lock();
    match action {
        Action::Move(motion, select) => {
            if app.follow.take().is_some() {
                app.say("stopped following");
            }
            st.doc.undo_boundary();
            if !select && let Some((start, end)) = app.selection() {
                // A plain Left/Right collapses the selection to that side.
                app.anchor = None;
                match motion {
                    Motion::Left => {
                        app.cursor = start;
                        finish_move(app, &mut st);
                        return;
                    }
                    Motion::Right => {
                        app.cursor = end;
                        finish_move(app, &mut st);
                        return;
                    }
                    _ => {}
                }
            }
            if select {
                app.anchor.get_or_insert(app.cursor);
            } else {
                app.anchor = None;
            }
            let vertical = matches!(
                motion,
                Motion::Up | Motion::Down | Motion::PageUp | Motion::PageDown
            );
            // The cursor's display column is worked out once per key (`App::cursor_at`).
            let want = app.want_col.unwrap_or_else(|| app.cursor_at(&st.doc).x);
            let rope = st.doc.rope();
            app.cursor = target(rope, app.cursor, motion, want, app.view_height);
            app.want_col = vertical.then_some(want);
            finish_move(app, &mut st);
        }
        Action::Insert(s) => {
            if let Some(why) = st.too_big(s.len()) {
                app.say(why);
                return;
            }
            let edit = replace_selection(app, s);
            app.edit(&mut st, edit);
            finish_move(app, &mut st);
        }
        Action::Newline => {
            let len = st.doc.len_chars();
            let pos = app.selection().map_or(app.cursor, |s| s.0).min(len);
            let at = text::line_at_char(st.doc.rope(), pos, || len);
            let col = pos - at.start;
            let indent = text::indent_of(&at.body, col);
            let blank = |c: char| c == ' ' || c == '\t';
            let edit =
                if app.selection().is_none() && col > 0 && at.body.chars().take(col).all(blank) {
                    // Enter within the indent (on an empty line: Enter pressed twice) leaves the
                    // line above empty, not holding trailing whitespace; the indent goes on to the
                    // new line, and so does the text after the cursor (blanks alone are dropped).
                    let rest = at.body.chars().skip(col);
                    let after = if rest.clone().all(blank) {
                        rest.count()
                    } else {
                        0
                    };
                    Edit {
                        at: at.start,
                        delete: col + after,
                        insert: format!("{}{indent}", app.line_ending),
                    }
                } else {
                    replace_selection(app, format!("{}{indent}", app.line_ending))
                };
            app.edit(&mut st, edit);
            finish_move(app, &mut st);
        }
        Action::Tab => {
            let edit = replace_selection(app, app.indent_unit.clone());
            app.edit(&mut st, edit);
            finish_move(app, &mut st);
        }
        Action::Backspace | Action::Delete => {
            let edit = match app.selection() {
                Some((start, end)) => Some(Edit::delete(start, end - start)),
                None => {
                    let (rope, len) = (st.doc.rope(), st.doc.len_chars());
                    let text::LineAt {
                        line,
                        start,
                        body: line_str,
                    } = text::line_at_char(rope, app.cursor.min(len), || len);
                    let col = app.cursor.min(len) - start;
                    if action == Action::Backspace {
                        if col > 0 {
                            let prev = text::prev_boundary(&line_str, col);
                            Some(Edit::delete(start + prev, col - prev))
                        } else if line > 0 {
                            let eol = text::eol_len(rope.line(line - 1));
                            Some(Edit::delete(start - eol, eol))
                        } else {
                            None
                        }
                    } else if col < line_str.chars().count() {
                        let next = text::next_boundary(&line_str, col);
                        Some(Edit::delete(start + col, next - col))
                    } else {
                        let eol = text::eol_len(rope.line(line));
                        (eol > 0).then(|| Edit::delete(start + col, eol))
                    }
                }
            };
            if let Some(edit) = edit {
                app.edit(&mut st, edit);
            }
            finish_move(app, &mut st);
        }
        Action::SelectAll => {
            app.anchor = Some(0);
            app.cursor = st.doc.len_chars();
            finish_move(app, &mut st);
        }
        Action::Copy | Action::Cut => {
            let Some((start, end)) = app.selection() else {
                app.say("nothing selected");
                return;
            };
            app.clipboard = st.doc.rope().slice(start..end).to_string();
            if action == Action::Cut {
                app.edit(&mut st, Edit::delete(start, end - start));
                finish_move(app, &mut st);
            } else {
                app.say(format!("copied {} chars", end - start));
            }
        }
        Action::Paste => {
            if app.clipboard.is_empty() {
                app.say("the clipboard is empty (copy with Ctrl-C, or paste from your terminal)");
                return;
            }
            if let Some(why) = st.too_big(app.clipboard.len()) {
                app.say(why);
                return;
            }
            let edit = replace_selection(app, app.clipboard.clone());
            app.edit(&mut st, edit);
            finish_move(app, &mut st);
        }
        Action::Undo | Action::Redo => {
            let edits = if action == Action::Undo {
                st.doc.undo()
            } else {
                st.doc.redo()
            };
            match edits.last() {
                None => app.say(if action == Action::Undo {
                    "nothing of yours to undo"
                } else {
                    "nothing to redo"
                }),
                Some(last) => {
                    let line = super::app::first_line_touched(&edits, st.doc.rope());
                    app.highlighter.invalidate_from(line);
                    app.cursor = last.at + last.insert.chars().count();
                    app.anchor = None;
                    app.mark_changed();
                    finish_move(app, &mut st);
                }
            }
        }
        Action::Save => {
            drop(st);
            save(app, effects);
        }
        Action::Reload => {
            drop(st);
            reload(app, effects, false);
        }
        Action::Find => {
            app.mode = Mode::Find {
                query: String::new(),
                origin: app.cursor,
            };
        }
        Action::GotoLine => {
            app.mode = Mode::GotoLine {
                input: String::new(),
            }
        }
        Action::Chat => {
            app.mode = Mode::Chat {
                input: String::new(),
            }
        }
        Action::Help => app.mode = Mode::Help,
        Action::ShowCodes => {
            if app.codes.is_some() {
                app.mode = Mode::Codes;
            } else {
                app.say("only the host has the codes");
            }
        }
        Action::ToggleMembers => app.show_members = !app.show_members,
        Action::FollowNext => {
            let members: Vec<_> = st
                .members()
                .into_iter()
                .filter(|m| m.cursor.is_some())
                .collect();
            let next = match app.follow {
                None => members.first(),
                Some(id) => members.iter().skip_while(|m| m.client_id != id).nth(1),
            };
            match next {
                Some(m) => {
                    app.follow = Some(m.client_id);
                    app.say(format!("following {} (any move stops)", m.name));
                }
                None => {
                    app.follow = None;
                    app.say(if members.is_empty() {
                        "nobody to follow yet (nobody here has shown a cursor)"
                    } else {
                        "stopped following"
                    });
                }
            }
            drop(st);
            follow(app);
        }
        Action::Quit => {
            if app.dirty && app.path.is_some() && app.role == Role::Writer {
                app.mode = Mode::ConfirmQuit;
            } else if app.leaving_costs_in(&st).is_some() {
                app.mode = Mode::ConfirmLeave;
            } else {
                effects.push(Effect::Quit);
            }
        }
        Action::Escape => {
            app.anchor = None;
        }
        Action::None => {}
    }
}

fn finish_move(app: &mut App, st: &mut ClientState) {
    app.clamp(&st.doc);
    app.scroll_to_cursor(&st.doc);
    publish_cursor(app, st);
}

/// The edit that replaces the selection (or inserts at the cursor) with `s`.
fn replace_selection(app: &App, s: String) -> Edit {
    match app.selection() {
        Some((start, end)) => Edit {
            at: start,
            delete: end - start,
            insert: s,
        },
        None => Edit::insert(app.cursor, s),
    }
}

fn target(rope: &Rope, pos: usize, motion: Motion, want_col: usize, page: usize) -> usize {
    let (line, col) = App::line_col(rope, pos);
    let line_str = text::line_text(rope, line);
    let line_start = rope.line_to_char(line);
    let last_line = rope.len_lines().saturating_sub(1);
    let at_col = |l: usize| {
        rope.line_to_char(l) + text::char_at_display_col(&text::line_text(rope, l), want_col)
    };
    match motion {
        Motion::Left if col > 0 => line_start + text::prev_boundary(&line_str, col),
        Motion::Left if line > 0 => rope.line_to_char(line - 1) + text::line_len(rope, line - 1),
        Motion::Left => pos,
        Motion::Right if col < line_str.chars().count() => {
            line_start + text::next_boundary(&line_str, col)
        }
        Motion::Right if line < last_line => rope.line_to_char(line + 1),
        Motion::Right => pos,
        Motion::Up if line > 0 => at_col(line - 1),
        Motion::Up => line_start,
        Motion::Down if line < last_line => at_col(line + 1),
        Motion::Down => line_start + line_str.chars().count(),
        Motion::PageUp => at_col(line.saturating_sub(page.max(1))),
        Motion::PageDown => at_col((line + page.max(1)).min(last_line)),
        Motion::Home => {
            // Smart Home: first non-blank, then column 0.
            let indent = text::indent_of(&line_str, usize::MAX).chars().count();
            if col == indent {
                line_start
            } else {
                line_start + indent
            }
        }
        Motion::End => line_start + line_str.chars().count(),
        Motion::WordLeft => text::prev_word(rope, pos),
        Motion::WordRight => text::next_word(rope, pos),
        Motion::DocStart => 0,
        Motion::DocEnd => rope.len_chars(),
    }
}

fn save(app: &mut App, effects: &mut Vec<Effect>) {
    save_to(app, effects, None, false);
}

/// Saves to `beside` (or the file itself), checking that the file did not change on disk
/// unless `force`.
fn save_to(app: &mut App, effects: &mut Vec<Effect>, beside: Option<PathBuf>, force: bool) {
    if app.role == Role::Viewer {
        app.say("read-only: viewers do not save (copy what you need)");
        return;
    }
    let Some(path) = beside.clone().or_else(|| app.path.clone()) else {
        app.say("no local file to save to (join with --file PATH to keep a copy)");
        return;
    };
    if app.saving {
        return;
    }
    app.saving = true;
    let text = app.file_text();
    effects.push(Effect::Save {
        path,
        text,
        generation: app.change_gen,
        expect: if beside.is_some() { None } else { app.disk },
        force,
    });
}

/// Where the text goes when we quit with edits the relay has not got and no file of our own:
/// `NAME.unsent-SECONDS` in the current directory (NAME: the room's file name).
pub(super) fn unsent_name(app: &App) -> PathBuf {
    let name = app.session.lock().doc.meta("name");
    let name = name
        .as_deref()
        .and_then(|n| std::path::Path::new(n).file_name())
        .map_or_else(|| "pairedit".into(), |n| n.to_string_lossy().into_owned());
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(format!("{name}.unsent-{secs}"))
}

/// Finds `query` at or after char `from`, wrapping around; returns the match start.
pub fn find(rope: &Rope, query: &str, from: usize) -> Option<usize> {
    if query.is_empty() || rope.len_chars() == 0 {
        return None;
    }
    let lines = rope.len_lines();
    let (start_line, _) = App::line_col(rope, from);
    // The start line is looked at twice: first after `from`, last (wrapped) before it.
    for step in 0..=lines {
        let l = (start_line + step) % lines;
        let base = rope.line_to_char(l);
        let line = rope.line(l).to_string();
        for (byte, _) in line.match_indices(query) {
            let at = base + line[..byte].chars().count();
            if step == 0 && at < from {
                continue;
            }
            if step == lines && at >= from {
                break;
            }
            return Some(at);
        }
    }
    None
}

fn prompt_key(app: &mut App, key: KeyEvent, effects: &mut Vec<Effect>) {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let mode = std::mem::replace(&mut app.mode, Mode::Normal);
    app.mode = match mode {
        Mode::Help | Mode::Codes => Mode::Normal,
        Mode::ConfirmOverwrite => match key.code {
            KeyCode::Char('o') => {
                save_to(app, effects, None, true);
                Mode::Normal
            }
            KeyCode::Char('w') => {
                let beside = app.path.as_ref().map(|p| {
                    let mut name = p.file_name().unwrap_or_default().to_os_string();
                    name.push(".pairedit");
                    p.with_file_name(name)
                });
                save_to(app, effects, beside, true);
                Mode::Normal
            }
            _ => {
                app.quit = false;
                app.say("not saved: the file on disk was left as it is");
                Mode::Normal
            }
        },
        Mode::ConfirmReload => match key.code {
            KeyCode::Char('y') => {
                reload(app, effects, true);
                Mode::Normal
            }
            _ => {
                app.say("not reloaded");
                Mode::Normal
            }
        },
        Mode::ConfirmLeave => match key.code {
            KeyCode::Char('y') => {
                if app.unsent() && app.path.is_none() {
                    // No file of ours holds the text: it goes to one here, then we quit.
                    let name = unsent_name(app);
                    app.quit = true;
                    app.kept = Some(name.clone());
                    save_to(app, effects, Some(name), true);
                } else {
                    effects.push(Effect::Quit);
                }
                Mode::Normal
            }
            _ => {
                app.say("not quitting");
                Mode::Normal
            }
        },
        Mode::ConfirmQuit => match key.code {
            KeyCode::Char('y') => {
                app.quit = true;
                save(app, effects);
                Mode::Normal
            }
            KeyCode::Char('n') => {
                // Discarding is a choice: no recovery copy is kept for it.
                app.discarded = true;
                if let Some(path) = &app.path {
                    effects.push(Effect::RemoveRecovery {
                        path: crate::fsutil::recovery_path(path),
                    });
                }
                effects.push(Effect::Quit);
                Mode::Normal
            }
            _ => {
                app.say("not quitting");
                Mode::Normal
            }
        },
        Mode::Find { mut query, origin } => match key.code {
            KeyCode::Esc => {
                app.last_find = query;
                Mode::Normal
            }
            KeyCode::Enter => {
                let from = app.cursor + 1;
                jump_to_match(app, &query, from);
                Mode::Find { query, origin }
            }
            KeyCode::Backspace => {
                query.pop();
                jump_to_match(app, &query, origin);
                Mode::Find { query, origin }
            }
            KeyCode::Char(c) if !ctrl => {
                query.push(c);
                jump_to_match(app, &query, origin);
                Mode::Find { query, origin }
            }
            _ => Mode::Find { query, origin },
        },
        Mode::GotoLine { mut input } => match key.code {
            KeyCode::Esc => Mode::Normal,
            KeyCode::Enter => {
                match input.trim().parse::<usize>() {
                    Ok(n) if n >= 1 => {
                        let session = app.session.clone();
                        let mut st = session.lock();
                        let rope = st.doc.rope();
                        let line = (n - 1).min(rope.len_lines().saturating_sub(1));
                        app.cursor = rope.line_to_char(line);
                        app.anchor = None;
                        app.follow = None;
                        app.center_on(line);
                        finish_move(app, &mut st);
                    }
                    _ => app.say(format!("not a line number: {input:?}")),
                }
                Mode::Normal
            }
            KeyCode::Backspace => {
                input.pop();
                Mode::GotoLine { input }
            }
            KeyCode::Char(c) if c.is_ascii_digit() => {
                input.push(c);
                Mode::GotoLine { input }
            }
            _ => Mode::GotoLine { input },
        },
        Mode::Chat { mut input } => match key.code {
            KeyCode::Esc => Mode::Normal,
            KeyCode::Enter => {
                let line = input.trim();
                if !line.is_empty() {
                    app.session.lock().send_chat(line);
                    effects.push(Effect::Flush);
                }
                Mode::Normal
            }
            KeyCode::Backspace => {
                input.pop();
                Mode::Chat { input }
            }
            KeyCode::Char(c) if !ctrl => {
                input.push(c);
                Mode::Chat { input }
            }
            _ => Mode::Chat { input },
        },
        Mode::Normal => Mode::Normal,
    };
}

fn jump_to_match(app: &mut App, query: &str, from: usize) {
    let session = app.session.clone();
    let mut st = session.lock();
    match find(st.doc.rope(), query, from) {
        Some(at) => {
            app.anchor = Some(at);
            app.cursor = at + query.chars().count();
            let line = st.doc.rope().char_to_line(at);
            app.center_on(line);
            finish_move(app, &mut st);
        }
        None if !query.is_empty() => app.say(format!("not found: {query}")),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::recovery_due;
    use std::time::{Duration, Instant};

    #[test]
    fn a_big_texts_recovery_copy_is_written_less_often() {
        let now = Instant::now();
        assert!(recovery_due(1 << 20, None), "the first is due at once");
        let a_second_ago = now.checked_sub(Duration::from_millis(1100));
        // A small text: every tick (once a second).
        assert!(recovery_due(1 << 20, a_second_ago));
        assert!(recovery_due(10_000_000, a_second_ago));
        // 100 MB: every 5 s.
        assert!(!recovery_due(100_000_000, a_second_ago));
        assert!(recovery_due(
            100_000_000,
            now.checked_sub(Duration::from_secs(5))
        ));
    }
}
