//! Incremental syntax highlighting with syntect.
//!
//! Parse state is cached at checkpoints every [`CHECKPOINT`] lines from the top; an edit
//! invalidates the checkpoints (and cached lines) after its line only, and a frame re-parses from
//! the nearest checkpoint before what it shows — never the whole file per keystroke. Far from any
//! checkpoint (a jump into a huge file) it starts fresh a little above the screen, which can
//! mis-colour a multi-line construct there but never pauses.
//!
//! Typing within one line re-parses that line only: the state before each line on screen is
//! kept, and if the edited line leaves the parser in the state the next line started from,
//! nothing after it can have changed ([`Highlighter::line_changed`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::OnceLock;

use ratatui::style::{Color, Modifier, Style};
use ropey::Rope;
use syntect::highlighting::{
    FontStyle, HighlightIterator, HighlightState, Highlighter as SynHighlighter, Theme,
};
use syntect::parsing::{ParseState, ScopeStack, SyntaxReference, SyntaxSet};

/// Lines between saved parse states.
pub const CHECKPOINT: usize = 128;
/// How far past the last checkpoint a frame will parse to extend the exact prefix.
const MAX_CATCH_UP: usize = 2_000;
/// Lines parsed before the first shown line when starting fresh.
const FRESH_LEAD: usize = 64;
/// Longer lines are shown plain (a minified file must not stall the frame).
const MAX_LINE: usize = 10_000;

/// Themes shipped in `themes/`, embedded in the binary.
pub const THEMES: &[(&str, &[u8])] = &[
    (
        "pairedit-dark",
        include_bytes!("../../themes/pairedit-dark.tmTheme"),
    ),
    (
        "pairedit-light",
        include_bytes!("../../themes/pairedit-light.tmTheme"),
    ),
];
pub const DEFAULT_THEME: &str = "pairedit-dark";

pub fn syntax_set() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(SyntaxSet::load_defaults_newlines)
}

/// The syntax name for a file name (what the host puts in the room's `meta.language`).
pub fn language_for(file_name: &str) -> String {
    let set = syntax_set();
    let path = std::path::Path::new(file_name);
    let by_ext = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(|e| set.find_syntax_by_extension(e));
    let by_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| set.find_syntax_by_extension(n));
    by_ext
        .or(by_name)
        .map_or_else(|| "Plain Text".to_string(), |s| s.name.clone())
}

pub fn load_theme(name: &str) -> Result<Theme, String> {
    let (_, bytes) = THEMES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = THEMES.iter().map(|(n, _)| *n).collect();
        format!(
            "unknown theme {name:?}; shipped themes: {}",
            names.join(", ")
        )
    })?;
    syntect::highlighting::ThemeSet::load_from_reader(&mut Cursor::new(*bytes))
        .map_err(|e| format!("theme {name}: {e}"))
}

fn to_color(c: syntect::highlighting::Color) -> Color {
    Color::Rgb(c.r, c.g, c.b)
}

/// A highlighted line: styled pieces of its text (without the line break).
pub type Spans = Vec<(Style, String)>;

#[derive(Clone, PartialEq)]
struct Checkpoint {
    parse: ParseState,
    highlight: HighlightState,
}

pub struct Highlighter {
    syntax: &'static SyntaxReference,
    theme: Theme,
    /// `checkpoints[k]` is the state before line `k * CHECKPOINT`; always a valid prefix.
    checkpoints: Vec<Checkpoint>,
    /// Each line's spans, with their version ([`Highlighter::versioned_lines`]).
    cache: BTreeMap<usize, (u64, Spans)>,
    /// The exact state before each line of the last frame (and after its last line).
    starts: BTreeMap<usize, Checkpoint>,
    /// The state after the last line parsed (scrolling down resumes here, not at a checkpoint).
    resume: Option<(usize, Checkpoint, bool)>,
    pub background: Color,
    pub foreground: Color,
    pub selection: Color,
    pub gutter: Color,
    /// For plain text, the one style the theme gives it all: lines are then not parsed.
    plain: Option<Style>,
    /// The language last asked for ([`Highlighter::set_language`]).
    asked: String,
    /// Lines parsed so far (for tests and benchmarks: proves the work is incremental).
    pub parsed_lines: u64,
}

impl Highlighter {
    pub fn new(language: &str, theme: Theme) -> Highlighter {
        let set = syntax_set();
        let syntax = set
            .find_syntax_by_name(language)
            .unwrap_or_else(|| set.find_syntax_plain_text());
        let s = &theme.settings;
        let background = s.background.map_or(Color::Reset, to_color);
        let foreground = s.foreground.map_or(Color::Reset, to_color);
        let selection = s.selection.map_or(Color::DarkGray, to_color);
        let gutter = s
            .gutter_foreground
            .or(s.line_highlight)
            .map_or(Color::DarkGray, to_color);
        let mut h = Highlighter {
            syntax,
            theme,
            checkpoints: Vec::new(),
            cache: BTreeMap::new(),
            starts: BTreeMap::new(),
            resume: None,
            background,
            foreground,
            selection,
            gutter,
            plain: None,
            asked: language.to_string(),
            parsed_lines: 0,
        };
        h.checkpoints.push(h.fresh());
        h.plain = h.plain_style();
        h
    }

    /// The style of plain text, if this is plain text: what parsing a line would give every
    /// character of it (asked of the parser once, so the theme decides as it always does).
    fn plain_style(&self) -> Option<Style> {
        if self.syntax.name != syntax_set().find_syntax_plain_text().name {
            return None;
        }
        let mut state = self.fresh();
        let highlighter = SynHighlighter::new(&self.theme);
        let ops = state.parse.parse_line("x\n", syntax_set()).ok()?;
        let spans: Vec<_> =
            HighlightIterator::new(&mut state.highlight, &ops, "x\n", &highlighter).collect();
        match spans.as_slice() {
            [(style, "x\n")] => Some(convert(*style)),
            _ => None,
        }
    }

    pub fn language(&self) -> &str {
        &self.syntax.name
    }

    pub fn set_language(&mut self, language: &str) {
        // Asked for by name: a name this build does not know (another version's) gives plain
        // text, and asking again must not start over every time.
        if language != self.asked {
            self.asked = language.to_string();
            let set = syntax_set();
            self.syntax = set
                .find_syntax_by_name(language)
                .unwrap_or_else(|| set.find_syntax_plain_text());
            self.plain = self.plain_style();
            self.invalidate_from(0);
        }
    }

    fn fresh(&self) -> Checkpoint {
        let highlighter = SynHighlighter::new(&self.theme);
        Checkpoint {
            parse: ParseState::new(self.syntax),
            highlight: HighlightState::new(&highlighter, ScopeStack::new()),
        }
    }

    /// Forgets everything at and after `line` (call after an edit touching that line).
    pub fn invalidate_from(&mut self, line: usize) {
        self.checkpoints.truncate(line / CHECKPOINT + 1);
        if line == 0 {
            self.checkpoints.truncate(0);
            let fresh = self.fresh();
            self.checkpoints.push(fresh);
        }
        let _ = self.cache.split_off(&line);
        // The state before `line` does not depend on it.
        let _ = self.starts.split_off(&(line + 1));
        if self.resume.as_ref().is_some_and(|(at, _, _)| *at > line) {
            self.resume = None;
        }
    }

    /// After an edit within `line` that left the number of lines alone (typing, not Enter): the
    /// line is parsed again now, and if the parser ends it in the state the next line started
    /// from, every other line keeps its colours. Otherwise as [`Highlighter::invalidate_from`].
    pub fn line_changed(&mut self, rope: &Rope, line: usize) {
        if self.plain.is_some() {
            // Plain text has no parser state: the line is all that changed.
            let spans = self.plain_line(rope, line);
            store(&mut self.cache, line, spans);
            return;
        }
        if line + 1 < rope.len_lines()
            && let (Some(start), Some(next)) =
                (self.starts.get(&line), self.starts.get(&(line + 1)))
        {
            let mut state = start.clone();
            let next = next.clone();
            let highlighter = SynHighlighter::new(&self.theme);
            let (spans, parsed) =
                self.parse_line(rope, line, &mut state, &highlighter, &mut String::new());
            self.parsed_lines += u64::from(parsed);
            if state == next {
                store(&mut self.cache, line, spans);
                return;
            }
        }
        self.invalidate_from(line);
    }

    /// Line `line`'s spans in plain text: one span, unparsed.
    fn plain_line(&self, rope: &Rope, line: usize) -> Spans {
        let body = super::text::line_body(rope, line, || rope.len_chars()).body;
        match self.plain {
            Some(style) if !body.is_empty() => vec![(style, body.into_owned())],
            _ => Vec::new(),
        }
    }

    /// Line `line`'s spans, parsed from `state` (left as the state after it).
    fn parse_line(
        &self,
        rope: &Rope,
        line: usize,
        state: &mut Checkpoint,
        highlighter: &SynHighlighter,
        buf: &mut String,
    ) -> (Spans, bool) {
        if self.plain.is_some() {
            return (self.plain_line(rope, line), false);
        }
        let text = rope.line(line);
        let eol = super::text::eol_len(text);
        let body = text.slice(..text.len_chars() - eol);
        if body.len_chars() > MAX_LINE {
            return (
                vec![(Style::default().fg(self.foreground), body.to_string())],
                false,
            );
        }
        buf.clear();
        buf.extend(body.chunks());
        buf.push('\n');
        let spans = match state.parse.parse_line(buf, syntax_set()) {
            Ok(ops) => HighlightIterator::new(&mut state.highlight, &ops, buf, highlighter)
                .map(|(style, piece)| (convert(style), piece.trim_end_matches('\n').to_string()))
                .filter(|(_, piece)| !piece.is_empty())
                .collect(),
            Err(_) => {
                *state = self.fresh();
                vec![(Style::default().fg(self.foreground), body.to_string())]
            }
        };
        (spans, true)
    }

    /// Highlighted spans for lines `first..first + count` (fewer at the end of the text).
    pub fn lines(&mut self, rope: &Rope, first: usize, count: usize) -> Vec<&Spans> {
        self.versioned_lines(rope, first, count)
            .into_iter()
            .map(|(_, spans)| spans)
            .collect()
    }

    /// As [`Highlighter::lines`], each line's spans with their version: each time a line's
    /// spans are made they get a number no spans made before had, in any highlighter. Equal
    /// versions mean equal spans, with no need to compare them.
    pub fn versioned_lines(
        &mut self,
        rope: &Rope,
        first: usize,
        count: usize,
    ) -> Vec<(u64, &Spans)> {
        let end = (first + count).min(rope.len_lines());
        // A first line past the text (no caller asks for one): no lines.
        let first = first.min(end);
        if self.cache.range(first..end).count() < end - first {
            self.highlight(rope, first, end);
        }
        static NONE: Spans = Vec::new();
        // One walk of the cache, not a lookup per line.
        let mut cached = self.cache.range(first..end).peekable();
        (first..end)
            .map(|l| match cached.next_if(|(k, _)| **k == l) {
                Some((_, (v, spans))) => (*v, spans),
                None => (0, &NONE),
            })
            .collect()
    }

    /// Parses lines up to `end` into the cache, from the nearest known state before `first`.
    fn highlight(&mut self, rope: &Rope, first: usize, end: usize) {
        let exact_until = (self.checkpoints.len() - 1) * CHECKPOINT;
        let (mut line, mut state, exact) = if first <= exact_until + MAX_CATCH_UP {
            let k = (first / CHECKPOINT).min(self.checkpoints.len() - 1);
            (k * CHECKPOINT, self.checkpoints[k].clone(), true)
        } else {
            (first.saturating_sub(FRESH_LEAD), self.fresh(), false)
        };
        // Resume where the last frame stopped when that is closer (scrolling down).
        if let Some((at, resumed, resumed_exact)) = &self.resume
            && *at <= first
            && *at > line
            && (*resumed_exact || !exact)
        {
            (line, state) = (*at, resumed.clone());
        }
        let exact = exact
            || self
                .resume
                .as_ref()
                .is_some_and(|(at, _, e)| *e && *at == line);
        let highlighter = SynHighlighter::new(&self.theme);
        let mut buf = String::new();
        self.starts.clear();
        while line < end {
            if exact && line % CHECKPOINT == 0 && line / CHECKPOINT == self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            if exact && line >= first {
                self.starts.insert(line, state.clone());
            }
            let (spans, parsed) = self.parse_line(rope, line, &mut state, &highlighter, &mut buf);
            self.parsed_lines += u64::from(parsed);
            if line >= first || exact {
                store(&mut self.cache, line, spans);
            }
            line += 1;
        }
        if exact {
            self.starts.insert(line, state.clone());
        }
        self.resume = Some((line, state, exact));
        if self.cache.len() > 4096 {
            // Keep the cache small: what is on screen is all a frame needs.
            self.cache.retain(|l, _| *l >= first && *l < end);
        }
    }
}

/// Caches `spans` for `line`, with a new version unless they are the ones it has.
fn store(cache: &mut BTreeMap<usize, (u64, Spans)>, line: usize, spans: Spans) {
    match cache.get(&line) {
        Some((_, had)) if *had == spans => {}
        _ => {
            cache.insert(line, (crate::sync::next_version(), spans));
        }
    }
}

fn convert(style: syntect::highlighting::Style) -> Style {
    let mut s = Style::default().fg(to_color(style.foreground));
    if style.font_style.contains(FontStyle::BOLD) {
        s = s.add_modifier(Modifier::BOLD);
    }
    if style.font_style.contains(FontStyle::ITALIC) {
        s = s.add_modifier(Modifier::ITALIC);
    }
    if style.font_style.contains(FontStyle::UNDERLINE) {
        s = s.add_modifier(Modifier::UNDERLINED);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust() -> Highlighter {
        Highlighter::new("Rust", load_theme(DEFAULT_THEME).unwrap())
    }

    #[test]
    fn themes_load_and_languages_resolve() {
        for (name, _) in THEMES {
            load_theme(name).unwrap();
        }
        assert!(load_theme("nope").unwrap_err().contains("pairedit-dark"));
        assert_eq!(language_for("src/main.rs"), "Rust");
        assert_eq!(language_for("x.py"), "Python");
        assert_eq!(language_for("Makefile"), "Makefile");
        assert_eq!(language_for("notes.unknownext"), "Plain Text");
    }

    #[test]
    fn plain_text_is_coloured_as_the_parser_would_without_parsing() {
        let rope = Rope::from_str("hello world\n\n\tx = 1; // 界 é\r\nfn main() {}\n");
        for theme in ["pairedit-dark", "pairedit-light"] {
            let theme = load_theme(theme).unwrap();
            let mut fast = Highlighter::new("Plain Text", theme.clone());
            assert!(fast.plain.is_some());
            let mut parsed = Highlighter::new("Plain Text", theme);
            parsed.plain = None;
            assert_eq!(fast.lines(&rope, 0, 5), parsed.lines(&rope, 0, 5));
            assert_eq!(fast.parsed_lines, 0);
            assert!(parsed.parsed_lines >= 4);
        }
        assert!(rust().plain.is_none());
    }

    #[test]
    fn a_language_this_build_does_not_know_is_plain_text_once() {
        let rope = Rope::from_str("fn main() {}\nlet x = 1;\n");
        let mut h = rust();
        h.set_language("Klingon");
        assert_eq!(h.language(), "Plain Text");
        let first: Vec<u64> = h
            .versioned_lines(&rope, 0, 2)
            .iter()
            .map(|(v, _)| *v)
            .collect();
        // The room says it again with every update: the cache stays.
        h.set_language("Klingon");
        let again: Vec<u64> = h
            .versioned_lines(&rope, 0, 2)
            .iter()
            .map(|(v, _)| *v)
            .collect();
        assert_eq!(first, again);
        h.set_language("Rust");
        assert_eq!(h.language(), "Rust");
        assert_ne!(h.versioned_lines(&rope, 0, 2)[0].0, first[0]);
    }

    #[test]
    fn keywords_and_strings_get_different_colours() {
        let rope = Rope::from_str("fn main() { let s = \"hi\"; }\n");
        let mut h = rust();
        let line = &h.lines(&rope, 0, 1)[0];
        let style_of = |needle: &str| {
            line.iter()
                .find(|(_, t)| t.contains(needle))
                .map(|(s, _)| *s)
        };
        assert_ne!(style_of("fn"), style_of("\"hi\""));
        assert_eq!(
            line.iter().map(|(_, t)| t.as_str()).collect::<String>(),
            "fn main() { let s = \"hi\"; }"
        );
    }

    #[test]
    fn an_edit_reparses_from_the_nearest_checkpoint_only() {
        let text: String = (0..2000)
            .map(|i| format!("let x{i} = {i}; // line\n"))
            .collect();
        let mut rope = Rope::from_str(&text);
        let mut h = rust();
        h.lines(&rope, 1900, 50);
        let full = h.parsed_lines;
        assert!(full >= 1950);
        // Edit line 1910 and show the same screen: only from checkpoint 1792 onwards is parsed.
        let at = rope.line_to_char(1910);
        rope.insert(at, "/* */");
        h.invalidate_from(1910);
        h.lines(&rope, 1900, 50);
        let again = h.parsed_lines - full;
        assert!(again <= (1950 - 1792) as u64, "re-parsed {again} lines");
        // Scrolling back over cached lines parses nothing.
        let before = h.parsed_lines;
        h.lines(&rope, 1900, 10);
        assert_eq!(h.parsed_lines, before);
    }

    #[test]
    fn typing_within_a_line_reparses_that_line_only_unless_it_changes_what_follows() {
        let text: String = (0..300).map(|i| format!("let x{i} = {i};\n")).collect();
        let mut rope = Rope::from_str(&text);
        let mut h = rust();
        h.lines(&rope, 0, 50);
        let shown: Vec<Spans> = h.lines(&rope, 0, 50).into_iter().cloned().collect();
        // Typing on line 3: one line parsed, the rest kept.
        let before = h.parsed_lines;
        rope.insert(rope.line_to_char(3) + 4, "yz");
        h.line_changed(&rope, 3);
        let after: Vec<Spans> = h.lines(&rope, 0, 50).into_iter().cloned().collect();
        assert_eq!(h.parsed_lines - before, 1);
        assert_eq!(after[4..], shown[4..]);
        let line3: String = after[3].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(line3, "let yzx3 = 3;");
        // Opening a comment changes every line after it: they are parsed again, and coloured
        // as a fresh highlighter colours them.
        rope.insert(rope.line_to_char(5), "/* ");
        h.line_changed(&rope, 5);
        let after: Vec<Spans> = h.lines(&rope, 0, 50).into_iter().cloned().collect();
        assert!(h.parsed_lines - before > 40);
        assert_eq!(after.iter().collect::<Vec<_>>(), rust().lines(&rope, 0, 50));
    }

    #[test]
    fn scrolling_down_parses_each_line_once() {
        let text: String = (0..1000).map(|i| format!("let x{i} = {i};\n")).collect();
        let rope = Rope::from_str(&text);
        let mut h = rust();
        for first in (0..1000).step_by(30) {
            h.lines(&rope, first, 30);
        }
        assert!(h.parsed_lines <= 1001, "parsed {} lines", h.parsed_lines);
    }

    #[test]
    fn a_multiline_comment_keeps_its_state_across_checkpoints() {
        let mut text = String::from("/*\n");
        text.push_str(&"inside\n".repeat(300));
        text.push_str("*/ fn x() {}\n");
        let rope = Rope::from_str(&text);
        let mut h = rust();
        let inside = h.lines(&rope, 250, 1)[0][0].0;
        let mut fresh = rust();
        let plain_rope = Rope::from_str("inside\n");
        let plain = fresh.lines(&plain_rope, 0, 1)[0][0].0;
        assert_ne!(inside, plain, "line 250 is still inside the comment");
    }
}
