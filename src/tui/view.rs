//! `view`: draws the state. Only the visible lines are laid out and highlighted.

use ratatui::Frame;
use ratatui::buffer::Buffer;
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

pub fn render(frame: &mut Frame, app: &mut App) {
    let session = app.session.clone();
    let st = session.lock();
    let area = frame.area();
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
    draw_text(frame, app, &st, text_area, &remotes);
    if let Some(m) = members_area {
        draw_members(frame.buffer_mut(), app, &st, &members, m);
    }
    if chat_rows > 0 {
        draw_chat(frame.buffer_mut(), &st, chat);
    }
    draw_status(frame.buffer_mut(), app, &st, members.len(), status);
    draw_prompt(frame, app, prompt);
    match app.mode {
        Mode::Help => draw_help(frame.buffer_mut(), area),
        Mode::Codes => draw_codes(frame.buffer_mut(), app, area),
        _ => {}
    }
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

fn draw_text(
    frame: &mut Frame,
    app: &mut App,
    st: &ClientState,
    area: Rect,
    remotes: &[RemoteCursor],
) {
    if area.area() == 0 {
        return;
    }
    let rope = st.doc.rope();
    let bg = app.highlighter.background;
    let fg = app.highlighter.foreground;
    let lines = rope.len_lines();
    let gutter_w = (lines.to_string().len() + 1) as u16;
    app.view_height = area.height as usize;
    app.view_width = area.width.saturating_sub(gutter_w) as usize;
    app.clamp(rope);
    let buf = frame.buffer_mut();
    buf.set_style(area, Style::default().bg(bg).fg(fg));
    let spans = app.highlighter.lines(rope, app.top, area.height as usize);
    let selection = app.selection();
    let sel_bg = app.highlighter.selection;
    let gutter_style = Style::default().fg(app.highlighter.gutter).bg(bg);
    let text_x = area.x + gutter_w;
    let right = area.x + area.width;
    let mut own_cursor = None;
    for (row, line_spans) in spans.iter().enumerate() {
        let l = app.top + row;
        let y = area.y + row as u16;
        buf.set_stringn(
            area.x,
            y,
            format!("{:>w$} ", l + 1, w = gutter_w as usize - 1),
            gutter_w as usize,
            gutter_style,
        );
        let line_start = rope.line_to_char(l);
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
    }
    if app.mode == Mode::Normal
        && let Some((x, y)) = own_cursor
        && x >= app.left
        && x < app.left + app.view_width
    {
        frame.set_cursor_position(Position::new(text_x + (x - app.left) as u16, y));
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

fn draw_members(buf: &mut Buffer, app: &App, st: &ClientState, members: &[Member], area: Rect) {
    if area.area() == 0 {
        return;
    }
    let mut lines = vec![
        Line::from(vec![
            Span::styled("● ", Style::default().fg(parse_color(st.color()))),
            Span::styled(
                format!("{} (you)", st.name()),
                Style::default().add_modifier(Modifier::BOLD),
            ),
        ]),
        Line::from(format!("  {}", st.role())),
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
    let title = format!(" {} here ", members.len() + 1);
    Paragraph::new(lines)
        .block(Block::default().borders(Borders::LEFT).title(title))
        .render_ref(area, buf);
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

fn draw_prompt(frame: &mut Frame, app: &App, area: Rect) {
    if area.area() == 0 {
        return;
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
    let buf = frame.buffer_mut();
    buf.set_stringn(area.x, area.y, &text, area.width as usize, Style::default());
    if cursor {
        let x = area.x
            + (unicode_width::UnicodeWidthStr::width(text.as_str()) as u16)
                .min(area.width.saturating_sub(1));
        frame.set_cursor_position(Position::new(x, area.y));
    }
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
