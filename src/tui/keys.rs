//! Key bindings: what a key means, independent of what the editor then does with it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Everything a key can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Move(Motion, bool),
    Insert(String),
    Newline,
    Tab,
    Backspace,
    Delete,
    SelectAll,
    Copy,
    Cut,
    Paste,
    Undo,
    Redo,
    Save,
    /// Load the file again from disk (it changed there).
    Reload,
    Find,
    GotoLine,
    Chat,
    Quit,
    Help,
    ShowCodes,
    FollowNext,
    ToggleMembers,
    Escape,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    Left,
    Right,
    Up,
    Down,
    WordLeft,
    WordRight,
    Home,
    End,
    PageUp,
    PageDown,
    DocStart,
    DocEnd,
}

impl Action {
    /// Whether this action would change the text (refused for viewers).
    pub fn edits(&self) -> bool {
        matches!(
            self,
            Action::Insert(_)
                | Action::Newline
                | Action::Tab
                | Action::Backspace
                | Action::Delete
                | Action::Cut
                | Action::Paste
                | Action::Undo
                | Action::Redo
        )
    }
}

/// The help overlay's rows: keys and what they do.
pub const HELP: &[(&str, &str)] = &[
    ("arrows, Home/End, PgUp/PgDn", "move (Shift: select)"),
    ("Ctrl/Alt-Left/Right", "move by word"),
    ("Ctrl-Home/End", "start / end of file"),
    ("Enter, Tab", "new line with indent, indent"),
    ("Backspace, Delete", "delete"),
    ("Ctrl-A", "select all"),
    ("Ctrl-C / Ctrl-X / Ctrl-V", "copy / cut / paste"),
    ("Ctrl-Z / Ctrl-Y", "undo / redo your own edits"),
    ("Ctrl-S", "save"),
    ("Ctrl-R", "reload from disk (asks if unsaved)"),
    ("Ctrl-F, Ctrl-G", "find (Enter: next), go to line"),
    ("Ctrl-T", "chat with the room"),
    ("F2", "show the join codes"),
    ("F3", "follow the next member (any move stops)"),
    ("F4", "show / hide the members panel"),
    ("Ctrl-Q", "quit (asks if unsaved)"),
    ("F1, Esc", "this help, close"),
];

pub fn action_for(key: KeyEvent) -> Action {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    let mv = |m| Action::Move(m, shift);
    match key.code {
        // Alt (macOS: Option) with an arrow moves by word too; so do Alt-B and Alt-F, which
        // macOS Terminal sends for Option-Left/Right when Option is the Meta key.
        KeyCode::Left if ctrl || alt => mv(Motion::WordLeft),
        KeyCode::Right if ctrl || alt => mv(Motion::WordRight),
        KeyCode::Char('b') if alt && !ctrl => mv(Motion::WordLeft),
        KeyCode::Char('f') if alt && !ctrl => mv(Motion::WordRight),
        KeyCode::Home if ctrl => mv(Motion::DocStart),
        KeyCode::End if ctrl => mv(Motion::DocEnd),
        KeyCode::Left => mv(Motion::Left),
        KeyCode::Right => mv(Motion::Right),
        KeyCode::Up => mv(Motion::Up),
        KeyCode::Down => mv(Motion::Down),
        KeyCode::Home => mv(Motion::Home),
        KeyCode::End => mv(Motion::End),
        KeyCode::PageUp => mv(Motion::PageUp),
        KeyCode::PageDown => mv(Motion::PageDown),
        KeyCode::Enter => Action::Newline,
        KeyCode::Tab => Action::Tab,
        KeyCode::Backspace => Action::Backspace,
        KeyCode::Delete => Action::Delete,
        KeyCode::Esc => Action::Escape,
        KeyCode::F(1) => Action::Help,
        KeyCode::F(2) => Action::ShowCodes,
        KeyCode::F(3) => Action::FollowNext,
        KeyCode::F(4) => Action::ToggleMembers,
        KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
            'a' => Action::SelectAll,
            'c' => Action::Copy,
            'x' => Action::Cut,
            'v' => Action::Paste,
            'z' => Action::Undo,
            'y' => Action::Redo,
            's' => Action::Save,
            'r' => Action::Reload,
            'f' => Action::Find,
            'g' => Action::GotoLine,
            't' => Action::Chat,
            'q' => Action::Quit,
            _ => Action::None,
        },
        KeyCode::Char(c) => Action::Insert(c.to_string()),
        _ => Action::None,
    }
}

/// What the characters that came right after an Escape make, read as the rest of an escape
/// sequence ([`escape_tail`]).
#[derive(Debug, PartialEq, Eq)]
pub enum EscTail {
    /// A key's sequence, whole: the key, with Alt (the Escape before it).
    Key(KeyEvent),
    /// Could still become one.
    More,
    /// Not a key's sequence: they are the characters they are.
    NotOne,
}

/// Longest CSI sequence read back (`[1;5P` and the like are six).
const MAX_TAIL: usize = 12;

/// crossterm 0.29 reads `ESC ESC [ A` (Option-Up in macOS Terminal, or Escape and an arrow
/// read at once, as over a slow link) as Escape, then `[` and `A` typed: characters that would
/// land in everybody's document. This reads such characters back into the key they were:
/// `[` params final (CSI) or `O` final (SS3), with xterm's modifier parameter.
pub fn escape_tail(chars: &[char]) -> EscTail {
    match chars {
        [] => EscTail::More,
        ['['] | ['O'] => EscTail::More,
        ['O', last] => ss3_key(*last).map_or(EscTail::NotOne, |code| {
            EscTail::Key(KeyEvent::new(code, KeyModifiers::ALT))
        }),
        ['[', rest @ ..] if rest.len() < MAX_TAIL => {
            let (params, last) = rest.split_at(rest.len() - 1);
            let last = last[0];
            if !params.iter().all(|c| c.is_ascii_digit() || *c == ';') {
                return EscTail::NotOne;
            }
            if last.is_ascii_digit() || last == ';' {
                return EscTail::More;
            }
            csi_key(params, last).map_or(EscTail::NotOne, EscTail::Key)
        }
        _ => EscTail::NotOne,
    }
}

/// The key of `ESC O last`.
fn ss3_key(last: char) -> Option<KeyCode> {
    Some(match last {
        'A' => KeyCode::Up,
        'B' => KeyCode::Down,
        'C' => KeyCode::Right,
        'D' => KeyCode::Left,
        'H' => KeyCode::Home,
        'F' => KeyCode::End,
        'P'..='S' => KeyCode::F(last as u8 - b'P' + 1),
        _ => return None,
    })
}

/// The key of `ESC [ params last`, with Alt added.
fn csi_key(params: &[char], last: char) -> Option<KeyEvent> {
    let text: String = params.iter().collect();
    let mut nums = text.split(';').map(|p| {
        if p.is_empty() {
            Some(1)
        } else {
            p.parse::<u8>().ok()
        }
    });
    let first = nums.next().unwrap_or(Some(1))?;
    let modifier = nums.next().unwrap_or(Some(1))?;
    if nums.next().is_some() {
        return None;
    }
    let code = match last {
        '~' => match first {
            1 | 7 => KeyCode::Home,
            2 => KeyCode::Insert,
            3 => KeyCode::Delete,
            4 | 8 => KeyCode::End,
            5 => KeyCode::PageUp,
            6 => KeyCode::PageDown,
            11..=15 => KeyCode::F(first - 10),
            17..=21 => KeyCode::F(first - 11),
            23 | 24 => KeyCode::F(first - 12),
            _ => return None,
        },
        'Z' => KeyCode::BackTab,
        other => ss3_key(other)?,
    };
    // xterm: the parameter is 1 + a bit mask of Shift (1), Alt (2), Ctrl (4).
    let bits = modifier.checked_sub(1)?;
    let mut mods = KeyModifiers::ALT;
    if bits & 1 != 0 || code == KeyCode::BackTab {
        mods |= KeyModifiers::SHIFT;
    }
    if bits & 4 != 0 {
        mods |= KeyModifiers::CONTROL;
    }
    Some(KeyEvent::new(code, mods))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(s: &str) -> EscTail {
        escape_tail(&s.chars().collect::<Vec<_>>())
    }

    fn key(code: KeyCode, mods: KeyModifiers) -> EscTail {
        EscTail::Key(KeyEvent::new(code, mods))
    }

    #[test]
    fn split_escape_sequences_are_read_back_into_keys() {
        let alt = KeyModifiers::ALT;
        assert_eq!(tail("[A"), key(KeyCode::Up, alt));
        assert_eq!(tail("OD"), key(KeyCode::Left, alt));
        assert_eq!(
            tail("[1;5F"),
            key(KeyCode::End, alt | KeyModifiers::CONTROL)
        );
        assert_eq!(
            tail("[1;2C"),
            key(KeyCode::Right, alt | KeyModifiers::SHIFT)
        );
        assert_eq!(tail("[3~"), key(KeyCode::Delete, alt));
        assert_eq!(
            tail("[6;5~"),
            key(KeyCode::PageDown, alt | KeyModifiers::CONTROL)
        );
        assert_eq!(tail("[15~"), key(KeyCode::F(5), alt));
        assert_eq!(tail("[24~"), key(KeyCode::F(12), alt));
        assert_eq!(tail("OP"), key(KeyCode::F(1), alt));
        assert_eq!(tail("[Z"), key(KeyCode::BackTab, alt | KeyModifiers::SHIFT));
        for more in ["", "[", "O", "[1", "[1;", "[1;5"] {
            assert_eq!(tail(more), EscTail::More, "{more:?}");
        }
        // What a person types after Escape stays text.
        for text in [
            "x",
            "[x",
            "[1x",
            "Ox",
            "[99~",
            "[256~",
            "[300A",
            "[1;2;3A",
            "[;;;;;;;;;;;;A",
            "a[",
        ] {
            assert_eq!(tail(text), EscTail::NotOne, "{text:?}");
        }
    }

    #[test]
    fn alt_arrows_and_meta_b_f_move_by_word() {
        for (code, mods, motion) in [
            (KeyCode::Left, KeyModifiers::ALT, Motion::WordLeft),
            (KeyCode::Right, KeyModifiers::ALT, Motion::WordRight),
            (KeyCode::Char('b'), KeyModifiers::ALT, Motion::WordLeft),
            (KeyCode::Char('f'), KeyModifiers::ALT, Motion::WordRight),
        ] {
            assert_eq!(
                action_for(KeyEvent::new(code, mods)),
                Action::Move(motion, false)
            );
        }
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('b'), KeyModifiers::NONE)),
            Action::Insert("b".into())
        );
    }
}
