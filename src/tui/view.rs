//! `view`: draws the state. Only the visible lines are laid out and highlighted.

use ratatui::Frame;
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_segmentation::UnicodeSegmentation;

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use super::app::{App, CursorAt, Mode};
use super::highlight::Spans;
use super::keys::HELP;
use super::term::{Canvas, RowKey};
use super::text;
use crate::client::{ClientState, Connection, now_ms};
use crate::protocol::Role;
use crate::sync::presence::Member;

const MEMBERS_WIDTH: u16 = 26;
const CHAT_LINES: usize = 3;

/// A member's cursor and selection, resolved to char offsets in our text.
struct RemoteCursor {
    name: String,
    color: Color,
    anchor: usize,
    head: usize,
}

pub fn parse_color(s: &str) -> Color {
    let hex = s.trim_start_matches('#');
    let byte = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
    };
    match (hex.len(), byte(0), byte(2), byte(4)) {
        (6, Some(r), Some(g), Some(b)) => Color::Rgb(r, g, b),
        _ => Color::Magenta,
    }
}

/// `c` mixed into `bg` at `alpha` (0–1): a selection tint that keeps the text readable.
fn tint(c: Color, bg: Color, alpha: f32) -> Color {
    match (c, bg) {
        (Color::Rgb(r, g, b), Color::Rgb(br, bgc, bb)) => {
            let mix = |x: u8, y: u8| (x as f32 * alpha + y as f32 * (1.0 - alpha)) as u8;
            Color::Rgb(mix(r, br), mix(g, bgc), mix(b, bb))
        }
        (c, _) => c,
    }
}

/// Draws the editor into `frame` (what the tests' `TestBackend` terminals draw with), every
/// row of it.
pub fn draw(frame: &mut Frame, app: &mut App) {
    if let Some(at) = render(&mut Canvas::whole(frame.buffer_mut()), app) {
        frame.set_cursor_position(at);
    }
}

/// Draws the editor on `canvas`, which covers the whole screen, and says where the terminal's
/// cursor goes (`None`: hidden). Rows of the text area that would show what they showed in
/// the last frame are not drawn again ([`Canvas::begin`]).
pub fn render(canvas: &mut Canvas<'_>, app: &mut App) -> Option<Position> {
    let session = app.session.clone();
    let st = session.lock();
    let area = canvas.area();
    let chat_rows = if st.chat().is_empty() && !matches!(app.mode, Mode::Chat { .. }) {
        0
    } else {
        CHAT_LINES as u16
    };
    let [main, chat, status, prompt] = split(area, chat_rows);
    let (text_area, members_area) = if app.show_members && main.width > MEMBERS_WIDTH * 3 {
        let (text, panel) = split_members(main);
        (text, Some(panel))
    } else {
        (main, None)
    };
    // Parsed once per frame: a room can hold many members.
    let members = st.members();
    let remotes = remote_cursors(&st, &members);
    let panel = members_area.map(|m| (m, member_lines(app, &st, &members)));
    let overlay = matches!(app.mode, Mode::Help | Mode::Codes);
    // The status line's left part and the prompt line are worked out before the text view
    // (which holds the app): like the text's rows, they are drawn only when they change.
    let status_left = status_left(app, &st, members.len());
    let prompt_line = prompt_line(app, &st);
    let text_cursor = {
        let text = TextView::new(app, &st, text_area, &remotes);
        let status_line = StatusLine {
            left: status_left,
            right: position(text.at),
        };
        // What each row shows, as a digest of everything drawn in it. For the text area: the
        // line and its highlighting, the gutter, the scroll, the selections and cursors that
        // touch it, the members panel's part of it. For the status and prompt lines: their
        // text. Rows under an overlay, and the chat, are always drawn.
        let mut keys = vec![RowKey::None; area.height as usize];
        if !overlay {
            // What every row shares, hashed once.
            let mut h = row_hasher();
            text.hash_common(&mut h);
            panel.as_ref().map(|(m, _)| (m.x, m.width)).hash(&mut h);
            let common = h.finish();
            for row in 0..text_area.height {
                let mut h = row_hasher();
                h.write_u64(common);
                text.hash_row(row as usize, &remotes, &mut h);
                if let Some((_, lines)) = &panel {
                    lines.get(row as usize).hash(&mut h);
                }
                keys[(text_area.y + row - area.y) as usize] = RowKey::Whole(h.finish());
            }
            if status.height > 0 {
                keys[(status.y - area.y) as usize] = status_line.key(status);
            }
            if prompt.height > 0 {
                keys[(prompt.y - area.y) as usize] =
                    RowKey::Whole(hash_of(&(prompt, &prompt_line)));
            }
        }
        // The text's rows move as one when it scrolls or a line goes in or out: the terminal
        // may scroll them. Said before `begin`, so a scroll found by the rows' keys (a line's
        // key does not depend on its row) keeps the rows it moved from being drawn at all;
        // else matched by the text, right of the line numbers (which change when lines go in
        // or out). The members panel beside it is drawn again where it differs.
        if !overlay {
            let text_x = text_area.x.saturating_add(text.gutter_w);
            canvas.scrollable(
                text_area.top()..text_area.bottom(),
                text_x..text_area.right(),
            );
        }
        canvas.begin(&keys);
        text.draw(canvas, &remotes);
        let cols = canvas.dirty_cols(status.y);
        if cols.0 < cols.1 {
            draw_status(canvas.buf(), &status_line, status, cols);
        }
        text.cursor
    };
    if let Some((m, lines)) = &panel {
        draw_members(canvas, *m, lines);
    }
    if chat_rows > 0 {
        draw_chat(canvas.buf(), &st, chat);
    }
    if canvas.dirty(prompt.y) {
        draw_prompt(canvas.buf(), &prompt_line, prompt);
    }
    let buf = canvas.buf();
    match app.mode {
        Mode::Help => draw_help(buf, area),
        Mode::Codes => draw_codes(buf, app, area),
        _ => {}
    }
    prompt_cursor(&prompt_line, prompt).or(text_cursor.filter(|_| app.mode == Mode::Normal))
}

/// The screen from top to bottom: the main area, the chat (`chat_rows` high), the status
/// line and the prompt line. What ratatui's layout solver gives (a test holds it to that),
/// worked out by hand when everything fits: a key's frame asked the solver twice.
fn split(area: Rect, chat_rows: u16) -> [Rect; 4] {
    if area.height < chat_rows + 3 {
        return Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(chat_rows),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
    }
    let row = |y: u16, height: u16| Rect::new(area.x, area.y + y, area.width, height);
    let main = area.height - chat_rows - 2;
    [
        row(0, main),
        row(main, chat_rows),
        row(main + chat_rows, 1),
        row(main + chat_rows + 1, 1),
    ]
}

/// The main area as the text and, on its right, the members panel (for a main area wider
/// than the panel).
fn split_members(main: Rect) -> (Rect, Rect) {
    let text = Rect {
        width: main.width.saturating_sub(MEMBERS_WIDTH),
        ..main
    };
    let panel = Rect {
        x: main.x + text.width,
        width: main.width - text.width,
        ..main
    };
    (text, panel)
}

fn remote_cursors(st: &ClientState, members: &[Member]) -> Vec<RemoteCursor> {
    members
        .iter()
        .filter_map(|m| {
            let c = m.cursor.as_ref()?;
            let head = st.resolve_position(&c.head)?;
            let anchor = st.resolve_position(&c.anchor).unwrap_or(head);
            Some(RemoteCursor {
                name: m.name.clone(),
                color: parse_color(&m.color),
                anchor,
                head,
            })
        })
        .collect()
}

/// One line of the text on screen.
struct TextRow<'a> {
    /// Which line (from 0).
    line: usize,
    spans: &'a Spans,
    /// The spans' version ([`super::highlight::Highlighter::versioned_lines`]).
    version: u64,
    /// Char index of its first char, and its length in chars without the line break (both 0
    /// when nothing needs them: no selection, no others' cursors).
    start: usize,
    len: usize,
}

/// The text area of one frame, worked out before any of it is drawn.
struct TextView<'a> {
    area: Rect,
    /// The lines on screen, from the top row (fewer than the rows at the end of the text).
    rows: Vec<TextRow<'a>>,
    gutter_w: u16,
    /// Display columns scrolled past, and how many fit.
    left: usize,
    width: usize,
    selection: Option<(usize, usize)>,
    bg: Color,
    fg: Color,
    sel_bg: Color,
    gutter: Style,
    /// Where our cursor is on screen, if it is on screen.
    cursor: Option<Position>,
    /// Where our cursor is in the text.
    at: CursorAt,
}

impl<'a> TextView<'a> {
    fn new(
        app: &'a mut App,
        st: &ClientState,
        area: Rect,
        remotes: &[RemoteCursor],
    ) -> TextView<'a> {
        let rope = st.doc.rope();
        let lines = st.doc.len_lines();
        let gutter_w = (decimal_width(lines) + 1) as u16;
        app.view_height = area.height as usize;
        app.view_width = area.width.saturating_sub(gutter_w) as usize;
        app.clamp(&st.doc);
        let (left, width, top) = (app.left, app.view_width, app.top);
        let selection = app.selection();
        let at = app.cursor_at(&st.doc);
        let CursorAt { line, x, .. } = at;
        let cursor = (area.area() > 0
            && line >= top
            && line < top + area.height as usize
            && x >= left
            && x < left + width)
            .then(|| {
                Position::new(
                    area.x + gutter_w + (x - left) as u16,
                    area.y + (line - top) as u16,
                )
            });
        let h = &mut app.highlighter;
        let (bg, fg, sel_bg) = (h.background, h.foreground, h.selection);
        let gutter = Style::default().fg(h.gutter).bg(bg);
        let spans = if area.area() == 0 {
            Vec::new()
        } else {
            h.versioned_lines(rope, top, area.height as usize)
        };
        // Where each line starts only matters to selections and cursors drawn in the text:
        // typing alone, the rope is not asked.
        let offsets = selection.is_some() || !remotes.is_empty();
        // One iterator down the lines: asking the rope for each line's start (a descent from
        // the root, and a scan of the whole leaf when the text is small) cost more.
        let mut start = if offsets {
            rope.line_to_char(top.min(lines.saturating_sub(1)))
        } else {
            0
        };
        let mut iter = offsets.then(|| rope.lines_at(top.min(lines)));
        let rows = spans
            .into_iter()
            .enumerate()
            .map(|(i, (version, spans))| {
                let slice = iter.as_mut().and_then(Iterator::next);
                let all = slice.map_or(0, |s| s.len_chars());
                let len = all - slice.map_or(0, text::eol_len);
                let row = TextRow {
                    line: top + i,
                    spans,
                    version,
                    start,
                    len,
                };
                start += all;
                row
            })
            .collect();
        TextView {
            area,
            rows,
            gutter_w,
            left,
            width,
            selection,
            bg,
            fg,
            sel_bg,
            gutter,
            cursor,
            at,
        }
    }

    /// Feeds `h` what every row's drawing depends on.
    fn hash_common(&self, h: &mut impl Hasher) {
        (self.area, self.gutter_w, self.left, self.width).hash(h);
        (self.bg, self.fg, self.sel_bg, self.gutter).hash(h);
    }

    /// Feeds `h` everything else row `row` of the text area shows.
    fn hash_row(&self, row: usize, remotes: &[RemoteCursor], h: &mut impl Hasher) {
        let Some(r) = self.rows.get(row) else {
            return;
        };
        (r.line, r.version).hash(h);
        // Cells from `start` to `start + len` (the cell after the text included) can be
        // coloured by a selection or a cursor; tags follow the text.
        let (first, last) = (r.start, r.start + r.len);
        if let Some((s, e)) = self.selection
            && s <= last
            && e > first
        {
            (s.max(first) - first, e.min(last + 1) - first).hash(h);
        }
        for c in remotes {
            let (s, e) = (c.anchor.min(c.head), c.anchor.max(c.head));
            if (s <= last && e > first) || (first..=last).contains(&c.head) {
                (s.saturating_sub(first), e.saturating_sub(first)).hash(h);
                (c.head.wrapping_sub(first), c.color, &c.name).hash(h);
            }
        }
    }

    /// Draws the rows [`Canvas::begin`] did not keep.
    fn draw(&self, canvas: &mut Canvas<'_>, remotes: &[RemoteCursor]) {
        let area = self.area;
        for y in area.top()..area.bottom() {
            if !canvas.dirty(y) {
                continue;
            }
            let buf = canvas.buf();
            for cell in row_mut(buf, area.x, y, area.width) {
                cell.fg = self.fg;
                cell.bg = self.bg;
            }
            if let Some(row) = self.rows.get((y - area.y) as usize) {
                self.draw_row(buf, y, row, remotes);
            }
        }
    }

    fn draw_row(&self, buf: &mut Buffer, y: u16, row: &TextRow<'_>, remotes: &[RemoteCursor]) {
        let area = self.area;
        let (bg, fg, left, width) = (self.bg, self.fg, self.left, self.width);
        put_number(
            row_mut(buf, area.x, y, self.gutter_w.min(area.width)),
            row.line + 1,
            self.gutter,
        );
        let text_x = area.x + self.gutter_w;
        let right = area.x + area.width;
        let selection = self.selection;
        let sel_bg = self.sel_bg;
        let mut x = 0usize; // display column in the line
        let mut ci = row.start; // char index of the current grapheme
        let place =
            |ci: usize, x: usize, width_: usize, symbol: &str, style: Style, buf: &mut Buffer| {
                let mut style = style.bg(bg);
                if selection.is_some_and(|(s, e)| ci >= s && ci < e) {
                    style = style.bg(sel_bg);
                }
                for r in remotes {
                    let (s, e) = (r.anchor.min(r.head), r.anchor.max(r.head));
                    if ci >= s && ci < e {
                        style = style.bg(tint(r.color, bg, 0.35));
                    }
                }
                for r in remotes {
                    if r.head == ci {
                        style = style.bg(r.color).fg(Color::Black);
                    }
                }
                if x >= left && x + width_ <= left + width {
                    let sx = text_x + (x - left) as u16;
                    if sx < right {
                        if symbol.len() == 1 {
                            // One ASCII cell: what `set_stringn` would do, without segmenting.
                            if let Some(cell) = buf.cell_mut((sx, y)) {
                                cell.set_symbol(symbol).set_style(style);
                            }
                        } else {
                            buf.set_stringn(sx, y, symbol, width_, style);
                        }
                    }
                }
            };
        for (style, piece) in row.spans {
            // Printable ASCII, most of any code: a cell per byte, no grapheme segmentation
            // (which was a quarter of a frame's time).
            let ascii = piece.bytes().all(|b| (0x20..0x7f).contains(&b));
            let (mut bytes, mut graphemes);
            let cells: &mut dyn Iterator<Item = &str> = if ascii {
                bytes = (0..piece.len()).map(|i| &piece[i..i + 1]);
                &mut bytes
            } else {
                graphemes = piece.graphemes(true);
                &mut graphemes
            };
            for g in cells {
                let w = if ascii { 1 } else { text::grapheme_width(g, x) };
                let symbol: std::borrow::Cow<'_, str> = if ascii {
                    g.into()
                } else if g == "\t" {
                    " ".repeat(w).into()
                } else if g.chars().next().is_some_and(char::is_control) {
                    "\u{FFFD}".into()
                } else {
                    g.into()
                };
                place(ci, x, w.max(1), &symbol, *style, buf);
                x += w;
                ci += if ascii { 1 } else { g.chars().count() };
            }
        }
        // A cursor at the end of the line.
        place(ci, x, 1, " ", Style::default().fg(fg), buf);
        // Name tags go after the end of the line, so they never hide text.
        let line_end = row.start..=ci;
        let mut tx = x + 2;
        for r in remotes.iter().filter(|r| line_end.contains(&r.head)) {
            if tx >= left && tx < left + width {
                let sx = text_x + (tx - left) as u16;
                let room = right.saturating_sub(sx) as usize;
                let tag = Style::default()
                    .bg(r.color)
                    .fg(Color::Black)
                    .add_modifier(Modifier::BOLD);
                buf.set_stringn(sx, y, format!(" {} ", r.name), room, tag);
            }
            tx += r.name.chars().count() + 3;
        }
    }
}

/// The cells of row `y` from column `x`, `w` wide (inside `buf`): indexing the row once beats
/// asking the buffer for each cell (which checks the position every time).
fn row_mut(buf: &mut Buffer, x: u16, y: u16, w: u16) -> &mut [Cell] {
    let start = buf.index_of(x, y);
    let end = (start + w as usize).min(buf.content.len());
    &mut buf.content[start..end]
}

/// `n` right-aligned in `cells` with one blank after it, in `style`: a line number in the
/// gutter. Digits that do not fit are cut from the left.
fn put_number(cells: &mut [Cell], mut n: usize, style: Style) {
    for cell in cells.iter_mut() {
        cell.set_symbol(" ").set_style(style);
    }
    let mut i = cells.len().saturating_sub(1);
    while i > 0 {
        i -= 1;
        cells[i].set_char(char::from(b'0' + (n % 10) as u8));
        n /= 10;
        if n == 0 {
            break;
        }
    }
}

fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => "active".to_string(),
        60..=3599 => format!("idle {}m", s / 60),
        _ => format!("idle {}h", s / 3600),
    }
}

/// The members panel's lines: how many are here, then two lines for each member.
fn member_lines(app: &App, st: &ClientState, members: &[Member]) -> Vec<Line<'static>> {
    let mut lines = vec![
        // Put together without `fmt`: this is on every frame.
        Line::from({
            let mut here = String::from(" ");
            push_decimal(&mut here, members.len() + 1);
            here.push_str(" here ");
            here
        }),
        Line::from(vec![
            Span::styled("● ", Style::default().fg(parse_color(st.color()))),
            Span::styled(
                [st.name(), " (you)"].concat(),
                Style::default().add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(["  ", st.role().as_str()].concat()),
    ];
    for m in members {
        let mark = if app.follow == Some(m.client_id) {
            "→ "
        } else {
            "● "
        };
        lines.push(Line::from(vec![
            Span::styled(mark, Style::default().fg(parse_color(&m.color))),
            Span::raw(m.name.clone()),
        ]));
        let role = m.role.map_or("yjs peer", |r| r.as_str());
        lines.push(Line::from(format!(
            "  {role} · {}",
            m.active.map_or_else(String::new, ago)
        )));
    }
    lines
}

/// The members panel: a rule down its left edge and `lines` beside it, on the rows
/// [`Canvas::begin`] did not keep. Drawn straight into the buffer: as a bordered `Paragraph`
/// it was a tenth of a frame's time, drawn on every key.
fn draw_members(canvas: &mut Canvas<'_>, area: Rect, lines: &[Line<'_>]) {
    for (i, y) in (area.top()..area.bottom()).enumerate() {
        if !canvas.dirty(y) {
            continue;
        }
        let buf = canvas.buf();
        if let Some(cell) = buf.cell_mut((area.x, y)) {
            cell.set_symbol(ratatui::symbols::line::VERTICAL);
        }
        if let Some(line) = lines.get(i) {
            buf.set_line(area.x + 1, y, line, area.width.saturating_sub(1));
        }
    }
}

fn draw_chat(buf: &mut Buffer, st: &ClientState, area: Rect) {
    if area.area() == 0 {
        return;
    }
    let lines: Vec<Line> = st
        .chat()
        .iter()
        .rev()
        .take(area.height as usize)
        .rev()
        .map(|c| {
            Line::from(vec![
                Span::styled(
                    format!("{}: ", c.from),
                    Style::default()
                        .fg(parse_color(&c.color))
                        .add_modifier(Modifier::BOLD),
                ),
                Span::raw(c.text.clone()),
            ])
        })
        .collect();
    Paragraph::new(lines).render_ref(area, buf);
}

/// The status line: what it says on the left (the file, the language, the connection...)
/// and on the right (where our cursor is).
#[derive(Hash)]
struct StatusLine {
    left: String,
    right: String,
}

/// The status line's right part: where our cursor is (put together without `fmt`, as it is
/// on every key).
fn position(at: CursorAt) -> String {
    let mut s = String::with_capacity(24);
    s.push_str("Ln ");
    push_decimal(&mut s, at.line + 1);
    s.push_str(", Col ");
    push_decimal(&mut s, at.x + 1);
    s.push(' ');
    s
}

/// How many digits `n` has in decimal.
fn decimal_width(n: usize) -> usize {
    let mut width = 1;
    let mut n = n / 10;
    while n > 0 {
        width += 1;
        n /= 10;
    }
    width
}

/// `n` in decimal.
fn push_decimal(s: &mut String, n: usize) {
    let mut buf = [0; 20];
    let digits = super::term::decimal(n as u64, &mut buf);
    s.extend(digits.iter().map(|&d| char::from(d)));
}

/// The left part of the status line; `others`: how many others are in the room.
fn status_left(app: &App, st: &ClientState, others: usize) -> String {
    // Our own file's name first: it needs no read of the document (which a host is still
    // loading into yrs just after its first frame).
    let name: Cow<'_, str> = match app.path.as_ref().and_then(|p| p.file_name()) {
        Some(n) => n.to_string_lossy(),
        None => st
            .doc
            .meta("name")
            .map_or(Cow::Borrowed("untitled"), Cow::Owned),
    };
    // Put together without `fmt` when connected, as it is on every frame.
    let conn: Cow<'_, str> = match &st.connection {
        Connection::Connecting => "connecting…".into(),
        Connection::Reconnecting { attempt, reason } => {
            let queued = st.queued_updates();
            format!("reconnecting (try {attempt}: {reason}) · {queued} edits queued").into()
        }
        Connection::Connected if st.synced => "connected".into(),
        Connection::Connected => "syncing".into(),
        Connection::Closed(reason) => {
            let queued = st.queued_updates();
            if queued > 0 {
                format!("offline: {queued} edits queued ({reason})").into()
            } else {
                format!("offline ({reason})").into()
            }
        }
    };
    let language = app.highlighter.language();
    // A file not on disk yet (`host` of a new file, `join --file` of one): saving creates it.
    let new_file = if app.path.is_some() && app.disk.is_none() && st.role() == Role::Writer {
        " [new file]"
    } else {
        ""
    };
    let on_disk = match app.disk_changed {
        Some(Some(_)) => " [changed on disk]",
        Some(None) => " [gone from disk]",
        None => "",
    };
    let unsaved = if app.dirty && app.path.is_some() {
        " [+] unsaved"
    } else {
        ""
    };
    let read_only = if st.role() == Role::Viewer {
        " │ read-only"
    } else {
        ""
    };
    // The connection last: while reconnecting it says why, at length, and a narrow screen
    // cuts it rather than the rest.
    let mut left = String::with_capacity(60 + name.len() + language.len() + conn.len());
    for piece in [
        " ",
        &name,
        new_file,
        on_disk,
        unsaved,
        " │ ",
        language,
        " │ ",
        st.role().as_str(),
        read_only,
        " │ ",
    ] {
        left.push_str(piece);
    }
    push_decimal(&mut left, others + 1);
    left.push_str(" here │ ");
    left.push_str(&conn);
    left
}

impl StatusLine {
    /// Where the right part starts on a status line drawn in `area`: `None` when the left
    /// part leaves it no room (it is then not shown).
    fn split(&self, area: Rect) -> Option<u16> {
        // Counted in usize: a joiner's file name comes from the document, any length.
        let rw = self.right.chars().count();
        (usize::from(area.width) > rw + self.left.chars().count()).then(|| area.right() - rw as u16)
    }

    /// The row's key: the two parts apart, so that a key that only moves the cursor draws
    /// the position again, not the whole line.
    fn key(&self, area: Rect) -> RowKey {
        match self.split(area) {
            Some(at) => RowKey::Split {
                at,
                left: hash_of(&(area, &self.left)),
                right: hash_of(&(area, &self.right)),
            },
            None => RowKey::Whole(hash_of(&(area, self))),
        }
    }
}

/// Draws the status line's columns `cols` (screen x, start and end: all of `area`, or the
/// part of it that changed, [`StatusLine::key`]).
fn draw_status(buf: &mut Buffer, line: &StatusLine, area: Rect, cols: (u16, u16)) {
    if area.area() == 0 {
        return;
    }
    let style = Style::default().add_modifier(Modifier::REVERSED);
    let (x0, x1) = (cols.0.max(area.left()), cols.1.min(area.right()));
    for cell in row_mut(buf, x0, area.y, x1.saturating_sub(x0)) {
        cell.set_style(style);
    }
    let split = line.split(area);
    let left_end = split.unwrap_or(area.right());
    if x0 < left_end {
        put_str(
            buf,
            area.x,
            area.y,
            &line.left,
            (left_end - area.x) as usize,
            style,
        );
    }
    if let Some(at) = split
        && x1 > at
    {
        put_str(
            buf,
            at,
            area.y,
            &line.right,
            (area.right() - at) as usize,
            style,
        );
    }
}

/// The prompt line: what it says, and whether it takes input (the cursor is then at its end).
#[derive(Hash)]
struct PromptLine {
    text: Cow<'static, str>,
    input: bool,
}

fn prompt_line(app: &App, st: &ClientState) -> PromptLine {
    let (text, input) = match &app.mode {
        Mode::Find { query, .. } => {
            // The status line's "not found" is under the prompt: said here too.
            let missed = app
                .status
                .as_ref()
                .and_then(|(s, _)| s.strip_prefix("not found: "))
                .is_some_and(|q| q == query);
            // Before the query: the cursor stays at its end.
            let note = if missed { " (not found)" } else { "" };
            (format!("find{note}: {query}").into(), true)
        }
        Mode::GotoLine { input } => (format!("go to line: {input}").into(), true),
        Mode::Chat { input } => (format!("say: {input}").into(), true),
        Mode::ConfirmOverwrite => (
            if app.disk.is_some() {
                "the file changed on disk since it was loaded. o: overwrite · w: write beside it (.pairedit) · any other key: cancel"
            } else {
                "a file of this name is on disk that this editor did not open or write. o: overwrite it · w: write beside it (.pairedit) · any other key: cancel"
            }
            .into(),
            false,
        ),
        Mode::ConfirmReload => (
            "reload the file from disk? the room's unsaved edits are replaced by it. y: reload · any other key: keep them".into(),
            false,
        ),
        Mode::ConfirmQuit => (
            match app.leaving_costs_in(st) {
                None => "unsaved changes. y: save and quit · n: quit without saving · any other key: stay".into(),
                Some(costs) => format!("unsaved changes; {costs}. y: save and quit · n: quit without saving · any other key: stay").into(),
            },
            false,
        ),
        Mode::ConfirmLeave => (
            {
                let costs = app.leaving_costs_in(st).unwrap_or_default();
                if app.unsent_in(st) && app.path.is_none() {
                    format!("{costs}. y: quit, keeping the text in a file here · any other key: stay").into()
                } else {
                    format!("{costs}. y: quit anyway · any other key: stay").into()
                }
            },
            false,
        ),
        _ => (
            app.status.as_ref().map_or(
                Cow::Borrowed("F1 help · Ctrl-T chat · Ctrl-Q quit"),
                |(s, _)| Cow::Owned(s.clone()),
            ),
            false,
        ),
    };
    PromptLine { text, input }
}

fn draw_prompt(buf: &mut Buffer, line: &PromptLine, area: Rect) {
    if area.area() == 0 {
        return;
    }
    put_str(
        buf,
        area.x,
        area.y,
        &line.text,
        area.width as usize,
        Style::default(),
    );
}

/// Where the cursor goes on the prompt line `area`, if it takes input.
fn prompt_cursor(line: &PromptLine, area: Rect) -> Option<Position> {
    (line.input && area.area() > 0).then(|| {
        let x = area.x
            + (unicode_width::UnicodeWidthStr::width(&*line.text) as u16)
                .min(area.width.saturating_sub(1));
        Position::new(x, area.y)
    })
}

/// Writes `s` from `(x, y)`, at most `max` cells of it, in `style`: what
/// [`Buffer::set_stringn`] does, cell for cell, but a simple char ([`simple`]) with simple
/// chars on both sides is put in a cell of its own, without segmenting the text into
/// graphemes (which was a quarter of a key's work when the status line was drawn with
/// `set_stringn`). The rest goes through `set_stringn` in runs; a run ends only between two
/// simple chars, where there is always a grapheme boundary, so the graphemes are the same.
fn put_str(buf: &mut Buffer, x: u16, y: u16, s: &str, max: usize, style: Style) {
    let area = buf.area;
    if y < area.top() || y >= area.bottom() || x < area.left() || x >= area.right() {
        return;
    }
    let mut x = x;
    let mut room = max.min((area.right() - x) as usize);
    // Draws a run through `set_stringn`; false when not all of it fitted (`set_stringn`
    // stops at the first grapheme that does not fit, and so does this).
    let run = |buf: &mut Buffer, x: &mut u16, room: &mut usize, run: &str| {
        let (next, _) = buf.set_stringn(*x, y, run, *room, style);
        let used = (next - *x) as usize;
        let width: usize = run
            .graphemes(true)
            .filter(|g| !g.contains(char::is_control))
            // ratatui's own measure, not unicode-width's: they differ on halfwidth sound marks.
            .map(|g| ratatui::buffer::CellWidth::cell_width(g) as usize)
            .sum();
        *x = next;
        *room -= used;
        used == width
    };
    let mut chars = s.char_indices().peekable();
    let mut prev_simple = true;
    let mut run_start = None;
    while let Some((i, c)) = chars.next() {
        let alone = simple(c) && prev_simple && chars.peek().is_none_or(|&(_, n)| simple(n));
        prev_simple = simple(c);
        if !alone {
            run_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = run_start.take()
            && !run(buf, &mut x, &mut room, &s[start..i])
        {
            return;
        }
        if room == 0 {
            return;
        }
        let at = buf.index_of(x, y);
        buf.content[at]
            .set_symbol(&s[i..i + c.len_utf8()])
            .set_style(style);
        x += 1;
        room -= 1;
    }
    if let Some(start) = run_start {
        run(buf, &mut x, &mut room, &s[start..]);
    }
}

/// A char that is a grapheme of its own next to any other simple char, one cell wide: the
/// printable ASCII, and the separators our status lines use.
fn simple(c: char) -> bool {
    matches!(c, ' '..='~' | '│' | '·' | '…')
}

/// A digest of `x` for a row's key ([`Canvas::begin`]): the same in every frame of this
/// process.
fn hash_of(x: &impl Hash) -> u64 {
    let mut h = row_hasher();
    x.hash(&mut h);
    h.finish()
}

/// A hasher for rows' keys: foldhash (several times faster than std's SipHash on these small
/// inputs), seeded at random once per process, so no text can be made to collide on purpose.
fn row_hasher() -> impl Hasher {
    use std::hash::BuildHasher as _;
    static STATE: std::sync::LazyLock<foldhash::quality::RandomState> =
        std::sync::LazyLock::new(foldhash::quality::RandomState::default);
    STATE.build_hasher()
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_help(buf: &mut Buffer, area: Rect) {
    if area.area() == 0 {
        return;
    }
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<30}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*v),
            ])
        })
        .collect();
    let r = centered(area, 72, HELP.len() as u16 + 2);
    Clear.render_ref(r, buf);
    Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" pairedit keys (any key closes) "),
        )
        .render_ref(r, buf);
}

fn draw_codes(buf: &mut Buffer, app: &App, area: Rect) {
    if area.area() == 0 {
        return;
    }
    let Some(codes) = &app.codes else { return };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let write = format!("pairedit join {}", codes.write);
    let view = format!("pairedit join {}", codes.view);
    // Cut into rows of the box's inner width, by character (a code has no spaces to wrap
    // at), so the box is as tall as what it holds: both codes show on any screen wide enough
    // for a few characters a row.
    let width = area.width.saturating_sub(4).max(3).min(area.width);
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let rows = |text: &str| -> Vec<Line<'static>> {
        let chars: Vec<char> = text.chars().collect();
        chars
            .chunks(inner)
            .map(|c| Line::from(c.iter().collect::<String>()))
            .collect()
    };
    let mut lines = vec![Line::from(Span::styled("may type:", bold))];
    lines.extend(rows(&write));
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("may only watch:", bold)));
    lines.extend(rows(&view));
    if lines.len() + 2 > usize::from(area.height) {
        // Too low for the headings: the codes alone, the writer's first.
        lines = rows(&write);
        lines.extend(rows(&view));
    }
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let r = centered(area, width, height);
    Clear.render_ref(r, buf);
    Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" join codes (any key closes) "),
        )
        .render_ref(r, buf);
}

/// `render_ref` for widgets drawn straight into a buffer.
trait RenderRef {
    fn render_ref(self, area: Rect, buf: &mut Buffer);
}

impl<W: ratatui::widgets::Widget> RenderRef for W {
    fn render_ref(self, area: Rect, buf: &mut Buffer) {
        self.render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_longer_than_any_screen_is_cut_not_a_panic() {
        let area = Rect::new(0, 0, 40, 1);
        let at = CursorAt {
            line: 0,
            col: 0,
            x: 0,
            len: 0,
        };
        // Left parts of 65,530 chars (counted in u16 with the position, past its end) and of
        // 65,541 (which a u16 count would take for 5).
        for n in [65_516, 65_527] {
            let line = StatusLine {
                left: format!(" {} │ Plain Text", "n".repeat(n)),
                right: position(at),
            };
            assert_eq!(line.split(area), None, "no room for the position");
            let mut buf = Buffer::empty(area);
            draw_status(&mut buf, &line, area, (0, 40));
            let drawn: String = buf.content.iter().map(Cell::symbol).collect();
            assert_eq!(drawn, format!(" {}", "n".repeat(39)));
        }
        // With room, the position is at the right end.
        let short = StatusLine {
            left: " a.txt".into(),
            right: position(at),
        };
        assert_eq!(short.split(area), Some(40 - "Ln 1, Col 1 ".len() as u16));
    }

    use proptest::prelude::*;

    /// Pieces a status or prompt line is made of: ASCII, box drawing, wide, combining,
    /// emoji sequences, flags, controls, CRLF, a tab, a prepended mark, halfwidth katakana
    /// and its sound marks (which ratatui counts a cell wide, unicode-width none).
    const PIECES: &[&str] = &[
        "a",
        "Z",
        " ",
        "~",
        "│",
        "·",
        "…",
        "漢",
        "字",
        "e\u{301}",
        "\u{301}",
        "👍🏽",
        "👩\u{200D}💻",
        "🇫🇷",
        "🇩",
        "#\u{FE0F}\u{20E3}",
        "\r\n",
        "\r",
        "\n",
        "\t",
        "\u{7}",
        "\u{600}",
        "\u{FEFF}",
        "ｶ",
        "\u{FF9E}",
        "\u{FF9F}",
    ];

    /// Draws `line` as the only row of `screen`, keyed in two parts (`split`) or not at all;
    /// returns what was written.
    fn status_frame(
        screen: &mut super::super::term::Screen,
        line: &StatusLine,
        split: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        screen
            .draw_to(
                |c| {
                    let area = c.area();
                    c.begin(&[if split { line.key(area) } else { RowKey::None }]);
                    let cols = c.dirty_cols(area.y);
                    if cols.0 < cols.1 {
                        draw_status(c.buf(), line, area, cols);
                    }
                    None
                },
                &mut out,
            )
            .expect("into memory");
        out
    }

    proptest! {
        /// A status line keyed in two parts, frame after frame, shows and writes what one
        /// drawn whole every time does: left parts kept or changed (wide, combining and
        /// halfwidth pieces among them), positions of every width, the split moving or gone.
        #[test]
        fn a_split_status_line_is_a_whole_one(
            width in 8u16..48,
            frames in prop::collection::vec((0usize..3, 0usize..2, 0usize..3), 1..10),
        ) {
            let lefts = [
                " a.txt │ Plain",
                " 漢字.rs │ ｶﾞ e\u{301}",
                " 👍🏽 │ ro",
            ];
            let (mut split, mut whole) = (
                super::super::term::Screen::with_size(width, 1),
                super::super::term::Screen::with_size(width, 1),
            );
            for (left, shown, col) in frames {
                // Positions of one, two and three digits.
                let col = [0, 9, 120][col];
                let line = StatusLine {
                    left: lefts[left].into(),
                    right: position(CursorAt { line: shown * 500, col, x: col * 7, len: col }),
                };
                let (a, b) = (status_frame(&mut split, &line, true), status_frame(&mut whole, &line, false));
                prop_assert_eq!(a, b);
                prop_assert_eq!(split.shown(), whole.shown());
            }
        }
    }

    proptest! {
        /// `put_str` leaves every cell as `set_stringn` would, whatever the text, the start and
        /// the width allowed.
        #[test]
        fn put_str_draws_what_set_stringn_draws(
            picks in prop::collection::vec(0..PIECES.len(), 0..40),
            x in 2u16..22,
            max in 0usize..40,
        ) {
            let text: String = picks.iter().map(|&i| PIECES[i]).collect();
            let area = Rect::new(2, 1, 20, 3);
            let style = Style::default().add_modifier(Modifier::REVERSED);
            let mut want = Buffer::empty(area);
            let mut got = Buffer::empty(area);
            want.set_stringn(x, 2, &text, max, style);
            put_str(&mut got, x, 2, &text, max, style);
            prop_assert_eq!(got, want, "{:?} from x {} in {} cells", text, x, max);
        }
    }

    /// The screen is split as ratatui's layout solver splits it, at every size.
    #[test]
    fn the_screen_is_split_as_the_layout_solver_splits_it() {
        let widths = [1, 2, 10, 50, 78, 79, 80, 81, 120, 200, 500];
        for (w, h) in widths
            .into_iter()
            .flat_map(|w| (0..=60).map(move |h| (w, h)))
        {
            let area = Rect::new(3, 2, w, h);
            for chat_rows in [0, CHAT_LINES as u16] {
                let solved: [Rect; 4] = Layout::vertical([
                    Constraint::Min(1),
                    Constraint::Length(chat_rows),
                    Constraint::Length(1),
                    Constraint::Length(1),
                ])
                .areas(area);
                assert_eq!(split(area, chat_rows), solved, "{w}x{h}, chat {chat_rows}");
            }
            if w > MEMBERS_WIDTH * 3 {
                let [t, m] =
                    Layout::horizontal([Constraint::Min(1), Constraint::Length(MEMBERS_WIDTH)])
                        .areas(area);
                assert_eq!(split_members(area), (t, m), "{w}x{h}");
            }
        }
    }

    /// A run holding a halfwidth sound mark is not taken for one `set_stringn` cut short
    /// (helper-11's case: the status line stopped after a file named so).
    #[test]
    fn put_str_goes_on_after_a_halfwidth_sound_mark() {
        for text in ["ｶﾞ ab", "find: ｶﾞ abc", "ﾟ  x"] {
            let area = Rect::new(0, 0, 20, 1);
            let mut want = Buffer::empty(area);
            let mut got = Buffer::empty(area);
            want.set_stringn(0, 0, text, 20, Style::default());
            put_str(&mut got, 0, 0, text, 20, Style::default());
            assert_eq!(got, want, "{text:?}");
        }
    }
}
