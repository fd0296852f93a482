//! `view`: draws the state. Only the visible lines are laid out and highlighted.

use ratatui::Frame;
use ratatui::buffer::{Buffer, Cell};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use unicode_segmentation::UnicodeSegmentation;

use super::app::{App, Mode};
use super::keys::HELP;
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

/// Draws the editor into `frame` (what the tests' `TestBackend` terminals draw with).
pub fn draw(frame: &mut Frame, app: &mut App) {
    if let Some(at) = render(frame.buffer_mut(), app) {
        frame.set_cursor_position(at);
    }
}

/// Draws the editor into `buf`, which covers the whole screen, and says where the terminal's
/// cursor goes (`None`: hidden).
pub fn render(buf: &mut Buffer, app: &mut App) -> Option<Position> {
    let session = app.session.clone();
    let st = session.lock();
    let area = buf.area;
    let chat_rows = if st.chat().is_empty() && !matches!(app.mode, Mode::Chat { .. }) {
        0
    } else {
        CHAT_LINES as u16
    };
    let [main, chat, status, prompt] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(chat_rows),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let (text_area, members_area) = if app.show_members && main.width > MEMBERS_WIDTH * 3 {
        let [t, m] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(MEMBERS_WIDTH)]).areas(main);
        (t, Some(m))
    } else {
        (main, None)
    };
    // Parsed once per frame: a room can hold many members.
    let members = st.members();
    let remotes = remote_cursors(&st, &members);
    let text_cursor = draw_text(buf, app, &st, text_area, &remotes);
    if let Some(m) = members_area {
        draw_members(buf, app, &st, &members, m);
    }
    if chat_rows > 0 {
        draw_chat(buf, &st, chat);
    }
    draw_status(buf, app, &st, members.len(), status);
    let prompt_cursor = draw_prompt(buf, app, prompt);
    match app.mode {
        Mode::Help => draw_help(buf, area),
        Mode::Codes => draw_codes(buf, app, area),
        _ => {}
    }
    prompt_cursor.or(text_cursor)
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

/// Draws the text; returns where our own cursor is on screen, if it is.
fn draw_text(
    buf: &mut Buffer,
    app: &mut App,
    st: &ClientState,
    area: Rect,
    remotes: &[RemoteCursor],
) -> Option<Position> {
    if area.area() == 0 {
        return None;
    }
    let rope = st.doc.rope();
    let bg = app.highlighter.background;
    let fg = app.highlighter.foreground;
    let lines = rope.len_lines();
    let gutter_w = (lines.to_string().len() + 1) as u16;
    app.view_height = area.height as usize;
    app.view_width = area.width.saturating_sub(gutter_w) as usize;
    app.clamp(rope);
    for y in area.top()..area.bottom() {
        for cell in row_mut(buf, area.x, y, area.width) {
            cell.fg = fg;
            cell.bg = bg;
        }
    }
    let spans = app.highlighter.lines(rope, app.top, area.height as usize);
    let selection = app.selection();
    let sel_bg = app.highlighter.selection;
    let gutter_style = Style::default().fg(app.highlighter.gutter).bg(bg);
    let text_x = area.x + gutter_w;
    let right = area.x + area.width;
    let mut own_cursor = None;
    // Lines are walked with one iterator: asking the rope for each line's start (a descent
    // from the root, and a scan of the whole leaf when the text is small) cost more.
    let mut line_start = rope.line_to_char(app.top.min(lines.saturating_sub(1)));
    let mut line_iter = rope.lines_at(app.top.min(lines));
    for (row, line_spans) in spans.iter().enumerate() {
        let l = app.top + row;
        let y = area.y + row as u16;
        put_number(
            row_mut(buf, area.x, y, gutter_w.min(area.width)),
            l + 1,
            gutter_style,
        );
        let mut x = 0usize; // display column in the line
        let mut ci = line_start; // char index of the current grapheme
        let place =
            |ci: usize, x: usize, width: usize, symbol: &str, style: Style, buf: &mut Buffer| {
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
                if x >= app.left && x + width <= app.left + app.view_width {
                    let sx = text_x + (x - app.left) as u16;
                    if sx < right {
                        if symbol.len() == 1 {
                            // One ASCII cell: what `set_stringn` would do, without segmenting.
                            if let Some(cell) = buf.cell_mut((sx, y)) {
                                cell.set_symbol(symbol).set_style(style);
                            }
                        } else {
                            buf.set_stringn(sx, y, symbol, width, style);
                        }
                    }
                }
            };
        for (style, piece) in line_spans {
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
                if ci == app.cursor {
                    own_cursor = Some((x, y));
                }
                x += w;
                ci += if ascii { 1 } else { g.chars().count() };
            }
        }
        // A cursor at the end of the line.
        place(ci, x, 1, " ", Style::default().fg(fg), buf);
        if ci == app.cursor {
            own_cursor = Some((x, y));
        }
        // Name tags go after the end of the line, so they never hide text.
        let line_end = line_start..=ci;
        let mut tx = x + 2;
        for r in remotes.iter().filter(|r| line_end.contains(&r.head)) {
            if tx >= app.left && tx < app.left + app.view_width {
                let sx = text_x + (tx - app.left) as u16;
                let room = right.saturating_sub(sx) as usize;
                let tag = Style::default()
                    .bg(r.color)
                    .fg(Color::Black)
                    .add_modifier(Modifier::BOLD);
                buf.set_stringn(sx, y, format!(" {} ", r.name), room, tag);
            }
            tx += r.name.chars().count() + 3;
        }
        line_start += line_iter.next().map_or(0, |line| line.len_chars());
    }
    let (x, y) = own_cursor?;
    (app.mode == Mode::Normal && x >= app.left && x < app.left + app.view_width)
        .then(|| Position::new(text_x + (x - app.left) as u16, y))
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

/// The members panel: a rule down its left edge, how many are here, then two lines for each
/// member. Drawn straight into the buffer: as a bordered `Paragraph` it was a tenth of a
/// frame's time, drawn on every key.
fn draw_members(buf: &mut Buffer, app: &App, st: &ClientState, members: &[Member], area: Rect) {
    if area.area() == 0 {
        return;
    }
    for y in area.top()..area.bottom() {
        if let Some(cell) = buf.cell_mut((area.x, y)) {
            cell.set_symbol(ratatui::symbols::line::VERTICAL);
        }
    }
    let (x, width) = (area.x + 1, area.width.saturating_sub(1));
    let mut y = area.y;
    let mut put = |line: Line<'_>| {
        if y < area.bottom() {
            buf.set_line(x, y, &line, width);
            y += 1;
        }
    };
    put(Line::from(format!(" {} here ", members.len() + 1)));
    put(Line::from(vec![
        Span::styled("● ", Style::default().fg(parse_color(st.color()))),
        Span::styled(
            format!("{} (you)", st.name()),
            Style::default().add_modifier(Modifier::BOLD),
        ),
    ]));
    put(Line::from(format!("  {}", st.role())));
    for m in members {
        let mark = if app.follow == Some(m.client_id) {
            "→ "
        } else {
            "● "
        };
        put(Line::from(vec![
            Span::styled(mark, Style::default().fg(parse_color(&m.color))),
            Span::raw(m.name.as_str()),
        ]));
        let role = m.role.map_or("yjs peer", |r| r.as_str());
        put(Line::from(format!(
            "  {role} · {}",
            m.active.map_or_else(String::new, ago)
        )));
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

fn draw_status(buf: &mut Buffer, app: &App, st: &ClientState, others: usize, area: Rect) {
    if area.area() == 0 {
        return;
    }
    let rope = st.doc.rope();
    let (line, col) = App::line_col(rope, app.cursor);
    let dcol = text::display_col(&text::line_text(rope, line), col);
    // Our own file's name first: it needs no read of the document (which a host is still
    // loading into yrs just after its first frame).
    let name = app
        .path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| st.doc.meta("name"))
        .unwrap_or_else(|| "untitled".into());
    let conn = match &st.connection {
        Connection::Connecting => "connecting…".to_string(),
        Connection::Reconnecting { attempt, reason } => {
            let queued = st.queued_updates();
            format!("reconnecting (try {attempt}: {reason}) · {queued} edits queued")
        }
        Connection::Connected if st.synced => "connected".to_string(),
        Connection::Connected => "syncing".to_string(),
        Connection::Closed(reason) => {
            let queued = st.queued_updates();
            if queued > 0 {
                format!("offline: {queued} edits queued ({reason})")
            } else {
                format!("offline ({reason})")
            }
        }
    };
    let mut left = format!(
        " {name} │ {} │ {} │ {conn} │ {} here",
        app.highlighter.language(),
        st.role(),
        others + 1
    );
    if app.dirty && app.path.is_some() {
        left.push_str(" │ [+] unsaved");
    }
    if st.role() == Role::Viewer {
        left.push_str(" │ read-only");
    }
    let right = format!("Ln {}, Col {} ", line + 1, dcol + 1);
    let style = Style::default().add_modifier(Modifier::REVERSED);
    buf.set_style(area, style);
    buf.set_stringn(area.x, area.y, &left, area.width as usize, style);
    let rw = right.chars().count() as u16;
    if area.width > rw + left.chars().count() as u16 {
        buf.set_stringn(area.x + area.width - rw, area.y, &right, rw as usize, style);
    }
}

/// Draws the prompt line; returns where the cursor goes when it takes input.
fn draw_prompt(buf: &mut Buffer, app: &App, area: Rect) -> Option<Position> {
    if area.area() == 0 {
        return None;
    }
    let (text, cursor) = match &app.mode {
        Mode::Find { query, .. } => (format!("find: {query}"), true),
        Mode::GotoLine { input } => (format!("go to line: {input}"), true),
        Mode::Chat { input } => (format!("say: {input}"), true),
        Mode::ConfirmOverwrite => (
            "the file changed on disk since it was loaded. o: overwrite · w: write beside it (.pairedit) · any other key: cancel"
                .to_string(),
            false,
        ),
        Mode::ConfirmQuit => (
            "unsaved changes. y: save and quit · n: quit without saving · any other key: stay"
                .to_string(),
            false,
        ),
        _ => (
            app.status.as_ref().map_or_else(
                || "F1 help · Ctrl-T chat · Ctrl-Q quit".to_string(),
                |(s, _)| s.clone(),
            ),
            false,
        ),
    };
    buf.set_stringn(area.x, area.y, &text, area.width as usize, Style::default());
    cursor.then(|| {
        let x = area.x
            + (unicode_width::UnicodeWidthStr::width(text.as_str()) as u16)
                .min(area.width.saturating_sub(1));
        Position::new(x, area.y)
    })
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
    let lines = vec![
        Line::from(Span::styled(
            "may type:",
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!("pairedit join {}", codes.write)),
        Line::from(""),
        Line::from(Span::styled(
            "may only watch:",
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!("pairedit join {}", codes.view)),
    ];
    let r = centered(area, area.width.saturating_sub(4), 7);
    Clear.render_ref(r, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
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
