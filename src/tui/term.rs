//! The terminal the editor draws on: ratatui's buffers and crossterm's escape sequences, put
//! together here rather than by `ratatui::Terminal` so that a keystroke's frame costs little
//! more than the cells that changed.
//!
//! What differs from `ratatui::init()`'s terminal, and why (`bench highlight` times it):
//! - **The size is known, not asked for.** A full-screen ratatui terminal asks crossterm for
//!   the size before every frame, which opens `/dev/tty`, reads it with an ioctl and closes it
//!   again: three system calls per key. Here the size is the one the terminal had at start,
//!   changed when crossterm reports a resize ([`Screen::resize`]), with a check once a second
//!   ([`Screen::check_size`]) in case a report never came.
//! - **Unchanged rows are skipped at once.** ratatui's diff looks at every cell and measures
//!   each symbol's width on the way, even where nothing changed: half of a frame's time when
//!   one key changes two rows of a 120×50 screen. Here a row a frame keeps ([`Canvas::begin`])
//!   is not looked at, a row of plain cells (one cell wide, as nearly all are) is compared
//!   cell by cell in place, and only the rest go through ratatui's own diff
//!   ([`Buffer::diff`]), so wide characters are handled exactly as ratatui does.
//! - **Cells are written without `fmt`.** Their escape sequences are the bytes ratatui's
//!   `CrosstermBackend` writes (a test holds them to it), put straight into the frame.
//! - **Text that moved is scrolled by the terminal.** When the text scrolls, or a line goes
//!   in or out above other lines, most rows show what a row above or below them showed. The
//!   terminal is told to scroll those rows (a scroll region, then DL/IL) and only the rows
//!   that are new are written ([`Canvas::scrollable`]): a line scrolled into view costs about
//!   700 bytes on a 120×40 screen, where drawing every row cost 12 KB.
//! - **A frame leaves in one `write`.** ratatui flushes after the cells, again after showing
//!   the cursor and again after moving it: three writes, so the terminal draws the frame in
//!   pieces. Here all of it is collected and written at once, and the cursor is shown or
//!   hidden only when that changes.

use std::io::{self, Write};

use crossterm::queue;
use crossterm::style::{
    Attribute, Color as CtColor, SetAttribute, SetBackgroundColor, SetForegroundColor,
    SetUnderlineColor,
};
use ratatui::backend::{Backend, ClearType, CrosstermBackend, IntoCrossterm as _};
use ratatui::buffer::{Buffer, Cell, CellDiffOption, CellWidth as _};
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier};

/// Where a frame is drawn: a buffer covering the screen, and, on a [`Screen`], which of its
/// rows (or parts of rows) need drawing at all.
pub struct Canvas<'a> {
    buf: &'a mut Buffer,
    /// `None`: a plain buffer, every row drawn (the tests' `TestBackend` frames).
    rows: Option<&'a mut Rows>,
    /// Draw every row, whatever its key (the screen is being drawn whole).
    all: bool,
    begun: bool,
}

/// What a row will show, for [`Canvas::begin`]: digests of everything to be drawn in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowKey {
    /// None given: the row is always drawn.
    #[default]
    None,
    /// The whole row.
    Whole(u64),
    /// The cells left of column `at` (a screen x), and the cells from `at` on, each with its
    /// own digest: a part is drawn again only when its digest changed (the status line's
    /// position, at its right end, changes with nearly every key, its left part seldom).
    Split { at: u16, left: u64, right: u64 },
}

impl From<Option<u64>> for RowKey {
    fn from(key: Option<u64>) -> RowKey {
        key.map_or(RowKey::None, RowKey::Whole)
    }
}

impl RowKey {
    /// The columns (screen x, from `x0` to `x1`) of a row last drawn with key `was` that
    /// must be drawn to show what key `self` stands for.
    fn stale(self, was: RowKey, x0: u16, x1: u16) -> (u16, u16) {
        match (was, self) {
            (RowKey::Whole(a), RowKey::Whole(b)) if a == b => (x0, x0),
            (
                RowKey::Split { at, left, right },
                RowKey::Split {
                    at: at2,
                    left: left2,
                    right: right2,
                },
            ) if at == at2 && (x0..=x1).contains(&at) => match (left == left2, right == right2) {
                (true, true) => (x0, x0),
                (true, false) => (at, x1),
                (false, true) => (x0, at),
                (false, false) => (x0, x1),
            },
            _ => (x0, x1),
        }
    }
}

/// What a [`Screen`] knows of its rows between frames.
#[derive(Default)]
struct Rows {
    /// The key each row was drawn with ([`Canvas::begin`]).
    keys: Vec<RowKey>,
    /// The columns (screen x, start and end) of each row that the frame being drawn draws:
    /// an empty range for a row it keeps.
    dirty: Vec<(u16, u16)>,
    /// Rows the frame being drawn said may have moved up or down ([`Canvas::scrollable`]).
    scrollable: Option<Scrollable>,
    /// A shift [`Canvas::begin`] found by the rows' keys (the block said scrollable before it):
    /// the rows it matched are kept, as the rows they were shifted from.
    keyed_shift: Option<(Scrollable, isize)>,
}

/// A block of rows whose content may move up or down between frames as one (the lines of a
/// text scrolled, or a line put in among them): see [`Canvas::scrollable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scrollable {
    /// Rows (from the screen's top), from `top` to `bottom` (not included).
    top: u16,
    bottom: u16,
    /// The columns (from the screen's left) that rows are matched by, from `left` to `right`.
    left: u16,
    right: u16,
}

/// How far the rows of `block` moved by their keys (positive: up), if a shift matches at
/// least [`MIN_ROWS_SPARED`] more rows' keys than leaving them in place: the cheap way, before
/// anything is drawn, so the matched rows are not even drawn. Rows without a key never match.
fn keyed_shift(block: Scrollable, keys: &[RowKey], was: &[RowKey]) -> Option<isize> {
    let (top, bottom) = (block.top as usize, block.bottom as usize);
    if bottom > keys.len() || bottom > was.len() || bottom - top <= MIN_ROWS_SPARED {
        return None;
    }
    shift_of(&keys[top..bottom], &was[top..bottom], |k| {
        *k != RowKey::None
    })
}

/// The shift (positive: up) under which most rows of `now` are what `was` had `by` rows
/// below (rows `counts` rejects never match), if it matches at least [`MIN_ROWS_SPARED`] more
/// rows than leaving them in place; the smaller shift wins a tie.
fn shift_of<T: PartialEq>(now: &[T], was: &[T], counts: impl Fn(&T) -> bool) -> Option<isize> {
    let height = now.len().min(was.len());
    let matching = |by: isize| {
        (0..height)
            .filter(|&i| {
                let j = i as isize + by;
                j >= 0 && (j as usize) < height && counts(&now[i]) && now[i] == was[j as usize]
            })
            .count()
    };
    let in_place = matching(0);
    // A shift by `d` matches at most `height - d` rows, so the shifts are tried nearest first
    // and the search stops where none further can win: one that cannot match enough, or only
    // ties the best so far (the nearer wins a tie). Typing, nearly every row matches in
    // place and it stops at once: trying every shift was O(height²), half a key's CPU.
    let enough = in_place + MIN_ROWS_SPARED;
    let mut best: Option<(isize, usize)> = None;
    for d in 1..height as isize {
        let bound = height - d as usize;
        if bound < enough || best.is_some_and(|(_, n)| bound <= n) {
            break;
        }
        // (Of two shifts as near that match as many, down is taken, as it always was.)
        for by in [d, -d] {
            let n = matching(by);
            if n >= enough && best.is_none_or(|(b, m)| n > m || (n == m && b.abs() == d)) {
                best = Some((by, n));
            }
        }
    }
    best.map(|(by, _)| by)
}

/// What a row the frame did not draw holds, when its block is scrolled ([`Screen::shift`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// What was shown in that row before the scroll (found by the rows' cells, after drawing).
    InPlace,
    /// What the scroll brings into that row (found by the rows' keys, before drawing).
    Shifted,
}

/// A shift must spare at least this many rows more than drawing them in place would: setting
/// the scroll region and scrolling costs about as many bytes as a row of a few cells.
const MIN_ROWS_SPARED: usize = 3;

impl<'a> Canvas<'a> {
    /// A canvas over `buf`, which starts blank, on which every row is drawn.
    pub fn whole(buf: &'a mut Buffer) -> Canvas<'a> {
        Canvas {
            buf,
            rows: None,
            all: true,
            begun: true,
        }
    }

    /// The whole screen.
    pub fn area(&self) -> Rect {
        self.buf.area
    }

    /// Says what each row will show: `keys[i]` for row `i` from the top ([`RowKey`]). A row,
    /// or part of a row, whose key is the one it was last drawn with still shows exactly
    /// that: it is not cleared, [`Canvas::dirty`] leaves it out, and whatever is drawn into
    /// it anyway is ignored. Called once, before anything is drawn; a frame that draws
    /// without calling it draws every row.
    pub fn begin(&mut self, keys: &[RowKey]) {
        if self.begun {
            return;
        }
        self.begun = true;
        let Some(rows) = self.rows.as_deref_mut() else {
            return;
        };
        let area = self.buf.area;
        let width = area.width as usize;
        let height = area.height as usize;
        rows.keys.resize(height, RowKey::None);
        rows.keyed_shift = None;
        if !self.all
            && let Some(block) = rows.scrollable
            && let Some(by) = keyed_shift(block, keys, &rows.keys)
        {
            // The rows as the terminal will show them once scrolled: a row that got the key
            // its content has there is kept (not drawn); the rows scrolled in are blank.
            let (top, bottom) = (block.top as usize, block.bottom as usize);
            let block_keys = &mut rows.keys[top..bottom];
            let n = by.unsigned_abs();
            if by > 0 {
                block_keys.rotate_left(n);
                let len = block_keys.len();
                block_keys[len - n..].fill(RowKey::None);
            } else {
                block_keys.rotate_right(n);
                block_keys[..n].fill(RowKey::None);
            }
            rows.keyed_shift = Some((block, by));
        }
        rows.dirty.clear();
        rows.dirty.resize(height, (area.left(), area.right()));
        for y in 0..height {
            let key = keys.get(y).copied().unwrap_or_default();
            let (x0, x1) = if self.all {
                (area.left(), area.right())
            } else {
                key.stale(rows.keys[y], area.left(), area.right())
            };
            rows.dirty[y] = (x0, x1);
            rows.keys[y] = key;
            let cells = (x0 - area.x) as usize..(x1 - area.x) as usize;
            for cell in &mut self.buf.content[y * width..(y + 1) * width][cells] {
                cell.reset();
            }
        }
    }

    /// Says that in screen rows `rows`, columns `cols` show one thing that may have moved up
    /// or down since the last frame: the lines of a text, scrolled, or with lines put in or
    /// taken out. If most of what they showed is still there, a row or more up or down, the
    /// terminal is told to scroll those rows (its scroll region: whole rows) before they are
    /// drawn, so only what is new is written: a line scrolled into view costs a row, not a
    /// screen. Rows are matched by those columns only; what differs elsewhere (a gutter of
    /// line numbers, a panel beside the text) is drawn as usual. A canvas that is not a
    /// [`Screen`]'s ignores it.
    pub fn scrollable(&mut self, rows: std::ops::Range<u16>, cols: std::ops::Range<u16>) {
        let area = self.buf.area;
        if let Some(r) = self.rows.as_deref_mut() {
            let (top, bottom) = (rows.start.max(area.top()), rows.end.min(area.bottom()));
            let (left, right) = (cols.start.max(area.left()), cols.end.min(area.right()));
            r.scrollable = (top < bottom && left < right).then_some(Scrollable {
                top: top - area.y,
                bottom: bottom - area.y,
                left: left - area.x,
                right: right - area.x,
            });
        }
    }

    /// Whether row `y` (a screen row), or any part of it, is drawn in this frame (after
    /// [`Canvas::begin`]).
    pub fn dirty(&self, y: u16) -> bool {
        let (x0, x1) = self.dirty_cols(y);
        x0 < x1
    }

    /// The columns (screen x, start and end) of row `y` drawn in this frame: the whole row,
    /// a part of it ([`RowKey::Split`]), or none.
    pub fn dirty_cols(&self, y: u16) -> (u16, u16) {
        let area = self.buf.area;
        let whole = (area.left(), area.right());
        if !self.begun {
            return whole;
        }
        self.rows.as_deref().map_or(whole, |rows| {
            rows.dirty
                .get(y.saturating_sub(area.y) as usize)
                .copied()
                .unwrap_or(whole)
        })
    }

    /// The buffer to draw into.
    pub fn buf(&mut self) -> &mut Buffer {
        self.begin(&[]);
        self.buf
    }
}

/// The editor's terminal: see the module documentation.
pub struct Screen {
    /// What the terminal shows.
    shown: Buffer,
    /// The frame being drawn. Rows a frame keeps ([`Canvas::begin`]) hold stale cells here.
    next: Buffer,
    rows: Rows,
    /// The cursor as the terminal shows it: `None` before the first frame.
    cursor: Option<Option<Position>>,
    /// Clear the terminal before the next frame (at start and after a resize).
    clear: bool,
    /// The escape sequences of the frame being sent.
    pending: Vec<u8>,
    /// A changed row that is not plain, as shown and as drawn, for ratatui's diff (kept to
    /// save allocations).
    pair: (Buffer, Buffer),
}

impl Screen {
    /// Takes the terminal over: raw mode, the alternate screen, and ratatui's panic hook that
    /// gives the terminal back ([`ratatui::restore`] does it on the way out).
    pub fn init() -> io::Result<Screen> {
        // ratatui's own set-up, for the modes and the hook; its terminal is not used.
        drop(ratatui::try_init()?);
        match crossterm::terminal::size() {
            Ok((w, h)) => Ok(Screen::with_size(w, h)),
            Err(e) => {
                let _ = ratatui::try_restore();
                Err(e)
            }
        }
    }

    /// A screen of `w`×`h` cells that has not been drawn yet.
    pub fn with_size(w: u16, h: u16) -> Screen {
        let area = Rect::new(0, 0, w, h);
        Screen {
            shown: Buffer::empty(area),
            next: Buffer::empty(area),
            rows: Rows::default(),
            cursor: None,
            clear: true,
            pending: Vec::new(),
            pair: (Buffer::default(), Buffer::default()),
        }
    }

    /// Draws a frame and writes it to stdout in one piece. `render` draws on the canvas and
    /// says where the cursor goes (`None`: hidden).
    pub fn draw(
        &mut self,
        render: impl FnOnce(&mut Canvas<'_>) -> Option<Position>,
    ) -> io::Result<()> {
        self.draw_to(render, &mut io::stdout().lock())
    }

    /// Draws a frame and writes it to `out` (the benchmark and the tests draw into memory).
    pub fn draw_to(
        &mut self,
        render: impl FnOnce(&mut Canvas<'_>) -> Option<Position>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        self.rows.scrollable = None;
        let cursor = {
            // A screen to be cleared (at start, after a resize or a frame that did not go
            // out) is drawn whole.
            let mut canvas = Canvas {
                buf: &mut self.next,
                rows: Some(&mut self.rows),
                all: self.clear,
                begun: false,
            };
            let cursor = render(&mut canvas);
            canvas.begin(&[]);
            cursor
        };
        self.pending.clear();
        let encoded = self.encode(cursor);
        let sent = encoded.and_then(|()| {
            if self.pending.is_empty() {
                return Ok(());
            }
            out.write_all(&self.pending)?;
            out.flush()
        });
        if sent.is_err() {
            // What the terminal shows is unknown: all of it again next time, cursor too.
            self.clear = true;
            self.cursor = None;
        }
        sent
    }

    /// The escape sequences that turn what is shown into the frame drawn, into
    /// `self.pending`; what is shown is then that frame. The bytes are those ratatui's
    /// `CrosstermBackend` writes for ratatui's diff of each changed row (a test holds them
    /// to it), put together more cheaply: rows of plain cells (one cell wide, drawn as
    /// usual, as nearly every row is) are compared cell by cell in place, and each cell's
    /// position and symbol are written straight into the output, not through `fmt`.
    fn encode(&mut self, cursor: Option<Position>) -> io::Result<()> {
        let mut drawn = false;
        if self.clear {
            CrosstermBackend::new(&mut self.pending).clear_region(ClearType::All)?;
            self.shown.reset();
            self.clear = false;
            drawn = true;
        } else if let Some((block, by)) = self.rows.keyed_shift.take() {
            self.shift(block, by, Kept::Shifted);
            drawn = true;
        } else if let Some(block) = self.rows.scrollable.take()
            && let Some(by) = self.best_shift(block)
        {
            self.shift(block, by, Kept::InPlace);
            drawn = true;
        }
        let width = self.next.area.width as usize;
        if width > 0 {
            let mut pen = Pen::new();
            let mut changed = false;
            for (y, &(x0, x1)) in self.rows.dirty.iter().enumerate() {
                if x0 >= x1 {
                    continue;
                }
                let from = y * width + (x0 - self.next.area.x) as usize;
                let cells = from..from + (x1 - x0) as usize;
                let (was, now) = (
                    &self.shown.content[cells.clone()],
                    &self.next.content[cells.clone()],
                );
                let row = self.next.area.y + y as u16;
                match pen.put_plain(&mut self.pending, x0, row, was, now)? {
                    Some(false) => continue,
                    Some(true) => {}
                    None if same_cells(was, now) => continue,
                    None => {
                        // Wide characters and the like: ratatui's own diff, on copies of
                        // the row (or of the part drawn).
                        let area = Rect::new(x0, row, x1 - x0, 1);
                        let (was_row, now_row) = &mut self.pair;
                        for (buf, cells) in [(&mut *was_row, was), (&mut *now_row, now)] {
                            buf.area = area;
                            buf.content.clear();
                            buf.content.extend_from_slice(cells);
                        }
                        for (x, y, cell) in was_row.diff(now_row) {
                            pen.put(&mut self.pending, x, y, cell)?;
                        }
                    }
                }
                changed = true;
                self.shown.content[cells.clone()].clone_from_slice(&self.next.content[cells]);
            }
            if changed {
                Pen::finish(&mut self.pending)?;
                drawn = true;
            }
        }
        let was = self.cursor.flatten();
        match cursor {
            None if was.is_some() || self.cursor.is_none() => {
                CrosstermBackend::new(&mut self.pending).hide_cursor()?;
            }
            None => {}
            Some(at) => {
                if was.is_none() {
                    CrosstermBackend::new(&mut self.pending).show_cursor()?;
                }
                // Drawing cells moves the terminal's cursor: put it back.
                if drawn || was != Some(at) {
                    move_to(&mut self.pending, at.x, at.y);
                }
            }
        }
        self.cursor = Some(cursor);
        Ok(())
    }

    /// How far the rows of `block` moved (positive: up), if scrolling them spares at least
    /// [`MIN_ROWS_SPARED`] rows' drawing. Rows are matched by a digest of their cells in the
    /// block's columns: as shown, and as this frame has them (a row or part of one the frame
    /// kept is as shown). Looked for only when the frame draws that many rows of the block.
    fn best_shift(&self, block: Scrollable) -> Option<isize> {
        let width = self.next.area.width as usize;
        let (top, bottom) = (block.top as usize, block.bottom as usize);
        let height = bottom.saturating_sub(top);
        if height <= MIN_ROWS_SPARED
            || bottom > self.rows.dirty.len()
            || self.shown.content.len() < bottom * width
            || self.next.content.len() < bottom * width
        {
            return None;
        }
        let left = self.next.area.x;
        let drawn = |y: usize| {
            let (x0, x1) = self.rows.dirty[y];
            ((x0 - left) as usize, (x1 - left) as usize)
        };
        if (top..bottom).filter(|&y| drawn(y).0 < drawn(y).1).count() < MIN_ROWS_SPARED {
            return None;
        }
        let cols = (block.left as usize).min(width)..(block.right as usize).min(width);
        let digest = |y: usize, from_next: bool| {
            let (x0, x1) = if from_next { drawn(y) } else { (0, 0) };
            let mut h = 0u64;
            for x in cols.clone() {
                let buf = if (x0..x1).contains(&x) {
                    &self.next
                } else {
                    &self.shown
                };
                h = cell_digest(h, &buf.content[y * width + x]);
            }
            h
        };
        let was: Vec<u64> = (top..bottom).map(|y| digest(y, false)).collect();
        let now: Vec<u64> = (top..bottom).map(|y| digest(y, true)).collect();
        shift_of(&now, &was, |_| true)
    }

    /// Scrolls the rows of `block` up by `by` rows (down for a negative `by`) on the terminal
    /// and in what is shown, and has the rows of it diffed afterwards: the rows scrolled in
    /// are blank, and what the frame kept of a row is what was shown there before the scroll
    /// ([`Kept::InPlace`]: every row is diffed) or what the scroll brings there
    /// ([`Kept::Shifted`]: a row the frame did not draw at all is not diffed).
    fn shift(&mut self, block: Scrollable, by: isize, kept: Kept) {
        let width = self.next.area.width as usize;
        let (top, bottom) = (block.top as usize, block.bottom as usize);
        let full = (self.next.area.left(), self.next.area.right());
        if kept == Kept::InPlace {
            self.keep_undrawn(top, bottom);
        }
        let rows = &mut self.shown.content[top * width..bottom * width];
        let n = by.unsigned_abs() * width;
        if by > 0 {
            rows.rotate_left(n);
            let len = rows.len();
            rows[len - n..].fill(Cell::EMPTY);
        } else {
            rows.rotate_right(n);
            rows[..n].fill(Cell::EMPTY);
        }
        if kept == Kept::Shifted {
            self.keep_undrawn(top, bottom);
        }
        for y in top..bottom {
            // A row the frame did not draw at all, kept as the scroll brings it, is shown as
            // it is: nothing to compare.
            let (x0, x1) = self.rows.dirty[y];
            if kept == Kept::InPlace || x0 < x1 {
                self.rows.dirty[y] = full;
            }
        }
        // Colours and attributes are the terminal's own between frames ([`Pen::finish`]), so
        // the rows scrolled in are blank in its default colours. Lines deleted (DL) or
        // inserted (IL) at the region's top row, not SU / SD: the same within the region, and
        // the Linux console has no SU / SD. Setting the region puts the cursor at the top
        // left; the cells drawn next say where they go.
        let out = &mut self.pending;
        out.extend_from_slice(b"\x1b[");
        push_number(out, block.top + 1);
        out.push(b';');
        push_number(out, block.bottom);
        out.extend_from_slice(b"r");
        move_to(out, 0, block.top);
        out.extend_from_slice(b"\x1b[");
        push_number(out, by.unsigned_abs() as u16);
        out.extend_from_slice(if by > 0 { b"M" } else { b"L" });
        out.extend_from_slice(b"\x1b[r");
    }

    /// Copies into the frame, for rows `top..bottom`, the cells it did not draw: what is shown
    /// there (the frame kept them), so the rows can be diffed whole.
    fn keep_undrawn(&mut self, top: usize, bottom: usize) {
        let width = self.next.area.width as usize;
        let left = self.next.area.x;
        for y in top..bottom {
            let (x0, x1) = self.rows.dirty[y];
            let row = y * width..(y + 1) * width;
            let (next, shown) = (
                &mut self.next.content[row.clone()],
                &self.shown.content[row],
            );
            if x0 >= x1 {
                next.clone_from_slice(shown);
                continue;
            }
            let (a, b) = ((x0 - left) as usize, (x1 - left) as usize);
            next[..a].clone_from_slice(&shown[..a]);
            next[b..].clone_from_slice(&shown[b..]);
        }
    }

    /// What the terminal shows, as far as this screen has told it.
    pub fn shown(&self) -> &Buffer {
        &self.shown
    }

    /// Where the terminal's cursor is (`None`: hidden, or nothing drawn yet).
    pub fn cursor(&self) -> Option<Position> {
        self.cursor.flatten()
    }

    /// The terminal is now `w`×`h`: the next frame is drawn whole at that size.
    pub fn resize(&mut self, w: u16, h: u16) {
        let area = Rect::new(0, 0, w, h);
        if area != self.next.area {
            self.shown = Buffer::empty(area);
            self.next = Buffer::empty(area);
            self.clear = true;
        }
    }

    /// Asks the terminal for its size and follows it: for a resize crossterm did not report.
    pub fn check_size(&mut self) -> io::Result<()> {
        let (w, h) = crossterm::terminal::size()?;
        self.resize(w, h);
        Ok(())
    }
}

/// `h` with `cell` mixed in: its symbol, colours and attributes (what a row is matched by
/// when looking for one that moved). A digest only picks which rows to scroll; every row is
/// still compared cell by cell before it is written, so a collision costs bytes, never a
/// wrong screen. Several times cheaper than `Cell`'s derived `Hash` (`Color`'s was a seventh
/// of a scrolled frame's time).
fn cell_digest(h: u64, cell: &Cell) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, v: u64| (h.rotate_left(5) ^ v).wrapping_mul(K);
    let symbol = cell.symbol().as_bytes();
    let mut h = match symbol {
        [b] => mix(h, u64::from(*b)),
        _ => symbol
            .chunks(8)
            .fold(mix(h, symbol.len() as u64 | 1 << 40), |h, c| {
                let mut v = [0u8; 8];
                v[..c.len()].copy_from_slice(c);
                mix(h, u64::from_le_bytes(v))
            }),
    };
    let colours = u64::from(colour_code(cell.fg)) | u64::from(colour_code(cell.bg)) << 32;
    h = mix(h, colours);
    mix(
        h,
        u64::from(colour_code(cell.underline_color)) | u64::from(cell.modifier.bits()) << 32,
    )
}

/// A colour as one number, different for different colours.
fn colour_code(c: Color) -> u32 {
    match c {
        Color::Rgb(r, g, b) => 1 << 24 | u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b),
        Color::Indexed(i) => 2 << 24 | u32::from(i),
        Color::Reset => 3 << 24,
        Color::Black => 4 << 24,
        Color::Red => 5 << 24,
        Color::Green => 6 << 24,
        Color::Yellow => 7 << 24,
        Color::Blue => 8 << 24,
        Color::Magenta => 9 << 24,
        Color::Cyan => 10 << 24,
        Color::Gray => 11 << 24,
        Color::DarkGray => 12 << 24,
        Color::LightRed => 13 << 24,
        Color::LightGreen => 14 << 24,
        Color::LightYellow => 15 << 24,
        Color::LightBlue => 16 << 24,
        Color::LightMagenta => 17 << 24,
        Color::LightCyan => 18 << 24,
        Color::White => 19 << 24,
    }
}

/// Whether two rows hold the same cells, as `Cell`'s own equality has it.
fn same_cells(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_cell(a, b))
}

/// `Cell`'s own equality, cheaper: most cells hold one byte, and a string comparison calls
/// `memcmp` for it.
#[allow(deprecated)] // `skip`: ratatui's equality still compares it, so this does too.
fn same_cell(a: &Cell, b: &Cell) -> bool {
    let (sa, sb) = (a.symbol().as_bytes(), b.symbol().as_bytes());
    let symbol = match (sa, sb) {
        ([x], [y]) => x == y,
        _ => sa == sb,
    };
    symbol
        && a.fg == b.fg
        && a.bg == b.bg
        && a.underline_color == b.underline_color
        && a.modifier == b.modifier
        && a.skip == b.skip
        && a.diff_option == b.diff_option
}

/// A cell ratatui's diff treats simply: one cell wide, diffed as usual. Between rows of
/// these, its diff is every cell that is not equal to the one shown.
#[allow(deprecated)] // `skip`: ratatui's diff still honours it.
fn plain(cell: &Cell) -> bool {
    cell.diff_option == CellDiffOption::None
        && !cell.skip
        && (cell.symbol().len() == 1 || cell.symbol().cell_width() == 1)
}

/// Where the terminal's cursor is and how it draws, while a frame's cells are written: what
/// `CrosstermBackend::draw` keeps track of, and writes when it changes.
#[derive(Clone, Copy)]
struct Pen {
    fg: Color,
    bg: Color,
    underline: Color,
    modifier: Modifier,
    /// The cell written last.
    last: Option<(u16, u16)>,
}

impl Pen {
    fn new() -> Pen {
        Pen {
            fg: Color::Reset,
            bg: Color::Reset,
            underline: Color::Reset,
            modifier: Modifier::empty(),
            last: None,
        }
    }

    /// Writes the cells of row `now` (at `(x0, y)`) that are not those of `was`, as ratatui's
    /// diff would, if every cell of both is plain ([`plain`]): `Some(whether any was)`.
    /// `None`, with nothing written, if one is not.
    fn put_plain(
        &mut self,
        out: &mut Vec<u8>,
        x0: u16,
        y: u16,
        was: &[Cell],
        now: &[Cell],
    ) -> io::Result<Option<bool>> {
        let (start, pen) = (out.len(), *self);
        let mut changed = false;
        for (i, (a, b)) in was.iter().zip(now).enumerate() {
            if !plain(a) || !plain(b) {
                out.truncate(start);
                *self = pen;
                return Ok(None);
            }
            if !same_cell(a, b) {
                changed = true;
                self.put(out, x0 + i as u16, y, b)?;
            }
        }
        Ok(Some(changed))
    }

    /// Writes `cell` at `(x, y)`.
    fn put(&mut self, out: &mut Vec<u8>, x: u16, y: u16, cell: &Cell) -> io::Result<()> {
        if !matches!(self.last, Some((px, py)) if x == px + 1 && y == py) {
            move_to(out, x, y);
        }
        self.last = Some((x, y));
        if cell.modifier != self.modifier {
            set_modifier(out, self.modifier, cell.modifier)?;
            self.modifier = cell.modifier;
        }
        if cell.fg != self.fg || cell.bg != self.bg {
            // crossterm's `SetColors`, without `fmt`.
            out.extend_from_slice(b"\x1b[");
            push_color(out, Layer::Fg, cell.fg);
            out.push(b';');
            push_color(out, Layer::Bg, cell.bg);
            out.push(b'm');
            self.fg = cell.fg;
            self.bg = cell.bg;
        }
        if cell.underline_color != self.underline {
            out.extend_from_slice(b"\x1b[");
            push_color(out, Layer::Underline, cell.underline_color);
            out.push(b'm');
            self.underline = cell.underline_color;
        }
        out.extend_from_slice(cell.symbol().as_bytes());
        Ok(())
    }

    /// What ends a frame's cells: colours and attributes back to the terminal's own (the
    /// same bytes every time: worked out once, as crossterm writes them).
    fn finish(out: &mut Vec<u8>) -> io::Result<()> {
        static RESET: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut v = Vec::new();
            // Writing into a Vec cannot fail.
            let _ = queue!(
                v,
                SetForegroundColor(CtColor::Reset),
                SetBackgroundColor(CtColor::Reset),
                SetUnderlineColor(CtColor::Reset),
                SetAttribute(Attribute::Reset),
            );
            v
        });
        out.extend_from_slice(&RESET);
        Ok(())
    }
}

/// Which colour of a cell a [`push_color`] sets.
#[derive(Clone, Copy)]
enum Layer {
    Fg,
    Bg,
    Underline,
}

/// A colour's parameters in an SGR sequence, as crossterm's `Colored` writes them (nothing
/// when `NO_COLOR` is set, as there), without `fmt`.
fn push_color(out: &mut Vec<u8>, layer: Layer, color: Color) {
    use crossterm::style::Colored;
    if Colored::ansi_color_disabled_memoized() {
        return;
    }
    let (reset, set): (&[u8], &[u8]) = match layer {
        Layer::Fg => (b"39", b"38;"),
        Layer::Bg => (b"49", b"48;"),
        Layer::Underline => (b"59", b"58;"),
    };
    let indexed = |out: &mut Vec<u8>, n: u8| {
        out.extend_from_slice(b"5;");
        push_number(out, n.into());
    };
    let color: CtColor = color.into_crossterm();
    if color == CtColor::Reset {
        out.extend_from_slice(reset);
        return;
    }
    out.extend_from_slice(set);
    match color {
        CtColor::Rgb { r, g, b } => {
            out.extend_from_slice(b"2;");
            push_number(out, r.into());
            out.push(b';');
            push_number(out, g.into());
            out.push(b';');
            push_number(out, b.into());
        }
        CtColor::AnsiValue(n) => indexed(out, n),
        CtColor::Black => indexed(out, 0),
        CtColor::DarkRed => indexed(out, 1),
        CtColor::DarkGreen => indexed(out, 2),
        CtColor::DarkYellow => indexed(out, 3),
        CtColor::DarkBlue => indexed(out, 4),
        CtColor::DarkMagenta => indexed(out, 5),
        CtColor::DarkCyan => indexed(out, 6),
        CtColor::Grey => indexed(out, 7),
        CtColor::DarkGrey => indexed(out, 8),
        CtColor::Red => indexed(out, 9),
        CtColor::Green => indexed(out, 10),
        CtColor::Yellow => indexed(out, 11),
        CtColor::Blue => indexed(out, 12),
        CtColor::Magenta => indexed(out, 13),
        CtColor::Cyan => indexed(out, 14),
        CtColor::White => indexed(out, 15),
        CtColor::Reset => {}
    }
}

/// crossterm's `SetAttribute(a)` for the attributes [`set_modifier`] sets, worked out once
/// (crossterm writes it through `fmt`).
fn attribute(a: Attribute) -> &'static [u8] {
    const USED: [Attribute; 16] = [
        Attribute::Bold,
        Attribute::Dim,
        Attribute::Italic,
        Attribute::Underlined,
        Attribute::SlowBlink,
        Attribute::RapidBlink,
        Attribute::Reverse,
        Attribute::Hidden,
        Attribute::CrossedOut,
        Attribute::NormalIntensity,
        Attribute::NoItalic,
        Attribute::NoUnderline,
        Attribute::NoBlink,
        Attribute::NoReverse,
        Attribute::NoHidden,
        Attribute::NotCrossedOut,
    ];
    static BYTES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
        USED.iter()
            .map(|a| {
                let mut v = Vec::new();
                // Writing into a Vec cannot fail.
                let _ = queue!(v, SetAttribute(*a));
                v
            })
            .collect()
    });
    USED.iter()
        .position(|u| *u == a)
        .and_then(|i| BYTES.get(i))
        .map_or(&[], Vec::as_slice)
}

/// crossterm's `MoveTo(x, y)`, without `fmt`.
fn move_to(out: &mut Vec<u8>, x: u16, y: u16) {
    out.extend_from_slice(b"\x1b[");
    push_number(out, y.saturating_add(1));
    out.push(b';');
    push_number(out, x.saturating_add(1));
    out.push(b'H');
}

/// `n` in decimal.
fn push_number(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(decimal(n.into(), &mut [0; 20]));
}

/// `n`'s decimal digits, written at the end of `buf` (the escape sequences and the status
/// line put numbers together without `fmt`).
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The attributes that take the terminal from modifiers `from` to `to`, in the order
/// ratatui's `CrosstermBackend` writes them.
fn set_modifier(out: &mut Vec<u8>, from: Modifier, to: Modifier) -> io::Result<()> {
    let removed = from - to;
    let mut set = |on: bool, a: Attribute| {
        if on {
            out.extend_from_slice(attribute(a));
        }
        Ok::<(), io::Error>(())
    };
    set(removed.contains(Modifier::REVERSED), Attribute::NoReverse)?;
    let intensity = removed.intersects(Modifier::BOLD | Modifier::DIM);
    if intensity {
        // Normal intensity ends both bold and dim: what stays is set again.
        set(true, Attribute::NormalIntensity)?;
        set(to.contains(Modifier::DIM), Attribute::Dim)?;
        set(to.contains(Modifier::BOLD), Attribute::Bold)?;
    }
    set(removed.contains(Modifier::ITALIC), Attribute::NoItalic)?;
    set(
        removed.contains(Modifier::UNDERLINED),
        Attribute::NoUnderline,
    )?;
    set(
        removed.contains(Modifier::CROSSED_OUT),
        Attribute::NotCrossedOut,
    )?;
    set(removed.contains(Modifier::HIDDEN), Attribute::NoHidden)?;
    set(
        removed.intersects(Modifier::SLOW_BLINK | Modifier::RAPID_BLINK),
        Attribute::NoBlink,
    )?;
    let added = to - from;
    set(added.contains(Modifier::REVERSED), Attribute::Reverse)?;
    set(
        added.contains(Modifier::BOLD) && !intensity,
        Attribute::Bold,
    )?;
    set(added.contains(Modifier::ITALIC), Attribute::Italic)?;
    set(added.contains(Modifier::UNDERLINED), Attribute::Underlined)?;
    set(added.contains(Modifier::DIM) && !intensity, Attribute::Dim)?;
    set(added.contains(Modifier::CROSSED_OUT), Attribute::CrossedOut)?;
    set(added.contains(Modifier::HIDDEN), Attribute::Hidden)?;
    set(added.contains(Modifier::SLOW_BLINK), Attribute::SlowBlink)?;
    set(added.contains(Modifier::RAPID_BLINK), Attribute::RapidBlink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::style::{Color, Style};

    /// Draws a frame with `render`; returns what was written for it.
    fn drawn(
        screen: &mut Screen,
        render: impl FnOnce(&mut Canvas<'_>) -> Option<Position>,
    ) -> String {
        let mut out = Vec::new();
        screen
            .draw_to(render, &mut out)
            .expect("drawing into memory");
        String::from_utf8(out).expect("utf8")
    }

    /// Draws `text` from the top left corner, and the cursor; returns what was written.
    fn frame(screen: &mut Screen, text: &str, cursor: Option<(u16, u16)>) -> String {
        drawn(screen, |c| {
            c.buf().set_string(0, 0, text, Style::default());
            cursor.map(|(x, y)| Position::new(x, y))
        })
    }

    /// `shift_of` stops early (nearest shifts first) but finds what trying every shift finds.
    #[test]
    fn the_shift_found_is_the_one_every_shift_tried_would_find() {
        fn every_shift(now: &[u8], was: &[u8]) -> Option<isize> {
            let height = now.len().min(was.len());
            let matching = |by: isize| {
                (0..height)
                    .filter(|&i| {
                        let j = i as isize + by;
                        j >= 0 && (j as usize) < height && now[i] != 0 && now[i] == was[j as usize]
                    })
                    .count()
            };
            let in_place = matching(0);
            let (by, matched) = (1..height as isize)
                .flat_map(|by| [by, -by])
                .map(|by| (by, matching(by)))
                .max_by_key(|&(by, n)| (n, std::cmp::Reverse(by.abs())))?;
            (matched >= in_place + MIN_ROWS_SPARED).then_some(by)
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut found = 0;
        for case in 0..20_000 {
            let height = 1 + next(40) as usize;
            // Few values (0: a row without a key), so that rows match often; half the cases
            // are a scroll of `was` with some rows changed, as screens are.
            let was: Vec<u8> = (0..height).map(|_| next(6) as u8).collect();
            let now: Vec<u8> = if case % 2 == 0 {
                (0..height).map(|_| next(6) as u8).collect()
            } else {
                let by = next(height as u64) as usize;
                let mut now: Vec<u8> = was.iter().cycle().skip(by).take(height).copied().collect();
                for _ in 0..next(4) {
                    let i = next(height as u64) as usize;
                    now[i] = next(6) as u8;
                }
                now
            };
            let want = every_shift(&now, &was);
            found += usize::from(want.is_some());
            assert_eq!(
                shift_of(&now, &was, |&k| k != 0),
                want,
                "{now:?} from {was:?}"
            );
        }
        assert!(found > 1000, "the cases found a shift {found} times");
    }

    #[test]
    fn only_what_changed_is_sent_and_the_cursor_goes_with_it() {
        let mut screen = Screen::with_size(10, 3);
        let first = frame(&mut screen, "abc", Some((3, 0)));
        assert!(first.starts_with("\u{1b}[2J"), "cleared first: {first:?}");
        assert!(first.contains("abc"), "{first:?}");
        assert!(first.contains("\u{1b}[?25h"), "cursor shown: {first:?}");
        assert!(
            first.ends_with("\u{1b}[1;4H"),
            "cursor placed last: {first:?}"
        );
        let second = frame(&mut screen, "abd", Some((3, 0)));
        assert!(second.contains('d') && !second.contains("ab"), "{second:?}");
        assert!(!second.contains("\u{1b}[?25h"), "shown already: {second:?}");
        assert!(second.ends_with("\u{1b}[1;4H"), "{second:?}");
        let third = frame(&mut screen, "abd", None);
        assert_eq!(third, "\u{1b}[?25l", "nothing changed but the cursor");
        assert_eq!(
            frame(&mut screen, "abd", None),
            "",
            "nothing at all changed"
        );
        assert_eq!(
            frame(&mut screen, "abd", Some((1, 1))),
            "\u{1b}[?25h\u{1b}[2;2H"
        );
        assert_eq!(
            frame(&mut screen, "abd", Some((1, 1))),
            "",
            "the cursor stays put"
        );
    }

    /// Draws row 0 as `top` with key `k0` and row 1 as `bottom` with key `k1`.
    fn keyed(screen: &mut Screen, top: &str, k0: u64, bottom: &str, k1: Option<u64>) -> String {
        drawn(screen, |c| {
            c.begin(&[RowKey::Whole(k0), k1.into()]);
            for (y, text) in [(0, top), (1, bottom)] {
                if c.dirty(y) {
                    c.buf().set_string(0, y, text, Style::default());
                }
            }
            None
        })
    }

    #[test]
    fn a_row_drawn_with_the_same_key_is_kept_as_it_is() {
        let mut screen = Screen::with_size(8, 3);
        let first = keyed(&mut screen, "one", 1, "two", Some(2));
        assert!(first.contains("one") && first.contains("two"), "{first:?}");
        // Same keys: nothing is drawn, and what is drawn into a kept row is ignored.
        let out = drawn(&mut screen, |c| {
            c.begin(&[RowKey::Whole(1), RowKey::Whole(2)]);
            assert!(!c.dirty(0) && !c.dirty(1) && c.dirty(2));
            c.buf().set_string(0, 0, "zzz", Style::default());
            None
        });
        assert!(out.is_empty(), "{out:?}");
        // A new key on row 1 only: row 1 is cleared and drawn, row 0 is kept.
        let third = keyed(&mut screen, "one", 1, "2", Some(3));
        assert!(third.contains('2') && !third.contains("one"), "{third:?}");
        assert!(
            third.contains("2  "),
            "the rest of 'two' blanked: {third:?}"
        );
        // A row without a key is drawn every time.
        let fourth = keyed(&mut screen, "one", 1, "four", None);
        assert!(fourth.contains("four"), "{fourth:?}");
        // After a resize every row is drawn, whatever its key.
        screen.resize(8, 2);
        let fifth = keyed(&mut screen, "one", 1, "four", None);
        assert!(fifth.contains("one") && fifth.contains("four"), "{fifth:?}");
    }

    /// Draws one row of `left` then `right` from column `at`, with a split key (`split`) or
    /// none, and says what went to the terminal.
    fn halves(screen: &mut Screen, left: &str, right: &str, at: u16, split: bool) -> String {
        let key = |s: &str| {
            s.bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
        };
        drawn(screen, |c| {
            let row = if split {
                RowKey::Split {
                    at,
                    left: key(left),
                    right: key(right),
                }
            } else {
                RowKey::None
            };
            c.begin(&[row]);
            let (x0, x1) = c.dirty_cols(0);
            let style = Style::default().bg(Color::Blue);
            if x0 < at {
                c.buf().set_stringn(0, 0, left, at as usize, style);
                // Into a part that is kept, drawing is ignored.
                c.buf().set_string(at, 0, "~", style);
            }
            if x1 > at {
                c.buf().set_string(at, 0, right, style);
                if x0 >= at {
                    c.buf().set_string(0, 0, "~~~", style);
                }
            }
            None
        })
    }

    #[test]
    fn a_split_row_draws_only_the_part_that_changed_and_writes_what_a_whole_row_would() {
        let steps = [
            ("left 界", "Col 1"),
            ("left 界", "Col 2"),
            ("left 界", "Col 2"),
            ("left x", "Col 2"),
            ("界 left", "Col 3"),
            ("", "é9"),
        ];
        let (mut split, mut whole) = (Screen::with_size(12, 1), Screen::with_size(12, 1));
        for (i, (left, right)) in steps.into_iter().enumerate() {
            let a = halves(&mut split, left, right, 7, true);
            let b = halves(&mut whole, left, right, 7, false);
            assert_eq!(a, b, "step {i}: the same bytes as a whole row's diff");
            assert_eq!(split.shown(), whole.shown(), "step {i}");
            if i > 0 && (left, right) == steps[i - 1] {
                assert!(a.is_empty(), "nothing changed: {a:?}");
            }
        }
        // Only the changed part is looked at: a change made to the kept part behind the
        // screen's back is not noticed.
        let mut screen = Screen::with_size(12, 1);
        halves(&mut screen, "left", "Col 1", 7, true);
        let out = halves(&mut screen, "left", "Col 2", 7, true);
        assert!(out.contains('2') && !out.contains('~'), "{out:?}");
        // A split that moved draws the whole row.
        let out = halves(&mut screen, "left", "Col 10", 6, true);
        assert!(out.contains("left") || out.contains("Col 10"), "{out:?}");
        assert_eq!(
            screen.shown().content[..12]
                .iter()
                .map(|c| c.symbol())
                .collect::<String>(),
            "left  Col 10"
        );
    }

    #[test]
    fn colours_are_the_bytes_crossterm_writes() {
        use crossterm::style::Colored;
        let mut colors = vec![Color::Reset, Color::Rgb(0, 128, 255), Color::Rgb(7, 0, 99)];
        colors.extend((0..=255).map(Color::Indexed));
        colors.extend([
            Color::Black,
            Color::Red,
            Color::Green,
            Color::Yellow,
            Color::Blue,
            Color::Magenta,
            Color::Cyan,
            Color::Gray,
            Color::DarkGray,
            Color::LightRed,
            Color::LightGreen,
            Color::LightYellow,
            Color::LightBlue,
            Color::LightMagenta,
            Color::LightCyan,
            Color::White,
        ]);
        for c in colors {
            let ct = c.into_crossterm();
            for (layer, want) in [
                (Layer::Fg, Colored::ForegroundColor(ct)),
                (Layer::Bg, Colored::BackgroundColor(ct)),
                (Layer::Underline, Colored::UnderlineColor(ct)),
            ] {
                let mut got = Vec::new();
                push_color(&mut got, layer, c);
                assert_eq!(String::from_utf8(got).unwrap(), want.to_string(), "{c:?}");
            }
        }
    }

    #[test]
    fn rows_are_compared_by_every_attribute() {
        let mut screen = Screen::with_size(4, 2);
        frame(&mut screen, "ab", None);
        let out = drawn(&mut screen, |c| {
            let buf = c.buf();
            buf.set_string(0, 0, "ab", Style::default());
            buf.set_string(0, 1, "ab", Style::default().bg(Color::Red));
            None
        });
        assert!(
            out.contains("ab") && out.contains("\u{1b}[2;1H"),
            "row 2 only: {out:?}"
        );
        assert!(!out.contains("\u{1b}[1;1H"), "row 1 unchanged: {out:?}");
    }

    #[test]
    fn wide_characters_are_diffed_as_ratatui_does() {
        let mut screen = Screen::with_size(6, 1);
        frame(&mut screen, "a界b", None);
        let out = frame(&mut screen, "a世b", None);
        assert!(out.contains('世') && !out.contains('b'), "{out:?}");
        // A wide character replaced by two narrow ones: both cells are written.
        let out = frame(&mut screen, "axyb", None);
        assert!(out.contains("xy"), "{out:?}");
    }

    #[test]
    fn a_resize_clears_and_draws_the_whole_screen_at_the_new_size() {
        let mut screen = Screen::with_size(10, 2);
        frame(&mut screen, "abc", None);
        screen.resize(10, 2);
        assert_eq!(
            frame(&mut screen, "abc", None),
            "",
            "same size: nothing to do"
        );
        screen.resize(6, 3);
        let mut area = Rect::default();
        let out = drawn(&mut screen, |c| {
            area = c.area();
            c.buf().set_string(0, 0, "abc", Style::default());
            None
        });
        assert_eq!(area, Rect::new(0, 0, 6, 3));
        assert!(
            out.starts_with("\u{1b}[2J") && out.contains("abc"),
            "{out:?}"
        );
    }

    /// What `encode` wrote before it wrote cells itself: ratatui's diff of each changed row,
    /// through ratatui's `CrosstermBackend`.
    fn reference(shown: &Buffer, next: &Buffer) -> Vec<u8> {
        let width = next.area.width as usize;
        let mut pairs = Vec::new();
        for y in 0..next.area.height as usize {
            let cells = y * width..(y + 1) * width;
            let (was, now) = (&shown.content[cells.clone()], &next.content[cells]);
            if !same_cells(was, now) {
                let area = Rect::new(0, y as u16, width as u16, 1);
                let row = |cells: &[Cell]| {
                    let mut b = Buffer::empty(area);
                    b.content = cells.to_vec();
                    b
                };
                pairs.push((row(was), row(now)));
            }
        }
        let mut out = Vec::new();
        if !pairs.is_empty() {
            CrosstermBackend::new(&mut out)
                .draw(pairs.iter().flat_map(|(was, now)| was.diff(now)))
                .expect("into memory");
        }
        out
    }

    const PIECES: &[&str] = &[
        "a",
        "hello",
        " ",
        "│",
        "·",
        "漢字",
        "❤\u{FE0F}",
        "👍",
        "e\u{301}",
        "ｱﾞ",
        "x y",
    ];

    fn style(i: usize) -> Style {
        let colors = [
            Color::Reset,
            Color::Black,
            Color::Red,
            Color::LightCyan,
            Color::Rgb(10, 200, 30),
            Color::Indexed(100),
        ];
        let modifiers = [
            Modifier::empty(),
            Modifier::BOLD,
            Modifier::REVERSED,
            Modifier::BOLD | Modifier::DIM,
            Modifier::DIM,
            Modifier::ITALIC | Modifier::UNDERLINED,
            Modifier::CROSSED_OUT | Modifier::SLOW_BLINK,
            Modifier::HIDDEN | Modifier::RAPID_BLINK,
        ];
        Style::default()
            .fg(colors[i % 6])
            .bg(colors[(i / 6) % 6])
            .underline_color(colors[(i / 36) % 6])
            .add_modifier(modifiers[(i / 216) % 8])
    }

    proptest::proptest! {
        /// Frame after frame of random text (wide, combining, emoji with VS16, halfwidth
        /// marks) in random colours and attributes, each a few strokes away from the last:
        /// what is written for each is byte for byte what ratatui's diff and backend write.
        #[test]
        fn frames_are_encoded_as_ratatui_encodes_them(
            first in proptest::collection::vec((0u16..12, 0u16..4, 0..PIECES.len(), 0usize..1728), 0..12),
            steps in proptest::collection::vec(
                (proptest::collection::vec(0usize..12, 0..3), (0u16..12, 0u16..4, 0..PIECES.len(), 0usize..1728)),
                1..8,
            ),
        ) {
            let mut screen = Screen::with_size(12, 4);
            let mut strokes = first;
            let paint = |buf: &mut Buffer, strokes: &[(u16, u16, usize, usize)]| {
                for &(x, y, piece, st) in strokes {
                    buf.set_string(x, y, PIECES[piece], style(st));
                }
            };
            drawn(&mut screen, |c| {
                paint(c.buf(), &strokes);
                None
            });
            for (drop, add) in steps {
                for d in drop {
                    if d < strokes.len() {
                        strokes.remove(d);
                    }
                }
                strokes.push(add);
                let shown = screen.shown().clone();
                let mut next = Buffer::empty(shown.area);
                paint(&mut next, &strokes);
                let want = String::from_utf8(reference(&shown, &next)).expect("utf8");
                let got = drawn(&mut screen, |c| {
                    paint(c.buf(), &strokes);
                    None
                });
                proptest::prop_assert_eq!(got, want);
                proptest::prop_assert_eq!(screen.shown(), &next);
            }
        }
    }

    /// A terminal emulator (`vt100`, which knows scroll regions) fed everything a screen
    /// writes, for checking what a real terminal ends up showing.
    struct Emulator(vt100::Parser);

    impl Emulator {
        fn new(w: u16, h: u16) -> Emulator {
            let rows = std::num::NonZero::new(h).expect("rows");
            let cols = std::num::NonZero::new(w).expect("columns");
            Emulator(vt100::Parser::new(rows, cols, 0))
        }

        /// Each cell as (symbol, fg, bg, bold): blank cells as a space.
        fn cells(&self) -> Vec<(String, vt100::Color, vt100::Color, bool)> {
            let screen = self.0.screen();
            let (h, w) = screen.size();
            let mut out = Vec::new();
            for y in 0..h.get() {
                for x in 0..w.get() {
                    let c = screen.cell(y, x).expect("in the screen");
                    let sym = if c.has_contents() {
                        c.contents().to_string()
                    } else {
                        " ".to_string()
                    };
                    out.push((sym, c.fgcolor(), c.bgcolor(), c.bold()));
                }
            }
            out
        }
    }

    /// `buf`'s cells as [`Emulator::cells`] has them (colours and bold only: what the scroll
    /// tests draw with).
    fn as_emulated(buf: &Buffer) -> Vec<(String, vt100::Color, vt100::Color, bool)> {
        let color = |c: Color| match c {
            Color::Reset => vt100::Color::Default,
            Color::Black => vt100::Color::Idx(0),
            Color::Red => vt100::Color::Idx(1),
            Color::Indexed(i) => vt100::Color::Idx(i),
            Color::Rgb(r, g, b) => vt100::Color::Rgb(r, g, b),
            other => panic!("not used here: {other:?}"),
        };
        buf.content
            .iter()
            .map(|c| {
                (
                    c.symbol().to_string(),
                    color(c.fg),
                    color(c.bg),
                    c.modifier.contains(Modifier::BOLD),
                )
            })
            .collect()
    }

    /// A text view as the editor draws one, small: line numbers, the lines from `top`, a
    /// panel on the right and a status line at the bottom; rows keyed by what they show.
    struct Scene {
        lines: Vec<(String, u8)>,
        top: usize,
        panel: Vec<String>,
        status: String,
        /// Give rows keys (else every row is drawn, as under an overlay).
        keyed: bool,
        /// Say the block is scrollable before `begin` (a shift may be found by the keys).
        scroll_first: bool,
    }

    const GUTTER: u16 = 4;
    const PANEL: u16 = 5;

    impl Scene {
        fn draw(&self, c: &mut Canvas<'_>) {
            let area = c.area();
            let text_rows = area.height - 1;
            let row_style = |tint: u8| {
                let fg = [
                    Color::Reset,
                    Color::Red,
                    Color::Rgb(200, 100, 0),
                    Color::Indexed(33),
                ];
                let bg = [Color::Rgb(20, 20, 30), Color::Black, Color::Indexed(236)];
                let st = Style::default()
                    .fg(fg[tint as usize % 4])
                    .bg(bg[tint as usize / 4 % 3]);
                if tint.is_multiple_of(5) {
                    st.add_modifier(Modifier::BOLD)
                } else {
                    st
                }
            };
            if self.scroll_first {
                c.scrollable(0..text_rows, GUTTER..area.width - PANEL);
            }
            if self.keyed {
                let mut keys = Vec::new();
                for y in 0..text_rows as usize {
                    let line = self.lines.get(self.top + y);
                    let panel = self.panel.get(y);
                    keys.push(RowKey::Whole(hash_of(&(self.top + y, line, panel))));
                }
                keys.push(RowKey::Whole(hash_of(&self.status)));
                c.begin(&keys);
            }
            if !self.scroll_first {
                c.scrollable(0..text_rows, GUTTER..area.width - PANEL);
            }
            for y in 0..text_rows {
                if !c.dirty(y) {
                    continue;
                }
                let bg = Style::default().bg(Color::Rgb(20, 20, 30));
                let buf = c.buf();
                buf.set_style(Rect::new(0, y, area.width, 1), bg);
                let i = self.top + y as usize;
                if let Some((text, tint)) = self.lines.get(i) {
                    buf.set_string(0, y, format!("{:>3}", i + 1), bg.fg(Color::Indexed(8)));
                    buf.set_stringn(
                        GUTTER,
                        y,
                        text,
                        (area.width - GUTTER - PANEL) as usize,
                        row_style(*tint),
                    );
                }
                if let Some(p) = self.panel.get(y as usize) {
                    buf.set_stringn(area.width - PANEL, y, p, PANEL as usize, bg.fg(Color::Red));
                }
            }
            if c.dirty(text_rows) {
                c.buf()
                    .set_string(0, text_rows, &self.status, Style::default());
            }
        }
    }

    fn hash_of(x: &impl std::hash::Hash) -> u64 {
        use std::hash::BuildHasher as _;
        foldhash::fast::FixedState::with_seed(1).hash_one(x)
    }

    /// Draws `scene` on `screen`, feeds what was written to `term`; returns its length after
    /// checking that the terminal, the screen's idea of it, and the scene drawn afresh agree.
    fn show(screen: &mut Screen, term: &mut Emulator, scene: &Scene) -> usize {
        show_bytes(screen, term, scene).len()
    }

    /// [`show`], returning what was written.
    fn show_bytes(screen: &mut Screen, term: &mut Emulator, scene: &Scene) -> Vec<u8> {
        let mut out = Vec::new();
        screen
            .draw_to(
                |c| {
                    scene.draw(c);
                    None
                },
                &mut out,
            )
            .expect("into memory");
        term.0.process(&out);
        let mut fresh = Buffer::empty(screen.shown().area);
        scene.draw(&mut Canvas::whole(&mut fresh));
        assert_eq!(screen.shown(), &fresh, "the screen's idea of the terminal");
        // What a frame does not draw is taken from the last one: it must be what is shown.
        assert_eq!(screen.next, fresh, "the frame the next one is drawn over");
        assert_eq!(
            term.cells(),
            as_emulated(&fresh),
            "the terminal, after {:?}",
            String::from_utf8_lossy(&out)
        );
        out
    }

    fn numbered(n: usize) -> Vec<(String, u8)> {
        (0..n)
            .map(|i| (format!("line {i} {}", "=".repeat(i % 23)), (i % 12) as u8))
            .collect()
    }

    #[test]
    fn scrolled_and_shifted_text_is_moved_by_the_terminal_and_only_the_new_rows_are_written() {
        let (w, h) = (40, 12);
        let mut screen = Screen::with_size(w, h);
        let mut term = Emulator::new(w, h);
        let mut scene = Scene {
            lines: numbered(100),
            top: 0,
            panel: vec!["ann".into(), "bob".into()],
            status: "status".into(),
            keyed: true,
            scroll_first: false,
        };
        let whole = show(&mut screen, &mut term, &scene);
        // Down a line, as the cursor leaving the bottom does: the terminal scrolls up, by
        // deleting the region's top line (the Linux console has no SU).
        scene.top = 1;
        let one = show_bytes(&mut screen, &mut term, &scene);
        assert!(
            one.len() * 4 < whole,
            "a line scrolled in cost {} bytes, the screen {whole}",
            one.len()
        );
        let has = |out: &[u8], seq: &[u8]| out.windows(seq.len()).any(|w| w == seq);
        assert!(has(&one, b"\x1b[1;11r\x1b[1;1H\x1b[1M\x1b[r"), "{one:?}");
        // Up one, and down half a screen.
        scene.top = 0;
        let up = show_bytes(&mut screen, &mut term, &scene);
        assert!(has(&up, b"\x1b[1;1H\x1b[1L\x1b[r"), "{up:?}");
        scene.top = 5;
        show(&mut screen, &mut term, &scene);
        // A line put in and one taken out in the middle: the rows below move, their line
        // numbers change.
        scene.lines.insert(8, ("new".into(), 3));
        let put_in = show(&mut screen, &mut term, &scene);
        assert!(
            put_in * 2 < whole,
            "a line put in cost {put_in} bytes, the screen {whole}"
        );
        scene.lines.remove(6);
        show(&mut screen, &mut term, &scene);
        // Every row drawn (no keys), and a scroll with it.
        scene.keyed = false;
        scene.top = 7;
        show(&mut screen, &mut term, &scene);
        // Found by the keys, before drawing: only the new row is drawn at all.
        scene.keyed = true;
        scene.scroll_first = true;
        scene.top = 8;
        let by_keys = show(&mut screen, &mut term, &scene);
        assert!(
            by_keys * 4 < whole,
            "a line scrolled in cost {by_keys} bytes, the screen {whole}"
        );
        scene.top = 6;
        show(&mut screen, &mut term, &scene);
        scene.scroll_first = false;
        // Past the end of the text: blank rows in the text's colours come in.
        scene.top = 95;
        show(&mut screen, &mut term, &scene);
        scene.top = 92;
        show(&mut screen, &mut term, &scene);
    }

    #[test]
    fn a_canvas_without_a_screen_ignores_scrolling() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 10, 4));
        let mut c = Canvas::whole(&mut buf);
        c.scrollable(0..3, 1..10);
        assert!(c.dirty(0));
    }

    proptest::proptest! {
        /// Random scrolls, lines put in and taken out, edits, panel changes and frames drawn
        /// whole: after every frame the terminal shows exactly what a fresh frame shows.
        #[test]
        fn whatever_moves_the_terminal_shows_the_frame(
            steps in proptest::collection::vec((0u8..6, 0usize..40, 0usize..16), 1..24),
            w in 12u16..40,
            h in 3u16..14,
        ) {
            let mut screen = Screen::with_size(w, h);
            let mut term = Emulator::new(w, h);
            let mut scene = Scene {
                lines: numbered(30),
                top: 0,
                panel: vec!["ann".into()],
                status: "s".into(),
                keyed: true,
                scroll_first: false,
            };
            show(&mut screen, &mut term, &scene);
            for (what, a, b) in steps {
                scene.keyed = true;
                // Either way of finding a shift: by the rows' keys before drawing, or by
                // their cells after.
                scene.scroll_first = (a + b) % 2 == 0;
                match what {
                    0 => scene.top = a.min(scene.lines.len()),
                    1 => scene.lines.insert(a.min(scene.lines.len()), (format!("in {b}"), b as u8)),
                    2 if a < scene.lines.len() => { scene.lines.remove(a); }
                    3 if a < scene.lines.len() => scene.lines[a].0.push_str("xy"),
                    4 => scene.panel = (0..b % 4).map(|i| format!("p{i}{a}")).collect(),
                    _ => { scene.keyed = false; scene.top = b; }
                }
                scene.status = format!("{what} {a} {b}");
                show(&mut screen, &mut term, &scene);
            }
        }
    }

    #[allow(deprecated)]
    fn raw_cell(
        sym: usize,
        fg: usize,
        bg: usize,
        ul: usize,
        m: u16,
        skip: bool,
        opt: usize,
    ) -> Cell {
        const SYMS: &[&str] = &[
            "",
            " ",
            "a",
            "│",
            "漢",
            "❤\u{FE0F}",
            "👍",
            "e\u{301}",
            "ｱﾞ",
            "#\u{FE0F}",
        ];
        let colors = [
            Color::Reset,
            Color::Red,
            Color::Rgb(1, 2, 3),
            Color::Indexed(7),
        ];
        let mut c = Cell::new(SYMS[sym % SYMS.len()]);
        c.fg = colors[fg % 4];
        c.bg = colors[bg % 4];
        c.underline_color = colors[ul % 4];
        c.modifier = Modifier::from_bits_truncate(m);
        c.skip = skip;
        c.diff_option = match opt % 6 {
            0..=2 => CellDiffOption::None,
            3 => CellDiffOption::Skip,
            4 => CellDiffOption::AlwaysUpdate,
            _ => CellDiffOption::ForcedWidth(std::num::NonZeroU16::new(2).unwrap()),
        };
        c
    }

    type RawCell = (usize, usize, usize, usize, u16, bool, usize);

    fn raw_strategy() -> impl proptest::strategy::Strategy<Value = RawCell> {
        use proptest::prelude::*;
        (
            0usize..11,
            0usize..4,
            0usize..4,
            0usize..4,
            any::<u16>(),
            proptest::bool::weighted(0.1),
            0usize..6,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Cells made directly, with what drawing text never makes (helper-11's test): `skip`,
        /// every diff option, every set of modifiers, underline colours, empty symbols, screens
        /// 0 to 5 cells wide. Still byte for byte what ratatui writes. (Not control characters:
        /// ratatui asserts that no cell holds one.)
        #[test]
        fn any_cells_are_encoded_as_ratatui_encodes_them(
            w in 0u16..6, h in 1u16..3,
            frames in proptest::collection::vec(
                proptest::collection::vec((proptest::bool::weighted(0.5), raw_strategy()), 12), 2..6),
        ) {
            let n = (w * h) as usize;
            let mut screen = Screen::with_size(w, h);
            let mut cells: Vec<Cell> = vec![Cell::EMPTY; n];
            for (fi, f) in frames.iter().enumerate() {
                for (i, (change, rc)) in f.iter().take(n).enumerate() {
                    if *change || fi == 0 {
                        let (a, b, c, d, e, g, o) = *rc;
                        cells[i] = raw_cell(a, b, c, d, e, g, o);
                        if i % w as usize == w as usize - 1 && (cells[i].symbol().cell_width() > 1 || o % 6 == 5) {
                            // ratatui's own diff indexes past a one-row buffer for a wide
                            // cell in the last column: keep it narrow there.
                            cells[i] = raw_cell(2, b, c, d, e, g, 0);
                        }
                    }
                }
                let shown = if fi == 0 { Buffer::empty(Rect::new(0, 0, w, h)) } else { screen.shown().clone() };
                let mut next = Buffer::empty(shown.area);
                next.content.clone_from_slice(&cells);
                let want = String::from_utf8(reference(&shown, &next)).expect("utf8");
                let cs = cells.clone();
                let got = drawn(&mut screen, move |c| {
                    c.buf().content.clone_from_slice(&cs);
                    None
                });
                let got = if fi == 0 {
                    proptest::prop_assert!(got.starts_with("\u{1b}[2J"), "{:?}", got);
                    got["\u{1b}[2J".len()..].to_string()
                } else { got };
                let got = got.strip_suffix("\u{1b}[?25l").unwrap_or(&got).to_string();
                proptest::prop_assert_eq!(got, want, "frame {}", fi);
            }
        }
    }
}
