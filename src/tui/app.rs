//! The editor's state (the "model" of the Elm loop) and the operations `update` composes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ropey::Rope;

use super::highlight::Highlighter;
use super::text;
use crate::client::{ClientState, SessionHandle};
use crate::protocol::Role;
use crate::sync::{Edit, SharedDoc};

/// What the bottom line is asking for, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Incremental search; `origin` is where the cursor was when it started.
    Find {
        query: String,
        origin: usize,
    },
    GotoLine {
        input: String,
    },
    Chat {
        input: String,
    },
    Help,
    Codes,
    ConfirmQuit,
    /// Quitting would cost something other than unsaved changes to the file (edits the relay
    /// has not got, teammates on this process's relay): [`App::leaving_costs`].
    ConfirmLeave,
    /// The file changed on disk since it was loaded or saved: overwrite, write beside, cancel.
    ConfirmOverwrite,
    /// Reloading would replace the room's unsaved edits with the file on disk.
    ConfirmReload,
}

/// The two codes a host shares (shown with F2, printed on exit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    pub write: String,
    pub view: String,
}

pub struct App {
    pub session: SessionHandle,
    pub role: Role,
    /// Where Ctrl-S writes; `None` for a member without a local copy.
    pub path: Option<PathBuf>,
    /// The file as we last read or wrote it: a save that finds it different asks first.
    pub disk: Option<crate::fsutil::Stamp>,
    /// What a look at the file found since it was last read or written, when it was not
    /// [`App::disk`]: changed by someone else (`Some`), or gone (`None`). Shown on the status
    /// line until the file is reloaded or saved.
    pub disk_changed: Option<Option<crate::fsutil::Stamp>>,
    /// Counts our reads and writes of the file: a look at it begun before the last one is
    /// stale (it may have seen the file before our own save).
    pub disk_epoch: u64,
    pub codes: Option<Codes>,
    /// Cursor and selection anchor, in chars.
    pub cursor: usize,
    pub anchor: Option<usize>,
    /// Display column kept across vertical moves.
    pub want_col: Option<usize>,
    /// First visible line, and the horizontal scroll in cells.
    pub top: usize,
    pub left: usize,
    /// Size of the text area at the last frame.
    pub view_height: usize,
    pub view_width: usize,
    pub mode: Mode,
    pub status: Option<(String, Instant)>,
    pub clipboard: String,
    /// Client id of the member we follow.
    pub follow: Option<u64>,
    pub show_members: bool,
    /// Text changed since the last save (or load).
    pub dirty: bool,
    /// Bumped on every text change; a save clears `dirty` only if nothing changed meanwhile.
    pub change_gen: u64,
    pub saving: bool,
    /// The change generation last written to the crash-recovery copy.
    pub recovered_gen: Option<u64>,
    /// When the recovery copy was last asked for (see `update::recovery_due`).
    pub recovered_at: Option<std::time::Instant>,
    /// The user chose to quit without saving.
    pub discarded: bool,
    /// Line break for Enter and pastes: the file's own (CRLF files stay CRLF).
    pub line_ending: &'static str,
    pub indent_unit: String,
    pub highlighter: Highlighter,
    /// The file began with a byte order mark (U+FEFF), kept out of the shared text (a cursor
    /// could type before it, and nobody sees it) and written back by every save.
    pub bom: bool,
    /// This process runs the room's relay (a `host` without `--relay`): quitting ends the room
    /// for everyone in it.
    pub hosting: bool,
    /// Where the text went when we quit with edits the relay had not got and no file to save
    /// them to (said on the way out).
    pub kept: Option<PathBuf>,
    pub quit: bool,
    pub last_find: String,
    /// [`App::cursor_at`]'s last answer, with the rope version and cursor it is for.
    cursor_memo: std::cell::Cell<Option<((u64, usize), CursorAt)>>,
}

/// Where our cursor is in the text ([`App::cursor_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorAt {
    pub line: usize,
    /// In chars from the start of the line.
    pub col: usize,
    /// In display columns from the start of the line (tabs expanded, wide characters two).
    pub x: usize,
    /// The line's length in chars, without its line break.
    pub len: usize,
}

impl CursorAt {
    /// Where char position `pos` is in `rope` (at most its length, `len`).
    fn of(rope: &Rope, pos: usize, len: usize) -> CursorAt {
        let at = text::line_at_char(rope, pos, || len);
        let col = pos - at.start;
        CursorAt {
            line: at.line,
            col,
            x: text::display_col(&at.body, col),
            len: at.body.chars().count(),
        }
    }

    /// The position itself, or, inside a line break (between CR and LF), the end of the
    /// line's text before it.
    fn in_text(&self, pos: usize) -> usize {
        pos - self.col.saturating_sub(self.len)
    }
}

/// How long a status message stays.
pub const STATUS_TTL: Duration = Duration::from_secs(5);

impl App {
    pub fn new(session: SessionHandle, path: Option<PathBuf>, highlighter: Highlighter) -> App {
        let (role, line_ending, indent_unit) = {
            let mut st = session.lock();
            st.record_remote_edits(true);
            // Our cursor is somewhere from the start: others can see and follow it before
            // our first move.
            st.set_cursor(0, 0);
            let rope = st.doc.rope();
            (st.role(), detect_line_ending(rope), detect_indent(rope))
        };
        App {
            session,
            role,
            disk: path.as_deref().and_then(crate::fsutil::stamp),
            path,
            codes: None,
            cursor: 0,
            anchor: None,
            want_col: None,
            top: 0,
            left: 0,
            view_height: 20,
            view_width: 80,
            mode: Mode::Normal,
            status: None,
            clipboard: String::new(),
            follow: None,
            show_members: true,
            dirty: false,
            change_gen: 0,
            saving: false,
            disk_changed: None,
            disk_epoch: 0,
            recovered_gen: None,
            recovered_at: None,
            discarded: false,
            line_ending,
            indent_unit,
            highlighter,
            bom: false,
            hosting: false,
            kept: None,
            quit: false,
            last_find: String::new(),
            cursor_memo: std::cell::Cell::new(None),
        }
    }

    pub fn say(&mut self, msg: impl Into<String>) {
        self.status = Some((msg.into(), Instant::now()));
    }

    /// The selection as an ordered char range, if any (and non-empty).
    pub fn selection(&self) -> Option<(usize, usize)> {
        let a = self.anchor?;
        (a != self.cursor).then(|| (a.min(self.cursor), a.max(self.cursor)))
    }

    /// Line and char column of a char position.
    pub fn line_col(rope: &Rope, pos: usize) -> (usize, usize) {
        let pos = pos.min(rope.len_chars());
        let line = rope.char_to_line(pos);
        (line, pos - rope.line_to_char(line))
    }

    /// Our cursor's line and columns in `doc`'s text. Worked out once for each text and
    /// cursor: a key's update scrolls to it, and its frame draws it and says it in the status
    /// line.
    pub fn cursor_at(&self, doc: &SharedDoc) -> CursorAt {
        let key = (doc.version(), self.cursor);
        if let Some((k, at)) = self.cursor_memo.get()
            && k == key
        {
            return at;
        }
        let len = doc.len_chars();
        let at = CursorAt::of(doc.rope(), self.cursor.min(len), len);
        self.cursor_memo.set(Some((key, at)));
        at
    }

    /// Keeps cursor, anchor and scroll in range after the text changed under them.
    pub fn clamp(&mut self, doc: &SharedDoc) {
        let len = doc.len_chars();
        self.cursor = self.cursor.min(len);
        // Worked out for the frame anyway (and kept): where the cursor is on its line.
        self.cursor = self.cursor_at(doc).in_text(self.cursor);
        self.anchor = self.anchor.map(|a| a.min(len));
        self.top = self.top.min(doc.len_lines().saturating_sub(1));
        // No sideways scroll where the line fits up to the cursor (it stuck after the
        // screen was narrow and widened again).
        let x = self.cursor_at(doc).x;
        if self.left > 0 && x < self.view_width {
            self.left = 0;
        }
    }

    /// Scrolls so the cursor is on screen.
    pub fn scroll_to_cursor(&mut self, doc: &SharedDoc) {
        let CursorAt { line, x, .. } = self.cursor_at(doc);
        let h = self.view_height.max(1);
        if line < self.top {
            self.top = line;
        } else if line >= self.top + h {
            self.top = line + 1 - h;
        }
        let w = self.view_width.max(1);
        if x < self.left {
            self.left = x;
        } else if x >= self.left + w {
            self.left = x + 1 - w;
        }
    }

    /// Centres line `line` on screen (follow mode, go to line, find).
    pub fn center_on(&mut self, line: usize) {
        let h = self.view_height.max(1);
        if line < self.top || line >= self.top + h {
            self.top = line.saturating_sub(h / 2);
        }
    }

    /// Applies a local edit through the session (rope + CRDT at once), moving the cursor after
    /// the inserted text. Refused for viewers.
    pub fn edit(&mut self, st: &mut ClientState, edit: Edit) -> bool {
        if self.role == Role::Viewer {
            self.say("read-only: you joined with a view code");
            return false;
        }
        let inserted = edit.insert.chars().count();
        let at = edit.at;
        // Within one line, and no line break typed: only that line's colours can change (and
        // what follows it, which the highlighter checks).
        let (lines_before, line, in_one_line) = {
            let (rope, len) = (st.doc.rope(), st.doc.len_chars());
            let line = |c: usize| text::line_of_char(rope, c.min(len));
            let first = line(at);
            (
                st.doc.len_lines(),
                first,
                (edit.delete == 0 || first == line(at + edit.delete))
                    && !text::has_line_break(&edit.insert),
            )
        };
        match st.doc.apply_local(&edit) {
            Ok(()) => {
                st.touch();
                let rope = st.doc.rope();
                if in_one_line && st.doc.len_lines() == lines_before {
                    // The text before `at` is the same and so is the number of lines: `at`
                    // is on the line it was on (a CR and LF meeting or parting at `at`
                    // would have changed the count).
                    self.highlighter.line_changed(rope, line);
                } else {
                    let after = rope.char_to_line(at.min(st.doc.len_chars()));
                    self.highlighter.invalidate_from(line.min(after));
                }
                self.cursor = at + inserted;
                self.anchor = None;
                self.want_col = None;
                self.mark_changed();
                true
            }
            Err(e) => {
                self.say(format!("edit refused: {e}"));
                false
            }
        }
    }

    /// Whether there is work for when no key is waiting ([`super::update::Msg::Idle`]).
    /// What quitting now would cost besides unsaved changes to the file, in words for the
    /// prompt that asks first: edits the relay has not got (offline), teammates connected to
    /// the relay this process runs. `None`: nothing.
    pub fn leaving_costs(&self) -> Option<String> {
        self.leaving_costs_in(&self.session.lock())
    }

    /// [`App::leaving_costs`] with the session already locked.
    pub fn leaving_costs_in(&self, st: &ClientState) -> Option<String> {
        let mut costs = Vec::new();
        if self.unsent_in(st) {
            let queued = st.queued_updates();
            costs.push(format!(
                "{queued} edit{} not on the relay yet",
                if queued == 1 { " is" } else { "s are" }
            ));
        }
        let others = st.members().len();
        if self.hosting && others > 0 {
            costs.push(format!(
                "{others} other{} here will be disconnected (this room's relay runs here)",
                if others == 1 { "" } else { "s" }
            ));
        }
        (!costs.is_empty()).then(|| costs.join("; "))
    }

    /// Edits of ours the relay has not got, and cannot get now (nothing is lost online: they
    /// go out as we leave).
    pub fn unsent(&self) -> bool {
        self.unsent_in(&self.session.lock())
    }

    /// [`App::unsent`] with the session already locked.
    pub fn unsent_in(&self, st: &ClientState) -> bool {
        self.role == Role::Writer
            && st.queued_updates() > 0
            && !matches!(st.connection, crate::client::Connection::Connected)
    }

    /// The text as the file holds it: a snapshot of the document's rope (constant time), with
    /// the byte order mark the file had in front.
    pub fn file_text(&self) -> Rope {
        let mut text = self.session.lock().doc.rope().clone();
        if self.bom {
            text.insert_char(0, '\u{feff}');
        }
        text
    }

    pub fn idle_work(&self) -> bool {
        self.highlighter.unsettled()
    }

    pub fn mark_changed(&mut self) {
        self.dirty = true;
        self.change_gen += 1;
    }

    /// Moves our positions through text changes made by others, `edits` in order (each on the
    /// text the ones before it left). Where every edit only inserted text without a line break
    /// (the teammate typing), each line typed into (where the later edits moved it) is patched
    /// and parsed as our own typing is
    /// ([`Highlighter::line_changed`](super::highlight::Highlighter::line_changed)); otherwise
    /// the colours are worked out again from the first line touched.
    pub fn transform(&mut self, edits: &[Edit], doc: &SharedDoc) {
        let (rope, len) = (doc.rope(), doc.len_chars());
        for e in edits {
            self.cursor = shift(self.cursor, e);
            self.anchor = self.anchor.map(|a| shift(a, e));
        }
        if edits.is_empty() {
            self.clamp(doc);
            return;
        }
        // The teammate typing: a few small insertions, no line break in them.
        let typing = edits.len() <= MAX_PATCHED_EDITS
            && edits.iter().map(|e| e.insert.len()).sum::<usize>() <= MAX_PATCHED_BYTES
            && edits
                .iter()
                .all(|e| e.delete == 0 && !text::has_line_break(&e.insert));
        // The line each edit's text ends up on once the edits after it are made.
        let mut lines: Vec<usize> = if typing {
            edits
                .iter()
                .enumerate()
                .map(|(i, e)| rope.char_to_line(edits[i + 1..].iter().fold(e.at, shift).min(len)))
                .collect()
        } else {
            Vec::new()
        };
        lines.sort_unstable();
        lines.dedup();
        // Text put between a CR and its LF parts them into two line breaks: a new line, which
        // starts with that text after a line that ends in a lone CR. Such a line (rare: old Mac
        // files) is not trusted.
        let after_lone_cr = |line: usize| {
            line > 0 && {
                let prev = rope.line(line - 1);
                let n = prev.len_chars();
                n > 0 && prev.char(n - 1) == '\r'
            }
        };
        if !lines.is_empty() && !lines.iter().any(|&l| after_lone_cr(l)) {
            for line in lines {
                self.highlighter.line_changed(rope, line);
            }
        } else {
            self.highlighter
                .invalidate_from(first_line_touched(edits, rope));
        }
        self.mark_changed();
        self.clamp(doc);
    }
}

/// More edits than this in one batch, or more text than this in them, are not followed line
/// by line (each is moved through all those after it): the colours are worked out again from
/// the first line touched.
const MAX_PATCHED_EDITS: usize = 64;
const MAX_PATCHED_BYTES: usize = 64 * 1024;

/// The first line `edits` (in order, each on the text the ones before it left) touched, in
/// the text after them all: an edit's `at` may have moved since, but only through an edit
/// before it, whose own line is then the first.
pub fn first_line_touched(edits: &[Edit], rope: &Rope) -> usize {
    let len = rope.len_chars();
    edits
        .iter()
        .map(|e| rope.char_to_line(e.at.min(len)))
        .min()
        .unwrap_or(0)
}

/// Where position `p` ends up after `e`: before the edit it stays, after it shifts, inside a
/// deleted range it moves to the edit's start.
fn shift(p: usize, e: &Edit) -> usize {
    let ins = e.insert.chars().count();
    if p <= e.at {
        p
    } else if p >= e.at + e.delete {
        p + ins - e.delete
    } else {
        e.at
    }
}

/// The file's line break: CRLF if its first line break is one.
pub fn detect_line_ending(rope: &Rope) -> &'static str {
    if rope.len_lines() > 1 && text::eol_len(rope.line(0)) == 2 {
        "\r\n"
    } else {
        "\n"
    }
}

/// Indent with tabs if more lines start with a tab than with spaces (first 1,000 lines).
pub fn detect_indent(rope: &Rope) -> String {
    let (mut tabs, mut spaces) = (0, 0);
    for line in rope.lines().take(1000) {
        match line.chars().next() {
            Some('\t') => tabs += 1,
            Some(' ') => spaces += 1,
            _ => {}
        }
    }
    if tabs > spaces {
        "\t".to_string()
    } else {
        " ".repeat(text::TAB_WIDTH)
    }
}

#[cfg(test)]
mod clamp_tests {
    use super::*;

    /// What `clamp` did with line queries: a cursor past its line's last char (inside the
    /// line break) goes back to that char.
    fn old(rope: &Rope, cursor: usize) -> usize {
        let cursor = cursor.min(rope.len_chars());
        let (line, col) = App::line_col(rope, cursor);
        let max = text::line_len(rope, line);
        if col > max {
            rope.line_to_char(line) + max
        } else {
            cursor
        }
    }
    /// The cheaper `clamp` (helper-11's test) gives what the line queries gave, for texts of
    /// every line break ropey knows.
    #[test]
    fn clamp_same_for_every_break() {
        let pieces = [
            "a", "\n", "\r", "\r\n", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}", "é",
        ];
        let mut seed = 1u64;
        for _ in 0..20000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 7) as usize;
            let mut x = seed;
            for _ in 0..n {
                s.push_str(pieces[(x % 10) as usize]);
                x /= 10;
            }
            let rope = Rope::from_str(&s);
            for c in 0..=rope.len_chars() + 1 {
                let pos = c.min(rope.len_chars());
                let new = CursorAt::of(&rope, pos, rope.len_chars()).in_text(pos);
                assert_eq!(old(&rope, c), new, "{s:?} at {c}");
            }
        }
    }
}
