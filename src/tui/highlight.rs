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
//!
//! That parse is not on the key's way to the screen. A line typed into keeps its colours, the
//! typed text taking those of the character before it ([`patch`]), and the frame goes out
//! with that; the editor parses the line once no key is waiting ([`Highlighter::settle`]) and
//! draws again only if the colours changed. A burst of keys (a paste, fast typing) is parsed
//! once, after the last of them.

use std::collections::{BTreeMap, BTreeSet};
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
    /// The state before each line of the last frame (and after its last line).
    starts: BTreeMap<usize, Checkpoint>,
    /// Whether `starts` are exact (parsed from the top), or from a fresh state a little above
    /// the screen (a jump far into a big file). Either way an edited line is parsed again from
    /// the state the last frame had before it: typing at the end of a 100 MB file parsed the
    /// 64 lines above the screen and the screen again for every key (8 ms a key).
    starts_exact: bool,
    /// The state after the last line parsed (scrolling down resumes here, not at a checkpoint).
    resume: Option<(usize, Checkpoint, bool)>,
    /// Lines typed into whose cached spans were patched, not parsed: [`Highlighter::settle`]
    /// parses them.
    unsettled: BTreeSet<usize>,
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
            starts_exact: true,
            resume: None,
            unsettled: BTreeSet::new(),
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
        let _ = self.unsettled.split_off(&line);
        // The state before `line` does not depend on it.
        let _ = self.starts.split_off(&(line + 1));
        if self.resume.as_ref().is_some_and(|(at, _, _)| *at > line) {
            self.resume = None;
        }
    }

    /// After an edit within `line` that left the number of lines alone (typing, not Enter):
    /// the line keeps its colours for now, the new text in those of the character before it
    /// ([`patch`]), and is parsed by [`Highlighter::settle`]. A line with nothing to patch
    /// (not on the last frame) is settled at once.
    pub fn line_changed(&mut self, rope: &Rope, line: usize) {
        if self.plain.is_some() {
            // Plain text has no parser state: the line is all that changed.
            let spans = self.plain_line(rope, line);
            store(&mut self.cache, line, spans);
            return;
        }
        // The last line has no line after it whose start it could change.
        let last = line + 1 >= rope.len_lines();
        if self.starts.contains_key(&line)
            && (last || self.starts.contains_key(&(line + 1)))
            && let Some((_, old)) = self.cache.get(&line)
        {
            let body = super::text::line_body(rope, line, || rope.len_chars()).body;
            let spans = patch(old, &body);
            store(&mut self.cache, line, spans);
            self.unsettled.insert(line);
            return;
        }
        self.reparse(rope, line);
    }

    /// Whether lines typed into wait for [`Highlighter::settle`].
    pub fn unsettled(&self) -> bool {
        !self.unsettled.is_empty()
    }

    /// Parses the lines typed into since the last call ([`Highlighter::line_changed`]). If a
    /// line leaves the parser in the state the next line started from, only its own colours
    /// can have changed; otherwise everything after it is parsed again when next shown.
    /// Returns whether any line's colours changed (the screen needs drawing again).
    pub fn settle(&mut self, rope: &Rope) -> bool {
        let mut changed = false;
        for line in std::mem::take(&mut self.unsettled) {
            changed |= self.reparse(rope, line);
        }
        changed
    }

    /// Parses `line` again from the state before it: see [`Highlighter::settle`].
    fn reparse(&mut self, rope: &Rope, line: usize) -> bool {
        let last = line + 1 >= rope.len_lines();
        if let Some(start) = self.starts.get(&line)
            && (last || self.starts.contains_key(&(line + 1)))
        {
            let mut state = start.clone();
            let highlighter = SynHighlighter::new(&self.theme);
            let (spans, parsed) =
                self.parse_line(rope, line, &mut state, &highlighter, &mut String::new());
            self.parsed_lines += u64::from(parsed);
            if last {
                // Nothing follows whose colours depend on it: the state after the text is
                // now this one (where a line added below would start).
                if let Some((at, resumed, _)) = &mut self.resume
                    && *at == line + 1
                {
                    *resumed = state.clone();
                }
                self.starts.insert(line + 1, state);
                return store(&mut self.cache, line, spans);
            }
            if self.starts.get(&(line + 1)) == Some(&state) {
                return store(&mut self.cache, line, spans);
            }
        }
        self.invalidate_from(line);
        true
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
        let mut exact = exact
            || self
                .resume
                .as_ref()
                .is_some_and(|(at, _, e)| *e && *at == line);
        // Lines from `first` that are still cached need no parse: start at the first one that
        // is not, from the exact state the last frame had before it, if it had one (an edit in
        // the middle of the screen is parsed from its line, not from a checkpoint up to
        // [`CHECKPOINT`] lines above the screen).
        let missing = (first..end)
            .find(|l| !self.cache.contains_key(l))
            .unwrap_or(end);
        let _ = self.starts.split_off(&(missing + 1));
        self.starts = self.starts.split_off(&first);
        if missing > line
            && let Some(known) = self.starts.get(&missing)
        {
            (line, state, exact) = (missing, known.clone(), self.starts_exact);
        } else {
            self.starts.clear();
            self.starts_exact = exact;
        }
        let highlighter = SynHighlighter::new(&self.theme);
        let mut buf = String::new();
        while line < end {
            if exact && line % CHECKPOINT == 0 && line / CHECKPOINT == self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            if line >= first {
                self.starts.insert(line, state.clone());
            }
            let (spans, parsed) = self.parse_line(rope, line, &mut state, &highlighter, &mut buf);
            self.parsed_lines += u64::from(parsed);
            if line >= first || exact {
                store(&mut self.cache, line, spans);
            }
            line += 1;
        }
        self.starts.insert(line, state.clone());
        self.resume = Some((line, state, exact));
        if self.cache.len() > 4096 {
            // Keep the cache small: what is on screen is all a frame needs.
            self.cache.retain(|l, _| *l >= first && *l < end);
        }
    }
}

/// Caches `spans` for `line`, with a new version unless they are the ones it has. Returns
/// whether they were new.
fn store(cache: &mut BTreeMap<usize, (u64, Spans)>, line: usize, spans: Spans) -> bool {
    match cache.get(&line) {
        Some((_, had)) if *had == spans => false,
        _ => {
            cache.insert(line, (crate::sync::next_version(), spans));
            true
        }
    }
}

/// A line's spans after an edit, before it is parsed: `old`'s spans over the text they share
/// with `body` at its start and end, and what is new between in the style of the character
/// before it (or after it, at the start of the line). The spans' text is `body`, and
/// neighbours of one style are one span (a character and the marks typed onto it stay in one
/// piece, as the view draws them).
fn patch(old: &Spans, body: &str) -> Spans {
    let was: String = old.iter().map(|(_, t)| t.as_str()).collect();
    let mut head = was
        .bytes()
        .zip(body.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !body.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = was[head..]
        .bytes()
        .rev()
        .zip(body[head..].bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    while !body.is_char_boundary(body.len() - tail) {
        tail -= 1;
    }
    // The style at a byte of the old text (the last one's past its end).
    let style_at = |at: usize| {
        let mut start = 0;
        for (style, t) in old {
            if at < start + t.len() {
                return Some(*style);
            }
            start += t.len();
        }
        old.last().map(|(style, _)| *style)
    };
    let typed = if head > 0 {
        style_at(head - 1)
    } else {
        style_at(0)
    };
    let mut out: Spans = Vec::with_capacity(old.len() + 1);
    let mut push = |style: Style, t: &str| {
        if t.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((s, text)) if *s == style => text.push_str(t),
            _ => out.push((style, t.to_string())),
        }
    };
    let (cut_old, cut_new) = (was.len() - tail, body.len() - tail);
    let mut start = 0;
    for (style, t) in old {
        let end = start + t.len();
        // The part of this span before the new text.
        push(*style, &was[start.min(head)..end.min(head)]);
        start = end;
    }
    // Into an empty line: the theme's own colours.
    push(typed.unwrap_or_default(), &body[head..cut_new]);
    let mut start = 0;
    for (style, t) in old {
        let end = start + t.len();
        // The part of this span after the new text.
        push(*style, &was[start.max(cut_old)..end.max(cut_old)]);
        start = end;
    }
    out
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
    fn an_edit_reparses_from_its_line_on_screen_or_the_nearest_checkpoint_above_it() {
        let text: String = (0..2000)
            .map(|i| format!("let x{i} = {i}; // line\n"))
            .collect();
        let mut rope = Rope::from_str(&text);
        let mut h = rust();
        h.lines(&rope, 1900, 50);
        let full = h.parsed_lines;
        assert!(full >= 1950);
        // Edit line 1910 and show the same screen: only the lines from the edit to the end of
        // the screen are parsed (not from checkpoint 1792), and as a fresh highlighter has them.
        let at = rope.line_to_char(1910);
        rope.insert(at, "/* ");
        h.invalidate_from(1910);
        let shown: Vec<Spans> = h.lines(&rope, 1900, 50).into_iter().cloned().collect();
        let again = h.parsed_lines - full;
        assert_eq!(again, 1950 - 1910, "re-parsed {again} lines");
        assert_eq!(
            shown.iter().collect::<Vec<_>>(),
            rust().lines(&rope, 1900, 50)
        );
        // An edit above the screen: from the nearest checkpoint, as before.
        let at = rope.line_to_char(1800);
        rope.insert(at, "// ");
        h.invalidate_from(1800);
        let before = h.parsed_lines;
        let shown: Vec<Spans> = h.lines(&rope, 1900, 50).into_iter().cloned().collect();
        assert_eq!(h.parsed_lines - before, 1950 - 1792);
        assert_eq!(
            shown.iter().collect::<Vec<_>>(),
            rust().lines(&rope, 1900, 50)
        );
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
        // Typing on line 3: nothing parsed for the frame, the typed text in the colour of
        // the identifier it went into; then, settled, one line parsed and the rest kept.
        let before = h.parsed_lines;
        rope.insert(rope.line_to_char(3) + 4, "yz");
        h.line_changed(&rope, 3);
        assert!(h.unsettled());
        let patched: Vec<Spans> = h.lines(&rope, 0, 50).into_iter().cloned().collect();
        assert_eq!(h.parsed_lines, before);
        let line3: String = patched[3].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(line3, "let yzx3 = 3;");
        let x3 = shown[3].iter().find(|(_, t)| t.contains("x3")).unwrap().0;
        let yzx3 = patched[3]
            .iter()
            .find(|(_, t)| t.contains("yzx3"))
            .unwrap()
            .0;
        assert_eq!(yzx3, x3);
        assert!(!h.settle(&rope), "an identifier typed into: same colours");
        assert!(!h.unsettled());
        let after: Vec<Spans> = h.lines(&rope, 0, 50).into_iter().cloned().collect();
        assert_eq!(h.parsed_lines - before, 1);
        assert_eq!(after[4..], shown[4..]);
        assert_eq!(after, patched);
        assert_eq!(after.iter().collect::<Vec<_>>(), rust().lines(&rope, 0, 50));
        // Opening a comment changes every line after it: settled, they are parsed again, and
        // coloured as a fresh highlighter colours them.
        rope.insert(rope.line_to_char(5), "/* ");
        h.line_changed(&rope, 5);
        assert!(h.settle(&rope));
        let after: Vec<Spans> = h.lines(&rope, 0, 50).into_iter().cloned().collect();
        assert!(h.parsed_lines - before > 40);
        assert_eq!(after.iter().collect::<Vec<_>>(), rust().lines(&rope, 0, 50));
        // A keyword finished by typing is coloured as one once settled.
        let (mut rope, mut h) = (Rope::from_str("f\nx\n"), rust());
        h.lines(&rope, 0, 2);
        rope.insert(1, "n main() {}");
        h.line_changed(&rope, 0);
        assert!(h.settle(&rope), "`fn` is now a keyword");
        assert_eq!(h.lines(&rope, 0, 2), rust().lines(&rope, 0, 2));
    }

    /// Far into a big file the screen is parsed from a fresh state a little above it; typing
    /// there still parses the typed line only, not the lines above the screen and the screen.
    #[test]
    fn typing_far_past_the_exact_prefix_reparses_that_line_only() {
        let text: String = (0..5000).map(|i| format!("let x{i} = {i};\n")).collect();
        let mut rope = Rope::from_str(&text);
        let mut h = rust();
        let first = 4500;
        assert!(
            first > MAX_CATCH_UP + CHECKPOINT,
            "past what a frame catches up"
        );
        h.lines(&rope, first, 40);
        let before = h.parsed_lines;
        rope.insert(rope.line_to_char(first + 10) + 4, "yz");
        h.line_changed(&rope, first + 10);
        assert!(!h.settle(&rope), "an identifier typed into: same colours");
        let after: Vec<Spans> = h.lines(&rope, first, 40).into_iter().cloned().collect();
        assert_eq!(h.parsed_lines - before, 1);
        assert_eq!(
            after.iter().collect::<Vec<_>>(),
            rust().lines(&rope, first, 40)
        );
        // Enter there: the lines below move, and are parsed again from the same start.
        rope.insert(rope.line_to_char(first + 12), "\n");
        h.invalidate_from(first + 12);
        let after: Vec<Spans> = h.lines(&rope, first, 40).into_iter().cloned().collect();
        assert_eq!(
            after.iter().collect::<Vec<_>>(),
            rust().lines(&rope, first, 40)
        );
    }

    /// The last line (no line break after it: where typing at the end of a file goes) is
    /// patched and settled like any other: a key there parses nothing before its frame (at the
    /// end of a 100 MB file every key parsed its line on the key's path). Its new end state is
    /// where a line added below starts.
    #[test]
    fn typing_on_the_last_line_is_patched_then_settled() {
        let mut rope = Rope::from_str("let a = 1;\nlet b = 2;\nlet c");
        let mut h = rust();
        let last = rope.len_lines() - 1;
        h.lines(&rope, 0, 40);
        let before = h.parsed_lines;
        rope.insert(rope.len_chars(), " = 3");
        h.line_changed(&rope, last);
        assert_eq!(h.parsed_lines, before, "the key's frame parses nothing");
        assert!(h.unsettled());
        h.settle(&rope);
        assert_eq!(h.parsed_lines - before, 1);
        let fresh_of = |rope: &Rope| -> Vec<Spans> {
            rust().lines(rope, 0, 40).into_iter().cloned().collect()
        };
        let got: Vec<Spans> = h.lines(&rope, 0, 40).into_iter().cloned().collect();
        assert_eq!(got, fresh_of(&rope));
        // A comment opened on the last line, then a line added below it: the new line starts
        // inside the comment.
        rope.insert(rope.len_chars(), "; /* open");
        h.line_changed(&rope, last);
        h.settle(&rope);
        let got: Vec<Spans> = h.lines(&rope, 0, 40).into_iter().cloned().collect();
        assert_eq!(got, fresh_of(&rope));
        rope.insert(rope.len_chars(), "\nstill comment */ let d = 4;");
        h.invalidate_from(last + 1);
        let got: Vec<Spans> = h.lines(&rope, 0, 40).into_iter().cloned().collect();
        assert_eq!(got, fresh_of(&rope));
    }

    /// Where the edited line's text is unsettled and another edit comes before the settle:
    /// an edit below keeps the line to settle, one above forgets it (its line moved).
    #[test]
    fn an_unsettled_line_survives_edits_below_it_and_goes_with_edits_above_it() {
        let text: String = (0..100).map(|i| format!("let x{i} = {i};\n")).collect();
        let mut rope = Rope::from_str(&text);
        let mut h = rust();
        h.lines(&rope, 0, 50);
        rope.insert(rope.line_to_char(10) + 4, "q");
        h.line_changed(&rope, 10);
        // Below: a line break typed on line 20.
        rope.insert(rope.line_to_char(20), "\n");
        h.invalidate_from(20);
        assert!(h.unsettled());
        h.settle(&rope);
        assert_eq!(h.lines(&rope, 0, 50), rust().lines(&rope, 0, 50));
        rope.insert(rope.line_to_char(30) + 4, "\"");
        h.line_changed(&rope, 30);
        // Above: a teammate's line break on line 2.
        rope.insert(rope.line_to_char(2), "\n");
        h.invalidate_from(2);
        assert!(!h.unsettled());
        assert_eq!(h.lines(&rope, 0, 50), rust().lines(&rope, 0, 50));
    }

    #[test]
    fn a_patched_line_keeps_the_colours_around_the_edit() {
        let (a, b, c) = (
            Style::default().fg(Color::Red),
            Style::default().fg(Color::Green),
            Style::default().fg(Color::Blue),
        );
        let spans =
            |v: &[(Style, &str)]| -> Spans { v.iter().map(|(s, t)| (*s, t.to_string())).collect() };
        let old = spans(&[(a, "let"), (b, " x"), (c, " = 1;")]);
        // Typed inside, at the end of a span, at the start, at the end.
        assert_eq!(
            patch(&old, "let xy = 1;"),
            spans(&[(a, "let"), (b, " xy"), (c, " = 1;")])
        );
        assert_eq!(
            patch(&old, "letz x = 1;"),
            spans(&[(a, "letz"), (b, " x"), (c, " = 1;")])
        );
        assert_eq!(
            patch(&old, "#let x = 1;"),
            spans(&[(a, "#let"), (b, " x"), (c, " = 1;")])
        );
        assert_eq!(
            patch(&old, "let x = 1; ok"),
            spans(&[(a, "let"), (b, " x"), (c, " = 1; ok")])
        );
        // Deleted across a span's edge; everything deleted.
        assert_eq!(patch(&old, "le = 1;"), spans(&[(a, "le"), (c, " = 1;")]));
        assert_eq!(patch(&old, ""), Spans::new());
        // Into an empty line: the theme's colours.
        assert_eq!(
            patch(&Spans::new(), "ab"),
            spans(&[(Style::default(), "ab")])
        );
        // A mark typed onto a character stays with it; a changed multi-byte character is
        // replaced whole.
        let old = spans(&[(a, "caf"), (b, "e")]);
        assert_eq!(
            patch(&old, "cafe\u{301}"),
            spans(&[(a, "caf"), (b, "e\u{301}")])
        );
        let old = spans(&[(a, "x"), (b, "é"), (c, "y")]);
        assert_eq!(patch(&old, "xèy"), spans(&[(a, "xè"), (c, "y")]));
    }

    proptest::proptest! {
        /// Whatever the old spans and the new text, the patched spans spell the new text, with
        /// no empty span and no two neighbours of one style.
        #[test]
        fn a_patched_line_spells_the_new_text(
            old in proptest::collection::vec((0u8..3, "[a-cé\u{301} ]{0,6}"), 0..6),
            body in "[a-cé\u{301} ]{0,20}",
        ) {
            let old: Spans = old
                .into_iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(s, t)| (Style::default().fg(Color::Indexed(s)), t))
                .collect();
            let out = patch(&old, &body);
            proptest::prop_assert_eq!(out.iter().map(|(_, t)| t.as_str()).collect::<String>(), body);
            proptest::prop_assert!(out.iter().all(|(_, t)| !t.is_empty()));
            proptest::prop_assert!(out.windows(2).all(|w| w[0].0 != w[1].0));
        }
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
