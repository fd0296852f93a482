//! Text geometry for the editor: lines without their line break, grapheme boundaries, display
//! widths (tabs expanded, wide and combining characters at their real width), word motion.

use std::borrow::Cow;

use ropey::{Rope, RopeSlice};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Columns between tab stops.
pub const TAB_WIDTH: usize = 4;

/// Number of chars of the line break at the end of `line` (0, 1, or 2 for CRLF).
pub fn eol_len(line: RopeSlice<'_>) -> usize {
    let n = line.len_chars();
    if n == 0 {
        return 0;
    }
    let last = line.char(n - 1);
    if last == '\n' && n >= 2 && line.char(n - 2) == '\r' {
        2
    } else if is_line_break(last) {
        1
    } else {
        0
    }
}

/// Whether `s` holds any char ropey ends a line at.
pub fn has_line_break(s: &str) -> bool {
    s.chars().any(is_line_break)
}

/// The chars ropey ends a line at (CRLF, a pair, ends one too).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// A line of the text, read without copying when it lies in one chunk of the rope.
#[derive(Debug, PartialEq, Eq)]
pub struct LineAt<'a> {
    /// Which line (from 0).
    pub line: usize,
    /// The char index of its first char.
    pub start: usize,
    /// Its text without the line break.
    pub body: Cow<'a, str>,
}

/// The line that char position `pos` is on (at most the text's length, which `len` gives
/// when it is needed).
///
/// One descent to the chunk holding `pos`; the line is read from that chunk when all of it is
/// there (nearly always), and only otherwise asked of the rope. Each query of a rope checks
/// its bounds against the rope's length, and a rope whose text fits one leaf (under about
/// 1 KiB) has no length but its text's: it scans all of it, for every query. A key asked a
/// dozen.
pub fn line_at_char(rope: &Rope, pos: usize, len: impl FnOnce() -> usize) -> LineAt<'_> {
    let (chunk, c_char, c_line, n) = locate(rope, pos);
    line_from(rope, c_line + n, body_in_chunk(chunk, c_char, n, len))
}

/// The chunk holding char position `pos`, its first char's index and line, and how many
/// line breaks of the chunk come before `pos`: what ropey's `char_to_line` counts, the
/// same way.
fn locate(rope: &Rope, pos: usize) -> (&str, usize, usize, usize) {
    let (chunk, _, c_char, c_line) = rope.chunk_at_char(pos);
    let b = str_indices::chars::to_byte_idx(chunk, pos - c_char);
    (
        chunk,
        c_char,
        c_line,
        str_indices::lines::from_byte_idx(chunk, b),
    )
}

/// Line `line` (below the text's line count): [`line_at_char`] for a line given by its
/// number.
pub fn line_body(rope: &Rope, line: usize, len: impl FnOnce() -> usize) -> LineAt<'_> {
    // The chunk holding the line break before the line (the start of the text is break 0).
    let (chunk, _, c_char, c_line) = rope.chunk_at_line_break(line);
    line_from(rope, line, body_in_chunk(chunk, c_char, line - c_line, len))
}

/// Line `line` as read from a chunk (its first char's index and its text), or, when it was
/// not all in the chunk (`None`), as the rope's line queries give it.
fn line_from<'a>(rope: &'a Rope, line: usize, in_chunk: Option<(usize, &'a str)>) -> LineAt<'a> {
    match in_chunk {
        Some((start, body)) => LineAt {
            line,
            start,
            body: Cow::Borrowed(body),
        },
        None => LineAt {
            line,
            start: rope.line_to_char(line),
            body: Cow::Owned(line_text(rope, line)),
        },
    }
}

/// The `n`th line (from 0) starting in `chunk`, whose first char is char `c_char` of a text
/// of `len()` chars: its first char's index and its text without the line break, if all of it
/// is in this chunk. (ropey never splits a CRLF pair between chunks.)
fn body_in_chunk(
    chunk: &str,
    c_char: usize,
    n: usize,
    len: impl FnOnce() -> usize,
) -> Option<(usize, &str)> {
    // The line's start: after the chunk's `n`th line break, or the chunk's own start, which
    // is a line's start only at the start of the text.
    let start = if n == 0 {
        (c_char == 0).then_some(0)?
    } else {
        str_indices::lines::to_byte_idx(chunk, n)
    };
    let end = str_indices::lines::to_byte_idx(chunk, n + 1);
    let full = &chunk[start..end];
    let body = strip_eol(full);
    // Ended by the chunk, not by a line break: the line goes on in the next chunk, unless
    // this is the last.
    if body.len() == full.len()
        && end == chunk.len()
        && c_char + str_indices::chars::count(chunk) < len()
    {
        return None;
    }
    Some((c_char + str_indices::chars::count(&chunk[..start]), body))
}

/// The line char position `pos` is on (at most the text's length): ropey's `char_to_line`,
/// with one descent and no check of the bounds (see [`line_at_char`]).
pub fn line_of_char(rope: &Rope, pos: usize) -> usize {
    let (_, _, c_line, n) = locate(rope, pos);
    c_line + n
}

/// `line` without the line break it ends with, if any (CRLF is one).
fn strip_eol(line: &str) -> &str {
    if let Some(body) = line.strip_suffix("\r\n") {
        return body;
    }
    match line.chars().next_back() {
        Some(c) if is_line_break(c) => &line[..line.len() - c.len_utf8()],
        _ => line,
    }
}

/// Chars in line `idx`, without its line break.
pub fn line_len(rope: &Rope, idx: usize) -> usize {
    let line = rope.line(idx);
    line.len_chars() - eol_len(line)
}

/// The text of line `idx` without its line break.
pub fn line_text(rope: &Rope, idx: usize) -> String {
    let line = rope.line(idx);
    line.slice(..line.len_chars() - eol_len(line)).to_string()
}

/// Display width of one grapheme at display column `col`.
pub fn grapheme_width(g: &str, col: usize) -> usize {
    if g == "\t" {
        TAB_WIDTH - col % TAB_WIDTH
    } else if g.chars().next().is_some_and(char::is_control) {
        // Control characters are drawn as one replacement cell.
        1
    } else {
        g.width()
    }
}

/// Display column of char offset `col` in `line` (tabs expanded).
pub fn display_col(line: &str, col: usize) -> usize {
    // Printable ASCII before `col` and ASCII (or the end) at it, as in most code: every char
    // before is a grapheme one column wide (no ASCII char extends a grapheme, and CR is not
    // printable), so the column is `col`, without segmenting the line.
    let bytes = line.as_bytes();
    if bytes
        .get(..col)
        .is_some_and(|before| before.iter().all(|b| (0x20..0x7f).contains(b)))
        && bytes.get(col).is_none_or(u8::is_ascii)
    {
        return col;
    }
    display_col_segmented(line, col)
}

/// [`display_col`], grapheme by grapheme.
fn display_col_segmented(line: &str, col: usize) -> usize {
    let mut x = 0;
    let mut chars = 0;
    for g in line.graphemes(true) {
        if chars >= col {
            break;
        }
        x += grapheme_width(g, x);
        chars += g.chars().count();
    }
    x
}

/// The char offset in `line` whose display column is the largest not beyond `target`.
pub fn char_at_display_col(line: &str, target: usize) -> usize {
    let mut x = 0;
    let mut chars = 0;
    for g in line.graphemes(true) {
        let w = grapheme_width(g, x);
        if x + w > target {
            break;
        }
        x += w;
        chars += g.chars().count();
    }
    chars
}

/// The grapheme boundary before char offset `col` in `line` (0 at the start).
pub fn prev_boundary(line: &str, col: usize) -> usize {
    let mut best = 0;
    let mut chars = 0;
    for g in line.graphemes(true) {
        if chars >= col {
            break;
        }
        best = chars;
        chars += g.chars().count();
    }
    best
}

/// The grapheme boundary after char offset `col` in `line` (the line length at the end).
pub fn next_boundary(line: &str, col: usize) -> usize {
    let mut chars = 0;
    for g in line.graphemes(true) {
        chars += g.chars().count();
        if chars > col {
            return chars;
        }
    }
    chars
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Class {
    Space,
    Word,
    Punct,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if c.is_alphanumeric() || c == '_' {
        Class::Word
    } else {
        Class::Punct
    }
}

/// Start of the next word after `pos` (Ctrl-Right), crossing lines.
pub fn next_word(rope: &Rope, pos: usize) -> usize {
    let len = rope.len_chars();
    let mut i = pos;
    if i >= len {
        return len;
    }
    let start = class(rope.char(i));
    while i < len && class(rope.char(i)) == start && start != Class::Space {
        i += 1;
    }
    while i < len && class(rope.char(i)) == Class::Space {
        i += 1;
    }
    i
}

/// Start of the word before `pos` (Ctrl-Left), crossing lines.
pub fn prev_word(rope: &Rope, pos: usize) -> usize {
    let mut i = pos;
    while i > 0 && class(rope.char(i - 1)) == Class::Space {
        i -= 1;
    }
    if i == 0 {
        return 0;
    }
    let c = class(rope.char(i - 1));
    while i > 0 && class(rope.char(i - 1)) == c {
        i -= 1;
    }
    i
}

/// Leading whitespace of `line` up to char `col` (what Enter copies for auto-indent).
pub fn indent_of(line: &str, col: usize) -> String {
    line.chars()
        .take(col)
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_expand_tabs_and_respect_wide_and_combining_chars() {
        assert_eq!(display_col("\tx", 1), 4);
        assert_eq!(display_col("ab\tx", 3), 4);
        assert_eq!(display_col("日本x", 2), 4);
        assert_eq!(
            display_col("e\u{301}x", 2),
            1,
            "a combining mark takes no column"
        );
        assert_eq!(
            char_at_display_col("日本x", 3),
            1,
            "inside a wide char snaps left"
        );
        assert_eq!(char_at_display_col("\tx", 2), 0);
        assert_eq!(char_at_display_col("abc", 99), 3);
    }

    #[test]
    fn graphemes_move_as_one() {
        let s = "ae\u{301}👩\u{200d}💻b";
        assert_eq!(next_boundary(s, 1), 3);
        assert_eq!(next_boundary(s, 3), 6);
        assert_eq!(prev_boundary(s, 6), 3);
        assert_eq!(prev_boundary(s, 3), 1);
        assert_eq!(prev_boundary(s, 0), 0);
        assert_eq!(next_boundary(s, 7), 7);
    }

    #[test]
    fn lines_know_their_breaks() {
        let r = Rope::from_str("a\r\nbc\n\nd");
        assert_eq!(r.len_lines(), 4);
        assert_eq!(
            (
                line_len(&r, 0),
                line_len(&r, 1),
                line_len(&r, 2),
                line_len(&r, 3)
            ),
            (1, 2, 0, 1)
        );
        assert_eq!(line_text(&r, 0), "a");
        let wide = Rope::from_str("a\t界x\r\nb");
        for col in 0..5 {
            assert_eq!(
                display_col(&line_at_char(&wide, col, || wide.len_chars()).body, col),
                display_col(&line_text(&wide, 0), col)
            );
        }
    }

    #[test]
    fn words() {
        let r = Rope::from_str("let foo_bar = 1;\n  x");
        assert_eq!(next_word(&r, 0), 4);
        assert_eq!(next_word(&r, 4), 12);
        assert_eq!(prev_word(&r, 12), 4);
        assert_eq!(prev_word(&r, 19), 15);
        assert_eq!(indent_of("  \tx", 4), "  \t");
    }

    /// What [`line_at_char`] and [`line_body`] give, worked out with line queries.
    fn queried(rope: &Rope, line: usize) -> LineAt<'static> {
        LineAt {
            line,
            start: rope.line_to_char(line),
            body: Cow::Owned(line_text(rope, line)),
        }
    }

    proptest::proptest! {
        /// Lines read from a chunk are the lines the rope's queries give, for texts of many
        /// chunks (built whole, or by inserts, which split chunks elsewhere), every line break
        /// ropey knows, and chars of every UTF-8 length.
        #[test]
        fn lines_read_from_chunks_are_the_ropes_lines(
            picks in proptest::collection::vec((0usize..16, 1usize..40), 0..64),
            inserts in proptest::collection::vec((0usize..10_000, 0usize..16, 1usize..40), 0..12),
        ) {
            const PIECES: &[&str] = &[
                "a", "bc", "\n", "\r\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}",
                "\u{2029}", "é", "漢", "👍", "\t", "xyz ", "\n\n",
            ];
            let text: String = picks.iter().map(|&(i, n)| PIECES[i].repeat(n)).collect();
            let mut rope = Rope::from_str(&text);
            for &(at, i, n) in &inserts {
                let at = at % (rope.len_chars() + 1);
                rope.insert(at, &PIECES[i].repeat(n));
            }
            let len = rope.len_chars();
            let lines: Vec<_> = (0..rope.len_lines()).map(|l| queried(&rope, l)).collect();
            for (line, want) in lines.iter().enumerate() {
                proptest::prop_assert_eq!(&line_body(&rope, line, || len), want);
            }
            for pos in 0..=len {
                let line = rope.char_to_line(pos);
                proptest::prop_assert_eq!(line_of_char(&rope, pos), line);
                let (at, want) = (line_at_char(&rope, pos, || len), &lines[line]);
                if pos == want.start {
                    proptest::prop_assert_eq!(&at, want, "at {}", pos);
                } else {
                    // The same line's text again: its length says enough.
                    let got = (at.line, at.start, at.body.len());
                    proptest::prop_assert_eq!(got, (line, want.start, want.body.len()), "at {}", pos);
                }
            }
        }

        /// The ASCII shortcut gives the column segmenting gives, whatever the line.
        #[test]
        fn display_col_is_the_segmented_column(
            picks in proptest::collection::vec(0usize..12, 0..24),
            col in 0usize..30,
        ) {
            const PIECES: &[&str] =
                &["a", " ", "~", "\t", "\r", "\u{7}", "e\u{301}", "\u{301}", "漢", "👍🏽", "\u{200D}", "\u{903}"];
            let line: String = picks.iter().map(|&i| PIECES[i]).collect();
            proptest::prop_assert_eq!(display_col(&line, col), display_col_segmented(&line, col), "{:?} at {}", line, col);
        }
    }
}
