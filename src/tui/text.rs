//! Text geometry for the editor: lines without their line break, grapheme boundaries, display
//! widths (tabs expanded, wide and combining characters at their real width), word motion.

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
    } else if matches!(
        last,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    ) {
        1
    } else {
        0
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

/// Display column of char `col` of line `line` (as [`display_col`] of its text), without
/// copying the line when it lies in one piece of the rope (a line almost always does).
pub fn display_col_at(rope: &Rope, line: usize, col: usize) -> usize {
    let slice = rope.line(line);
    let body = slice.slice(..slice.len_chars() - eol_len(slice));
    match body.as_str() {
        Some(text) => display_col(text, col),
        None => display_col(&body.to_string(), col),
    }
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
                display_col_at(&wide, 0, col),
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

    proptest::proptest! {
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
