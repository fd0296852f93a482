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
    ("Ctrl-Left/Right", "move by word"),
    ("Ctrl-Home/End", "start / end of file"),
    ("Enter, Tab", "new line with indent, indent"),
    ("Backspace, Delete", "delete"),
    ("Ctrl-A", "select all"),
    ("Ctrl-C / Ctrl-X / Ctrl-V", "copy / cut / paste"),
    ("Ctrl-Z / Ctrl-Y", "undo / redo your own edits"),
    ("Ctrl-S", "save"),
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
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    let mv = |m| Action::Move(m, shift);
    match key.code {
        KeyCode::Left if ctrl => mv(Motion::WordLeft),
        KeyCode::Right if ctrl => mv(Motion::WordRight),
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
