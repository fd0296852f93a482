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
//!   one key changes two rows of a 120×50 screen. Here a row equal to the one on screen is
//!   passed over with a plain comparison, and only rows that changed go through ratatui's
//!   own diff ([`Buffer::diff`]), so wide characters are handled exactly as ratatui does.
//! - **A frame leaves in one `write`.** ratatui flushes after the cells, again after showing
//!   the cursor and again after moving it: three writes, so the terminal draws the frame in
//!   pieces. Here all of it is collected and written at once, and the cursor is shown or
//!   hidden only when that changes.

use std::io::{self, Write};

use ratatui::backend::{Backend, ClearType, CrosstermBackend};
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Position, Rect};

/// Where a frame is drawn: a buffer covering the screen, and, on a [`Screen`], which of its
/// rows need drawing at all.
pub struct Canvas<'a> {
    buf: &'a mut Buffer,
    /// `None`: a plain buffer, every row drawn (the tests' `TestBackend` frames).
    rows: Option<&'a mut Rows>,
    /// Draw every row, whatever its key (the screen is being drawn whole).
    all: bool,
    begun: bool,
}

/// What a [`Screen`] knows of its rows between frames.
#[derive(Default)]
struct Rows {
    /// The key each row was drawn with ([`Canvas::begin`]); `None`: none given.
    keys: Vec<Option<u64>>,
    /// Which rows the frame being drawn draws.
    dirty: Vec<bool>,
}

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

    /// Says what each row will show: `keys[i]` (row `i` from the top) is a digest of
    /// everything to be drawn in that row, or `None` for a row that is always drawn. A row
    /// whose key is the one it was last drawn with still shows exactly that: it is not
    /// cleared, [`Canvas::dirty`] is false for it, and whatever is drawn into it anyway is
    /// ignored. Called once, before anything is drawn; a frame that draws without calling it
    /// draws every row.
    pub fn begin(&mut self, keys: &[Option<u64>]) {
        if self.begun {
            return;
        }
        self.begun = true;
        let Some(rows) = self.rows.as_deref_mut() else {
            return;
        };
        let width = self.buf.area.width as usize;
        let height = self.buf.area.height as usize;
        rows.keys.resize(height, None);
        rows.dirty.clear();
        rows.dirty.resize(height, true);
        for y in 0..height {
            let key = keys.get(y).copied().flatten();
            let same = !self.all && key.is_some() && rows.keys[y] == key;
            rows.dirty[y] = !same;
            rows.keys[y] = key;
            if !same {
                for cell in &mut self.buf.content[y * width..(y + 1) * width] {
                    cell.reset();
                }
            }
        }
    }

    /// Whether row `y` (a screen row) is drawn in this frame (after [`Canvas::begin`]).
    pub fn dirty(&self, y: u16) -> bool {
        !self.begun
            || self.rows.as_deref().is_none_or(|rows| {
                rows.dirty
                    .get(y.saturating_sub(self.buf.area.y) as usize)
                    .is_none_or(|d| *d)
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
    /// Changed rows, as shown and as drawn, for ratatui's diff (kept to save allocations).
    pairs: Vec<(Buffer, Buffer)>,
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
                ratatui::restore();
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
            pairs: Vec::new(),
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
    /// `self.pending`; what is shown is then that frame.
    fn encode(&mut self, cursor: Option<Position>) -> io::Result<()> {
        let mut backend = CrosstermBackend::new(&mut self.pending);
        let mut drawn = false;
        if self.clear {
            backend.clear_region(ClearType::All)?;
            self.shown.reset();
            self.clear = false;
            drawn = true;
        }
        let width = self.next.area.width as usize;
        if width > 0 {
            // Row pairs (as shown, as drawn) for ratatui's diff, kept from frame to frame.
            let mut changed = 0;
            for (y, dirty) in self.rows.dirty.iter().enumerate() {
                let cells = y * width..(y + 1) * width;
                let (was, now) = (
                    &self.shown.content[cells.clone()],
                    &self.next.content[cells.clone()],
                );
                if !dirty || same_cells(was, now) {
                    continue;
                }
                let area = Rect::new(
                    self.next.area.x,
                    self.next.area.y + y as u16,
                    width as u16,
                    1,
                );
                if self.pairs.len() == changed {
                    self.pairs.push((Buffer::empty(area), Buffer::empty(area)));
                }
                let (was_row, now_row) = &mut self.pairs[changed];
                for (buf, cells) in [(was_row, was), (now_row, now)] {
                    buf.area = area;
                    buf.content.clear();
                    buf.content.extend_from_slice(cells);
                }
                changed += 1;
                self.shown.content[cells.clone()].clone_from_slice(&self.next.content[cells]);
            }
            if changed > 0 {
                let pairs = &self.pairs[..changed];
                backend.draw(pairs.iter().flat_map(|(was, now)| was.diff(now)))?;
                drawn = true;
            }
        }
        let was = self.cursor.flatten();
        match cursor {
            None if was.is_some() || self.cursor.is_none() => backend.hide_cursor()?,
            None => {}
            Some(at) => {
                if was.is_none() {
                    backend.show_cursor()?;
                }
                // Drawing cells moves the terminal's cursor: put it back.
                if drawn || was != Some(at) {
                    backend.set_cursor_position(at)?;
                }
            }
        }
        self.cursor = Some(cursor);
        Ok(())
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

/// Whether two rows hold the same cells, as `Cell`'s own equality has it. Cheaper than that
/// equality: most cells hold one byte, and a string comparison calls `memcmp` for it.
#[allow(deprecated)] // `skip`: ratatui's equality still compares it, so this does too.
fn same_cells(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            let (sa, sb) = (a.symbol().as_bytes(), b.symbol().as_bytes());
            let symbol = match (sa, sb) {
                ([x], [y]) => x == y,
                _ => sa == sb,
            };
            symbol && a.style() == b.style() && a.skip == b.skip && a.diff_option == b.diff_option
        })
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
            c.begin(&[Some(k0), k1]);
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
            c.begin(&[Some(1), Some(2)]);
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
}
