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

/// The editor's terminal: see the module documentation.
pub struct Screen {
    /// What the terminal shows.
    shown: Buffer,
    /// The frame being drawn.
    next: Buffer,
    /// The cursor as the terminal shows it: `None` before the first frame.
    cursor: Option<Option<Position>>,
    /// Clear the terminal before the next frame (at start and after a resize).
    clear: bool,
    /// The escape sequences of the frame being sent.
    pending: Vec<u8>,
}

impl Screen {
    /// Takes the terminal over: raw mode, the alternate screen, and ratatui's panic hook that
    /// gives the terminal back ([`ratatui::restore`] does it on the way out).
    pub fn init() -> io::Result<Screen> {
        // ratatui's own set-up, for the modes and the hook; its terminal is not used.
        drop(ratatui::try_init()?);
        let (w, h) = crossterm::terminal::size()?;
        Ok(Screen::with_size(w, h))
    }

    /// A screen of `w`×`h` cells that has not been drawn yet.
    pub fn with_size(w: u16, h: u16) -> Screen {
        let area = Rect::new(0, 0, w, h);
        Screen {
            shown: Buffer::empty(area),
            next: Buffer::empty(area),
            cursor: None,
            clear: true,
            pending: Vec::new(),
        }
    }

    /// Draws a frame and writes it to stdout in one piece. `render` draws into the buffer
    /// and says where the cursor goes (`None`: hidden).
    pub fn draw(&mut self, render: impl FnOnce(&mut Buffer) -> Option<Position>) -> io::Result<()> {
        self.draw_to(render, &mut io::stdout().lock())
    }

    /// Draws a frame and writes it to `out` (the benchmark and the tests draw into memory).
    pub fn draw_to(
        &mut self,
        render: impl FnOnce(&mut Buffer) -> Option<Position>,
        out: &mut impl Write,
    ) -> io::Result<()> {
        self.next.reset();
        let cursor = render(&mut self.next);
        self.pending.clear();
        let encoded = self.encode(cursor);
        // Whatever happened, what the terminal shows is unknown unless the frame went out.
        let sent = encoded.and_then(|()| {
            if self.pending.is_empty() {
                return Ok(());
            }
            out.write_all(&self.pending)?;
            out.flush()
        });
        if sent.is_err() {
            self.clear = true;
        }
        std::mem::swap(&mut self.shown, &mut self.next);
        sent
    }

    /// The escape sequences that turn what is shown into `self.next`, into `self.pending`.
    fn encode(&mut self, cursor: Option<Position>) -> io::Result<()> {
        let mut backend = CrosstermBackend::new(&mut self.pending);
        if self.clear {
            backend.clear_region(ClearType::All)?;
            self.shown.reset();
            self.clear = false;
        }
        let width = self.next.area.width as usize;
        if width > 0 {
            let changed: Vec<(Buffer, Buffer)> = self
                .shown
                .content
                .chunks(width)
                .zip(self.next.content.chunks(width))
                .enumerate()
                .filter(|(_, (was, now))| !same_cells(was, now))
                .map(|(y, (was, now))| {
                    let area = Rect::new(
                        self.next.area.x,
                        self.next.area.y + y as u16,
                        width as u16,
                        1,
                    );
                    (
                        Buffer {
                            area,
                            content: was.to_vec(),
                        },
                        Buffer {
                            area,
                            content: now.to_vec(),
                        },
                    )
                })
                .collect();
            if !changed.is_empty() {
                backend.draw(changed.iter().flat_map(|(was, now)| was.diff(now)))?;
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
                // Always: drawing the cells moved the terminal's cursor.
                backend.set_cursor_position(at)?;
            }
        }
        self.cursor = Some(cursor);
        Ok(())
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

    /// Draws `text` from the top left corner, and the cursor; returns what was written.
    fn frame(screen: &mut Screen, text: &str, cursor: Option<(u16, u16)>) -> String {
        let mut out = Vec::new();
        screen
            .draw_to(
                |buf| {
                    buf.set_string(0, 0, text, Style::default());
                    cursor.map(|(x, y)| Position::new(x, y))
                },
                &mut out,
            )
            .expect("drawing into memory");
        String::from_utf8(out).expect("utf8")
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
    }

    #[test]
    fn rows_are_compared_by_every_attribute() {
        let mut screen = Screen::with_size(4, 2);
        frame(&mut screen, "ab", None);
        let mut out = Vec::new();
        screen
            .draw_to(
                |buf| {
                    buf.set_string(0, 0, "ab", Style::default());
                    buf.set_string(0, 1, "ab", Style::default().bg(Color::Red));
                    None
                },
                &mut out,
            )
            .expect("drawing");
        let out = String::from_utf8(out).expect("utf8");
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
        let out = {
            let mut out = Vec::new();
            screen
                .draw_to(
                    |buf| {
                        area = buf.area;
                        buf.set_string(0, 0, "abc", Style::default());
                        None
                    },
                    &mut out,
                )
                .expect("drawing");
            String::from_utf8(out).expect("utf8")
        };
        assert_eq!(area, Rect::new(0, 0, 6, 3));
        assert!(
            out.starts_with("\u{1b}[2J") && out.contains("abc"),
            "{out:?}"
        );
    }
}
