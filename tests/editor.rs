//! The editor without a terminal: state updates from keys, and whole-screen snapshots drawn with
//! ratatui's `TestBackend`. Two detached sessions exchange frames directly (no relay) where a test
//! needs a teammate.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use pairedit::client::{ClientState, SessionHandle};
use pairedit::fsutil::Stamp;
use pairedit::protocol::Role;
use pairedit::sync::{Edit, SharedDoc};
use pairedit::tui::app::{App, Codes, Mode};
use pairedit::tui::highlight::{DEFAULT_THEME, Highlighter, Spans, load_theme};
use pairedit::tui::update::{Effect, Msg, update};
use pairedit::tui::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

fn session(text: &str, role: Role, name: &str) -> SessionHandle {
    let mut doc = SharedDoc::new();
    doc.apply_local(&Edit::insert(0, text)).unwrap();
    doc.set_meta("name", "main.rs");
    doc.set_meta("language", "Rust");
    // What a host loads reaches the relay in the sync handshake, not as queued edits.
    let _ = doc.take_outgoing();
    // Each edit its own undo step, so tests can count them.
    doc.enable_undo(0);
    let mut st = ClientState::detached(doc, role, name);
    st.synced = true;
    SessionHandle::detached(st)
}

/// A synced session with an empty document, as a member joining an existing room starts.
fn joiner(role: Role, name: &str) -> SessionHandle {
    let mut st = ClientState::detached(SharedDoc::new(), role, name);
    st.synced = true;
    SessionHandle::detached(st)
}

fn app_on(session: SessionHandle) -> App {
    let lang = session.lock().doc.meta("language").unwrap_or_default();
    App::new(
        session,
        None,
        Highlighter::new(&lang, load_theme(DEFAULT_THEME).unwrap()),
    )
}

fn app(text: &str) -> App {
    app_on(session(text, Role::Writer, "me"))
}

fn press(app: &mut App, code: KeyCode, mods: KeyModifiers) -> Vec<Effect> {
    update(app, Msg::Key(KeyEvent::new(code, mods)))
}

fn key(app: &mut App, code: KeyCode) -> Vec<Effect> {
    press(app, code, KeyModifiers::NONE)
}

fn ctrl(app: &mut App, c: char) -> Vec<Effect> {
    press(app, KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn type_str(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn text(app: &App) -> String {
    app.session.lock().doc.text()
}

/// Delivers everything `from` has to send to `to`, and the replies back, until both are quiet.
fn exchange(a: &SessionHandle, b: &SessionHandle) {
    for _ in 0..10 {
        let (to_b, to_a) = (a.lock().outgoing(true), b.lock().outgoing(true));
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        for f in to_b {
            for reply in b.lock().receive(&f).unwrap() {
                a.lock().receive(&reply).unwrap();
            }
        }
        for f in to_a {
            for reply in a.lock().receive(&f).unwrap() {
                b.lock().receive(&reply).unwrap();
            }
        }
    }
}

/// Joins `b` to `a` the way the relay would: each sends sync step 1, the other answers.
fn sync_pair(a: &SessionHandle, b: &SessionHandle) {
    let sv_a = pairedit::protocol::sync_step1(&a.lock().doc.state_vector());
    let sv_b = pairedit::protocol::sync_step1(&b.lock().doc.state_vector());
    for r in b.lock().receive(&sv_a).unwrap() {
        a.lock().receive(&r).unwrap();
    }
    for r in a.lock().receive(&sv_b).unwrap() {
        b.lock().receive(&r).unwrap();
    }
    exchange(a, b);
}

fn screen(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::draw(f, app)).unwrap();
    t
}

fn screen_text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            let mut line = String::new();
            let mut x = 0;
            while x < buf.area.width {
                let cell = &buf[(x, y)];
                line.push_str(cell.symbol());
                x += unicode_width::UnicodeWidthStr::width(cell.symbol()).max(1) as u16;
            }
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Finds the screen cell where `needle` starts on some row.
fn cell_of(t: &Terminal<TestBackend>, needle: &str) -> (u16, u16) {
    let buf = t.backend().buffer();
    for y in 0..buf.area.height {
        let row: Vec<String> = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        let joined = row.concat();
        if let Some(byte) = joined.find(needle) {
            // Map the byte offset back to a column (symbols may be wider than one byte).
            let mut acc = 0;
            for (x, s) in row.iter().enumerate() {
                if acc >= byte {
                    return (x as u16, y);
                }
                acc += s.len();
            }
        }
    }
    panic!("{needle:?} not on screen:\n{}", screen_text(t));
}

#[test]
fn typing_enter_autoindent_tab_and_backspace() {
    let mut a = app("fn main() {\n    let x = 1;\n}\n");
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::End);
    key(&mut a, KeyCode::Enter);
    type_str(&mut a, "let y = 2;");
    assert_eq!(text(&a), "fn main() {\n    let x = 1;\n    let y = 2;\n}\n");
    key(&mut a, KeyCode::Home); // smart home: first non-blank
    key(&mut a, KeyCode::Tab);
    assert_eq!(
        text(&a),
        "fn main() {\n    let x = 1;\n        let y = 2;\n}\n"
    );
    key(&mut a, KeyCode::Backspace);
    key(&mut a, KeyCode::Backspace);
    assert_eq!(
        text(&a),
        "fn main() {\n    let x = 1;\n      let y = 2;\n}\n"
    );
    // Enter twice: the line between holds no trailing whitespace, the indent goes on.
    key(&mut a, KeyCode::End);
    key(&mut a, KeyCode::Enter);
    key(&mut a, KeyCode::Enter);
    type_str(&mut a, "z");
    assert_eq!(
        text(&a),
        "fn main() {\n    let x = 1;\n      let y = 2;\n\n      z\n}\n"
    );
    // Enter at the first non-blank: the same, the text goes down with its indent.
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Enter);
    type_str(&mut a, "w");
    assert_eq!(
        text(&a),
        "fn main() {\n    let x = 1;\n      let y = 2;\n\n\n      wz\n}\n"
    );
    // Whitespace typed between words is text: it stays where Enter splits the line.
    key(&mut a, KeyCode::End);
    type_str(&mut a, "  ");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        text(&a),
        "fn main() {\n    let x = 1;\n      let y = 2;\n\n\n      wz  \n      \n}\n"
    );
    let st = a.session.lock();
    assert_eq!(
        st.doc.text(),
        st.doc.ytext(),
        "the CRDT saw every keystroke"
    );
}

#[test]
fn crlf_files_stay_crlf_and_graphemes_delete_whole() {
    let mut a = app("a\r\nb\r\n");
    assert_eq!(a.line_ending, "\r\n");
    key(&mut a, KeyCode::End);
    key(&mut a, KeyCode::Enter);
    type_str(&mut a, "é");
    assert_eq!(text(&a), "a\r\né\r\nb\r\n");
    // Backspace at a line start joins lines: both chars of the CRLF go.
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Backspace);
    assert_eq!(text(&a), "aé\r\nb\r\n");
    // Right never stops inside a CRLF; Delete at line end removes it whole.
    key(&mut a, KeyCode::End);
    key(&mut a, KeyCode::Delete);
    assert_eq!(text(&a), "aéb\r\n");

    let mut g = app("xe\u{301}👩\u{200d}💻y");
    key(&mut g, KeyCode::End);
    key(&mut g, KeyCode::Left);
    key(&mut g, KeyCode::Backspace);
    assert_eq!(text(&g), "xe\u{301}y", "the ZWJ emoji goes as one");
    key(&mut g, KeyCode::Backspace);
    assert_eq!(text(&g), "xy", "e + combining accent goes as one");
}

#[test]
fn paste_normalises_line_breaks_and_replaces_the_selection() {
    let mut a = app("one\r\ntwo\r\n");
    ctrl(&mut a, 'a');
    update(&mut a, Msg::Paste("x\ny\rz".into()));
    assert_eq!(text(&a), "x\r\ny\r\nz");
    press(&mut a, KeyCode::Left, KeyModifiers::SHIFT);
    ctrl(&mut a, 'x');
    assert_eq!(text(&a), "x\r\ny\r\n");
    key(&mut a, KeyCode::Home);
    ctrl(&mut a, 'v');
    assert_eq!(text(&a), "x\r\ny\r\nz");
}

#[test]
fn undo_redo_are_per_user_with_a_teammate_interleaving() {
    let ana = session("", Role::Writer, "ana");
    let bo = session("", Role::Writer, "bo");
    // bo starts from ana's document, like a joiner would.
    *bo.lock() = {
        let mut doc = SharedDoc::new();
        doc.enable_undo(0);
        let mut st = ClientState::detached(doc, Role::Writer, "bo");
        st.synced = true;
        st
    };
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    let mut b = app_on(bo.clone());
    type_str(&mut a, "A1 ");
    exchange(&ana, &bo);
    update(&mut b, Msg::Remote);
    key(&mut b, KeyCode::End);
    type_str(&mut b, "B1 ");
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    key(&mut a, KeyCode::End);
    type_str(&mut a, "A2 ");
    exchange(&ana, &bo);
    update(&mut b, Msg::Remote);
    key(&mut b, KeyCode::End);
    type_str(&mut b, "B2");
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    assert_eq!(text(&a), "A1 B1 A2 B2");
    assert_eq!(text(&b), text(&a));

    // ana undoes everything she typed: only her characters go, bo's stay.
    for _ in 0.."A1 A2 ".len() {
        ctrl(&mut a, 'z');
    }
    exchange(&ana, &bo);
    update(&mut b, Msg::Remote);
    assert_eq!(text(&a), "B1 B2");
    assert_eq!(text(&b), "B1 B2");
    let effects = ctrl(&mut a, 'z');
    assert!(effects.is_empty());
    assert_eq!(
        a.status.as_ref().map(|s| s.0.as_str()),
        Some("nothing of yours to undo")
    );
    // bo undoes one step: his last character.
    ctrl(&mut b, 'z');
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    assert_eq!(text(&a), "B1 B");
    // ana redoes two steps.
    ctrl(&mut a, 'y');
    ctrl(&mut a, 'y');
    exchange(&ana, &bo);
    update(&mut b, Msg::Remote);
    assert_eq!(text(&a), text(&b));
    assert_eq!(text(&a).matches('A').count(), 1, "{}", text(&a));
    for s in [&ana, &bo] {
        let st = s.lock();
        assert_eq!(st.doc.text(), st.doc.ytext());
    }
}

#[test]
fn a_viewer_can_move_find_and_chat_but_never_edits() {
    let viewer = session("let a = 1;\nlet b = 2;\n", Role::Viewer, "cy");
    let _ = viewer.lock().outgoing(true);
    let mut v = app_on(viewer.clone());
    for k in [
        KeyCode::Char('x'),
        KeyCode::Enter,
        KeyCode::Backspace,
        KeyCode::Delete,
        KeyCode::Tab,
    ] {
        key(&mut v, k);
        assert_eq!(
            v.status.as_ref().map(|s| s.0.as_str()),
            Some("read-only: you joined with a view code")
        );
    }
    ctrl(&mut v, 'v');
    ctrl(&mut v, 'z');
    update(&mut v, Msg::Paste("pasted".into()));
    assert_eq!(text(&v), "let a = 1;\nlet b = 2;\n");
    assert!(!viewer.lock().doc.has_outgoing(), "nothing to send");
    // Moving, selecting, copying and searching all work.
    ctrl(&mut v, 'f');
    type_str(&mut v, "b =");
    key(&mut v, KeyCode::Esc);
    assert_eq!(v.selection(), Some((15, 18)));
    ctrl(&mut v, 'c');
    assert_eq!(v.clipboard, "b =");
    ctrl(&mut v, 't');
    type_str(&mut v, "hi all");
    let effects = key(&mut v, KeyCode::Enter);
    assert_eq!(effects, vec![Effect::Flush]);
    assert_eq!(
        viewer.lock().chat().back().map(|c| c.text.as_str()),
        Some("hi all")
    );
    assert!(matches!(ctrl(&mut v, 's').as_slice(), []));
}

#[test]
fn goto_line_find_wraps_and_save_and_quit_flow() {
    let mut a = app("alpha\nbeta\ngamma\nbeta\n");
    a.path = Some("/tmp/x.rs".into());
    ctrl(&mut a, 'g');
    type_str(&mut a, "3");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.cursor, 11);
    ctrl(&mut a, 'f');
    type_str(&mut a, "beta");
    assert_eq!(
        a.selection(),
        Some((17, 21)),
        "finds forward from the cursor"
    );
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.selection(), Some((6, 10)), "and wraps around");
    let shown = screen_text(&screen(&mut a, 60, 6));
    assert!(
        shown.contains("find: beta") && !shown.contains("not found"),
        "{shown}"
    );
    key(&mut a, KeyCode::Esc);
    // A query with no match says so where the query is typed, and moves nothing.
    ctrl(&mut a, 'f');
    type_str(&mut a, "zz");
    let shown = screen_text(&screen(&mut a, 60, 6));
    assert!(shown.contains("find (not found): zz"), "{shown}");
    assert_eq!(a.selection(), Some((6, 10)));
    key(&mut a, KeyCode::Esc);
    type_str(&mut a, "!");
    assert!(a.dirty);
    // Quit asks when there are unsaved changes; "y" saves first.
    assert!(ctrl(&mut a, 'q').is_empty());
    assert_eq!(a.mode, Mode::ConfirmQuit);
    let effects = key(&mut a, KeyCode::Char('y'));
    let Some(Effect::Save {
        path,
        text: saved,
        generation,
        force: false,
        ..
    }) = effects.into_iter().next()
    else {
        panic!("expected a save");
    };
    assert_eq!(saved, "alpha\n!\ngamma\nbeta\n");
    let stamp = Stamp {
        modified: None,
        len: 20,
    };
    let effects = update(
        &mut a,
        Msg::Saved {
            generation,
            result: Ok((path, stamp)),
        },
    );
    assert_eq!(effects, vec![Effect::Quit]);
    assert!(!a.dirty);
    assert_eq!(a.disk, Some(stamp));
}

/// Ctrl-S, and the save it asks for written as the editor's loop writes it: the save's
/// generation and result, for `Msg::Saved`.
fn save_as_asked(
    a: &mut App,
) -> (
    u64,
    Result<(std::path::PathBuf, Stamp), pairedit::fsutil::SaveError>,
) {
    let Some(Effect::Save {
        path,
        text,
        generation,
        expect,
        force,
    }) = ctrl(a, 's').pop()
    else {
        panic!("expected a save");
    };
    let result = pairedit::fsutil::save_checked(&path, &text, expect, force).map(|s| (path, s));
    (generation, result)
}

#[test]
fn a_file_changed_on_disk_asks_before_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(&file, "fn a() {}\n").unwrap();
    let mut a = app("fn a() {}\n");
    a.path = Some(file.clone());
    a.disk = pairedit::fsutil::stamp(&file);
    type_str(&mut a, "// mine ");
    // Someone else writes the file meanwhile.
    std::fs::write(&file, "fn a() {} // theirs, longer\n").unwrap();
    let (generation, result) = save_as_asked(&mut a);
    assert!(result.is_err(), "the check refuses to clobber");
    update(&mut a, Msg::Saved { generation, result });
    assert_eq!(a.mode, Mode::ConfirmOverwrite);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "fn a() {} // theirs, longer\n"
    );
    // "w" writes beside the file instead.
    let Some(Effect::Save {
        path,
        force: true,
        expect: None,
        ..
    }) = key(&mut a, KeyCode::Char('w')).pop()
    else {
        panic!("expected a forced save beside the file");
    };
    assert_eq!(path, dir.path().join("x.rs.pairedit"));
    // Asked again, "o" overwrites.
    a.saving = false;
    update(
        &mut a,
        Msg::Saved {
            generation,
            result: Err(pairedit::fsutil::SaveError::ChangedOnDisk("x".into())),
        },
    );
    let Some(Effect::Save {
        path, force: true, ..
    }) = key(&mut a, KeyCode::Char('o')).pop()
    else {
        panic!("expected a forced save");
    };
    assert_eq!(path, file);
}

/// A tick's look at the file, run as the editor's loop runs it: the message it sends, if any.
fn look(a: &mut App) -> Option<Msg> {
    let effects = update(a, Msg::Tick);
    let Some(Effect::CheckDisk {
        path,
        epoch,
        expect,
        text,
        said,
    }) = effects
        .into_iter()
        .find(|e| matches!(e, Effect::CheckDisk { .. }))
    else {
        panic!("expected a look at the file");
    };
    pairedit::tui::update::look_at_file(&path, epoch, expect, text, said)
}

/// Ctrl-R (and `y` when it asks), run as the editor's loop runs it.
fn reload_as_asked(a: &mut App, keys: &[KeyCode]) {
    let mut effects = ctrl(a, 'r');
    for &k in keys {
        effects.extend(key(a, k));
    }
    let Some(Effect::Reload { path, epoch }) = effects.pop() else {
        panic!("expected a reload");
    };
    let msg = pairedit::tui::update::read_file_again(&path, epoch);
    update(a, msg);
}

/// A file changed on disk by someone else (a `git pull`, a formatter) is noticed within a tick
/// and said on the status line; Ctrl-R loads it into the room as one edit of what differs
/// (asking first over unsaved edits); a file rewritten with the same text is not news; our
/// own saves are not mistaken for someone else's.
#[test]
fn a_file_changed_on_disk_is_noticed_and_ctrl_r_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(&file, "fn a() {}\nfn b() {}\n").unwrap();
    let s = session("fn a() {}\nfn b() {}\n", Role::Writer, "me");
    let mut a = app_on(s.clone());
    a.path = Some(file.clone());
    a.disk = pairedit::fsutil::stamp(&file);
    assert!(look(&mut a).is_none(), "as loaded: nothing to say");
    // Rewritten with the same text (a formatter with nothing to do): adopted quietly.
    let old = a.disk;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, "fn a() {}\nfn b() {}\n").unwrap();
    let msg = look(&mut a).expect("the stamp changed");
    update(&mut a, msg);
    assert!(a.disk_changed.is_none() && a.disk != old);
    // Changed by someone else.
    std::fs::write(&file, "fn a() {}\nfn b2() {}\nfn c() {}\n").unwrap();
    let msg = look(&mut a).expect("a change");
    update(&mut a, msg);
    assert!(a.disk_changed.is_some());
    let shown = screen_text(&screen(&mut a, 120, 6));
    assert!(
        shown.contains("x.rs [changed on disk]") && shown.contains("Ctrl-R loads it"),
        "{shown}"
    );
    assert!(look(&mut a).is_none(), "said once, not every second");
    // Ctrl-R: the room's text is the file's, by one edit of what differs.
    s.lock().outgoing(false);
    reload_as_asked(&mut a, &[]);
    assert_eq!(text(&a), "fn a() {}\nfn b2() {}\nfn c() {}\n");
    assert_eq!(s.lock().doc.outgoing_len(), 1, "one edit");
    assert!(!a.dirty && a.disk_changed.is_none());
    assert_eq!(a.disk, pairedit::fsutil::stamp(&file));
    // Over unsaved edits it asks; any key but y keeps them.
    type_str(&mut a, "// mine\n");
    std::fs::write(&file, "theirs\n").unwrap();
    let msg = look(&mut a).expect("a change");
    update(&mut a, msg);
    assert!(ctrl(&mut a, 'r').is_empty());
    assert_eq!(a.mode, Mode::ConfirmReload);
    key(&mut a, KeyCode::Char('n'));
    assert!(text(&a).starts_with("// mine"));
    reload_as_asked(&mut a, &[KeyCode::Char('y')]);
    assert_eq!(text(&a), "theirs\n");
    // Our own save changes the file too: not someone else's change.
    type_str(&mut a, "ours ");
    let (generation, result) = save_as_asked(&mut a);
    update(&mut a, Msg::Saved { generation, result });
    assert!(look(&mut a).is_none());
    assert!(a.disk_changed.is_none());
    // Gone from disk: said, and saving writes it again.
    std::fs::remove_file(&file).unwrap();
    let msg = look(&mut a).expect("gone");
    update(&mut a, msg);
    let shown = screen_text(&screen(&mut a, 120, 6));
    assert!(shown.contains("[gone from disk]"), "{shown}");
}

/// Quitting asks first when it would cost something besides unsaved changes to the file: the
/// host's teammates (its relay stops with it), edits the relay has not got (offline), which a
/// member without a file of their own keeps in one; connected, edits go out as we leave.
#[test]
fn quitting_asks_before_it_strands_teammates_or_loses_edits_the_relay_lacks() {
    use pairedit::client::Connection;
    // A host with a teammate in the room.
    let host = session("fn main() {}\n", Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&host, &bo);
    host.lock().connection = Connection::Connected;
    let mut a = app_on(host.clone());
    update(&mut a, Msg::Remote);
    a.hosting = true;
    assert_eq!(ctrl(&mut a, 'q'), vec![], "asks first");
    assert_eq!(a.mode, Mode::ConfirmLeave);
    let asked = screen_text(&screen(&mut a, 140, 6));
    assert!(
        asked.contains("1 other here will be disconnected"),
        "{asked}"
    );
    assert_eq!(
        key(&mut a, KeyCode::Char('x')),
        vec![],
        "any other key stays"
    );
    assert_eq!(a.mode, Mode::Normal);
    ctrl(&mut a, 'q');
    assert_eq!(key(&mut a, KeyCode::Char('y')), vec![Effect::Quit]);
    // Not hosting (the relay runs elsewhere): nothing to ask.
    a.hosting = false;
    assert_eq!(ctrl(&mut a, 'q'), vec![Effect::Quit]);

    // A member without a file, typing while the relay is away.
    let me = session("shared\n", Role::Writer, "cy");
    me.lock().connection = Connection::Reconnecting {
        attempt: 3,
        reason: "could not reach the relay".into(),
    };
    let mut c = app_on(me.clone());
    type_str(&mut c, "offline words ");
    assert!(me.lock().queued_updates() > 0);
    ctrl(&mut c, 'q');
    assert_eq!(c.mode, Mode::ConfirmLeave);
    let asked = screen_text(&screen(&mut c, 140, 6));
    assert!(asked.contains("not on the relay yet"), "{asked}");
    assert!(asked.contains("keeping the text in a file"), "{asked}");
    let Some(Effect::Save {
        path,
        text,
        generation,
        force: true,
        ..
    }) = key(&mut c, KeyCode::Char('y')).pop()
    else {
        panic!("expected the text written to a file");
    };
    let name = path.display().to_string();
    assert!(name.starts_with("main.rs.unsent-"), "{name}");
    assert_eq!(text.to_string(), "offline words shared\n");
    // Written (here into a temp dir), the editor quits and says where the text is.
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join(&path);
    let result = pairedit::fsutil::save_checked(&written, &text, None, true).map(|s| (path, s));
    assert_eq!(
        update(&mut c, Msg::Saved { generation, result }),
        vec![Effect::Quit]
    );
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        "offline words shared\n"
    );
    assert!(c.kept.is_some());
    // Back online, the same edits would go out as we leave: no question.
    me.lock().connection = Connection::Connected;
    let mut d = app_on(me.clone());
    assert_eq!(ctrl(&mut d, 'q'), vec![Effect::Quit]);
}

/// A paste larger than the relay takes in one message is refused with the reason and the fix,
/// before it touches the text: pasted, it would keep the member offline (every reconnect would
/// send it again) and the other members' typing would never arrive.
#[test]
fn a_paste_the_relay_could_never_take_is_refused_with_the_fix() {
    let s = session("ok\n", Role::Writer, "me");
    s.lock().relay_max_frame = Some(1 << 20);
    let mut a = app_on(s.clone());
    let huge = "x".repeat(1_500_000);
    update(&mut a, Msg::Paste(huge.clone()));
    assert_eq!(text(&a), "ok\n", "nothing pasted");
    assert_eq!(s.lock().queued_updates(), 0, "nothing to send");
    let said = screen_text(&screen(&mut a, 200, 6));
    assert!(
        said.contains("not pasted") && said.contains("--max-frame"),
        "{said}"
    );
    // Ctrl-V of the same from the editor's own clipboard: refused alike.
    a.clipboard = huge;
    ctrl(&mut a, 'v');
    assert_eq!(text(&a), "ok\n");
    // What fits is pasted.
    update(&mut a, Msg::Paste("y".repeat(500_000)));
    assert_eq!(text(&a).len(), 500_003);
    // Offline (nothing has been sent), edits pile up for one message on reconnect: a second
    // paste that fits alone but not with the first is refused, saying why.
    update(&mut a, Msg::Paste("z".repeat(500_000)));
    assert_eq!(text(&a).len(), 500_003, "the second paste waits");
    let said = screen_text(&screen(&mut a, 300, 6));
    assert!(said.contains("not yet on the relay"), "{said}");
    // Once they are sent, it fits.
    let _sent = s.lock().outgoing(false);
    update(&mut a, Msg::Paste("z".repeat(500_000)));
    assert_eq!(text(&a).len(), 1_000_003);
}

/// A member's cursor is shown (and can be followed) from the start, not from their first
/// move; and a screen made narrow and wide again does not stay scrolled sideways.
#[test]
fn a_cursor_shows_from_the_start_and_a_widened_screen_scrolls_back() {
    let ana = session("hello\n", Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&ana, &bo);
    let _a = app_on(ana.clone());
    exchange(&ana, &bo);
    let members = bo.lock().members();
    let seen = members
        .iter()
        .find(|m| m.name == "ana")
        .expect("ana is here");
    assert!(seen.cursor.is_some(), "ana's cursor before any move");

    let mut c = app("abcdefgh\n");
    type_str(&mut c, "q");
    screen(&mut c, 7, 6);
    key(&mut c, KeyCode::End);
    screen(&mut c, 7, 6);
    assert!(c.left > 0, "scrolled sideways on the narrow screen");
    let t = screen(&mut c, 60, 6);
    assert_eq!(c.left, 0);
    assert!(
        screen_text(&t).contains("1 qabcdefgh"),
        "{}",
        screen_text(&t)
    );
}

/// A recovery copy that cannot be written is said on screen (it was only in the log): the
/// user's unsaved changes are not safe from a crash until saved.
#[test]
fn a_recovery_copy_that_cannot_be_written_is_said_on_screen() {
    let mut a = app("x\n");
    update(
        &mut a,
        Msg::RecoveryFailed("No space left on device (os error 28)".into()),
    );
    let shown = screen_text(&screen(&mut a, 160, 6));
    assert!(
        shown.contains("cannot keep a recovery copy (No space left on device"),
        "{shown}"
    );
}

/// A new file (not there when the editor opened it): if someone makes a file of that name before
/// the first save, the save asks instead of replacing it (vim's E13), and says why.
#[test]
fn a_new_file_made_by_someone_else_meanwhile_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.md");
    let mut a = app("");
    a.path = Some(file.clone());
    a.disk = pairedit::fsutil::stamp(&file);
    assert_eq!(a.disk, None, "the file is not there yet");
    type_str(&mut a, "# mine\n");
    std::fs::write(&file, "theirs\n").unwrap();
    let (generation, result) = save_as_asked(&mut a);
    assert!(
        matches!(result, Err(pairedit::fsutil::SaveError::ChangedOnDisk(_))),
        "{result:?}"
    );
    update(&mut a, Msg::Saved { generation, result });
    assert_eq!(a.mode, Mode::ConfirmOverwrite);
    assert!(a.dirty);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "theirs\n");
    assert!(
        screen_text(&screen(&mut a, 120, 8))
            .contains("on disk that this editor did not open or write"),
        "the prompt says what happened"
    );
    // "o" overwrites it, and the save after that checks against what was written.
    let Some(Effect::Save {
        path,
        text,
        generation,
        expect,
        force: true,
    }) = key(&mut a, KeyCode::Char('o')).pop()
    else {
        panic!("expected a forced save");
    };
    let result = pairedit::fsutil::save_checked(&path, &text, expect, true).map(|s| (path, s));
    update(&mut a, Msg::Saved { generation, result });
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    assert!(!a.dirty);
    assert!(a.disk.is_some());
}

/// A save and the crash-recovery copy write the text as it was when they were asked for, byte
/// for byte, however long it is (many rope chunks, more than one write buffer) and whatever is
/// typed before they are written: the editor hands them a snapshot of the rope.
#[test]
fn saves_and_recovery_copies_write_the_text_as_it_was_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.txt");
    let body: String = (0..100_000)
        .map(|i| format!("line {i}\té — 👍🏽 e\u{301}\r\n"))
        .collect();
    assert!(body.len() > 2 << 20);
    std::fs::write(&file, &body).unwrap();
    let mut a = app(&body);
    a.path = Some(file.clone());
    a.disk = pairedit::fsutil::stamp(&file);
    type_str(&mut a, "first ");
    let asked = text(&a);
    let Some(Effect::Save {
        path,
        text: snapshot,
        expect,
        force,
        ..
    }) = ctrl(&mut a, 's').pop()
    else {
        panic!("expected a save");
    };
    type_str(&mut a, "then more ");
    let ticked = text(&a);
    let Some(Effect::WriteRecovery {
        path: recovery,
        text: copy,
    }) = update(&mut a, Msg::Tick).pop()
    else {
        panic!("expected a recovery copy");
    };
    type_str(&mut a, "and more still");
    pairedit::fsutil::save_checked(&path, &snapshot, expect, force).unwrap();
    pairedit::fsutil::write_atomic_chunks(&recovery, copy.chunks().map(str::as_bytes)).unwrap();
    for (written, want) in [(&file, &asked), (&recovery, &ticked)] {
        let got = std::fs::read(written).unwrap();
        assert!(
            got == want.as_bytes(),
            "{}: {} bytes written, {} asked for",
            written.display(),
            got.len(),
            want.len()
        );
    }
    assert!(text(&a).starts_with("first then more and more still"));
}

/// The text area's cells (rows `0..rows`), for comparing colours between two editors.
fn text_cells(t: &Terminal<TestBackend>, rows: u16) -> Vec<ratatui::buffer::Cell> {
    let buf = t.backend().buffer();
    let w = buf.area.width as usize;
    buf.content[..w * rows as usize].to_vec()
}

/// A key's frame does not wait for the parser: the typed text is on screen at once in the
/// colours around it, and once the editor is idle it is coloured as an editor opened on the
/// same text colours it (a comment typed at a line's end; a quote that turns every line
/// after it into a string).
#[test]
fn typed_code_is_on_screen_at_once_and_coloured_when_the_editor_is_idle() {
    let code = "fn main() {\n    let x = 1;\n    let y = 2;\n}\n";
    let mut a = app(code);
    screen(&mut a, 40, 8);
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::End);
    type_str(&mut a, " // note");
    assert!(a.idle_work(), "the typed line waits for its parse");
    let typed = screen(&mut a, 40, 8);
    let (x, y) = cell_of(&typed, "// note");
    let semicolon = typed.backend().buffer()[(x - 2, y)].fg;
    assert_eq!(
        typed.backend().buffer()[(x, y)].fg,
        semicolon,
        "until parsed, in the colour of the character before"
    );
    update(&mut a, Msg::Idle);
    assert!(!a.idle_work());
    let settled = screen(&mut a, 40, 8);
    let mut fresh = app(&text(&a));
    let want = screen(&mut fresh, 40, 8);
    assert_ne!(
        settled.backend().buffer()[(x, y)].fg,
        semicolon,
        "a comment's colour"
    );
    assert_eq!(text_cells(&settled, 4), text_cells(&want, 4));
    // A quote opened on line 3: the lines after it change too.
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Home);
    type_str(&mut a, "\"");
    let before_idle = screen(&mut a, 40, 8);
    update(&mut a, Msg::Idle);
    let settled = screen(&mut a, 40, 8);
    let mut fresh = app(&text(&a));
    let want = screen(&mut fresh, 40, 8);
    assert_eq!(text_cells(&settled, 4), text_cells(&want, 4));
    assert_ne!(
        text_cells(&before_idle, 4)[3 * 40..],
        text_cells(&want, 4)[3 * 40..],
        "the last line became part of the string only once parsed"
    );
}

#[test]
fn snapshot_highlighted_code() {
    let mut a = app("// greet\nfn main() {\n\tlet s = \"hi\";\n}\n");
    let t = screen(&mut a, 60, 8);
    insta::assert_snapshot!("highlighted_code", screen_text(&t));
    let buf = t.backend().buffer();
    let fg = |needle| buf[cell_of(&t, needle)].fg;
    assert_ne!(fg("fn"), fg("\"hi\""), "keywords and strings differ");
    assert_ne!(fg("// greet"), fg("main"), "comments differ");
    assert!(matches!(fg("fn"), Color::Rgb(..)), "theme colours are used");
    // The tab is expanded to the next tab stop (4): `let` starts in column 4 of the text.
    let (x_let, _) = cell_of(&t, "let");
    let (x_fn, _) = cell_of(&t, "fn main");
    assert_eq!(x_let - x_fn, 4);
}

#[test]
fn snapshot_remote_cursors_and_members_panel() {
    let ana = session(
        "fn main() {\n    println!(\"hi\");\n}\n",
        Role::Writer,
        "ana",
    );
    let bo = joiner(Role::Writer, "bo");
    let cy = joiner(Role::Viewer, "cy");
    sync_pair(&ana, &bo);
    sync_pair(&ana, &cy);
    // bo selects "println" on line 2; cy's cursor sits at the start of line 3.
    bo.lock().set_cursor(16, 23);
    cy.lock().set_cursor(32, 32);
    exchange(&ana, &bo);
    exchange(&ana, &cy);
    let mut a = app_on(ana.clone());
    update(&mut a, Msg::Remote);
    let t = screen(&mut a, 90, 8);
    insta::assert_snapshot!("remote_cursors_members", screen_text(&t));
    let text = screen_text(&t);
    assert!(text.contains("bo") && text.contains("cy") && text.contains("ana (you)"));
    assert!(text.contains("3 here"));
    let bo_color = pairedit::tui::view::parse_color(bo.lock().color());
    let buf = t.backend().buffer();
    let (px, py) = cell_of(&t, "println");
    // bo's head is right after "println": that cell is drawn in bo's colour.
    assert_eq!(buf[(px + 7, py)].bg, bo_color);
    // The selection is tinted, not the plain background.
    assert_ne!(buf[(px + 1, py)].bg, buf[(px - 2, py)].bg);
    // The name tag sits after the end of bo's line, in bo's colour, hiding no text.
    let (tx, ty) = cell_of(&t, " bo ");
    assert_eq!(ty, py);
    assert!(tx > cell_of(&t, "\");").0);
    assert_eq!(buf[(tx + 1, ty)].bg, bo_color);
}

#[test]
fn snapshot_viewer_read_only_message() {
    let mut v = app_on(session("let a = 1;\n", Role::Viewer, "cy"));
    key(&mut v, KeyCode::Char('x'));
    let t = screen(&mut v, 60, 6);
    insta::assert_snapshot!("viewer_read_only", screen_text(&t));
    assert!(screen_text(&t).contains("read-only: you joined with a view code"));
}

#[test]
fn snapshot_wide_and_combining_characters() {
    let mut a = app("日本語のテキスト\ne\u{301}t\u{e9} 😀 x\n\tz\n");
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::End);
    let mut t = screen(&mut a, 50, 7);
    insta::assert_snapshot!("wide_chars", screen_text(&t));
    // The cursor sits after "x": é(1) t(1) é(1) ' '(1) 😀(2) ' '(1) x(1) = 8 columns.
    let (x_e, _) = cell_of(&t, "e\u{301}");
    let pos = t.get_cursor_position().unwrap();
    assert_eq!(pos.x - x_e, 8);
    // CJK takes two columns per character.
    let (x0, y0) = cell_of(&t, "日");
    assert_eq!(t.backend().buffer()[(x0 + 2, y0)].symbol(), "本");
}

#[test]
fn snapshot_codes_overlay_and_help() {
    let mut a = app("x\n");
    a.codes = Some(Codes {
        write: "ws://127.0.0.1:7070/r/ROOM/w_TOKEN".into(),
        view: "ws://127.0.0.1:7070/r/ROOM/v_TOKEN".into(),
    });
    key(&mut a, KeyCode::F(2));
    let t = screen(&mut a, 70, 12);
    assert!(screen_text(&t).contains("pairedit join ws://127.0.0.1:7070/r/ROOM/v_TOKEN"));
    key(&mut a, KeyCode::Char('q'));
    assert_eq!(a.mode, Mode::Normal);
    assert_eq!(
        text(&a),
        "x\n",
        "the key that closes an overlay is not typed"
    );
    key(&mut a, KeyCode::F(1));
    let t = screen(&mut a, 80, 24);
    insta::assert_snapshot!("help", screen_text(&t));
}

/// Real codes are long (a host name, a room, a 24-character token): on an 80-column screen,
/// and narrower or lower ones, both show whole, row after row inside the box.
#[test]
fn both_join_codes_show_whole_on_small_screens() {
    let mut a = app("x\n");
    let write = "ws://my-laptop.local:7070/r/k3n9x2bq/w_Qm9vZ2xlLVRva2VuLTEyMzQ1Njc4";
    let view = "ws://my-laptop.local:7070/r/k3n9x2bq/v_Vmlld2VyLVRva2VuLTg3NjU0MzIx";
    a.codes = Some(Codes {
        write: write.into(),
        view: view.into(),
    });
    for (w, h) in [(80, 24), (80, 10), (60, 12), (40, 8), (30, 12)] {
        key(&mut a, KeyCode::F(2));
        let t = screen(&mut a, w, h);
        // The box's inner rows, put back together.
        let joined: String = screen_text(&t)
            .lines()
            .filter_map(|l| {
                // Between the box's sides (the text shows left and right of it).
                let (start, end) = (l.find('│')?, l.rfind('│')?);
                (start < end).then(|| l[start + '│'.len_utf8()..end].to_string())
            })
            .collect::<String>()
            .replace(' ', "");
        for code in [write, view] {
            assert!(
                joined.contains(code),
                "{w}x{h}: {code} not whole in:\n{}",
                screen_text(&t)
            );
        }
        key(&mut a, KeyCode::Esc);
    }
}

#[test]
fn remote_edits_above_keep_the_cursor_on_its_text() {
    let ana = session("line1\nline2\nline3\n", Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Right);
    assert_eq!(a.cursor, 13);
    bo.lock()
        .doc
        .apply_local(&Edit::insert(0, "new\n"))
        .unwrap();
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    assert_eq!(a.cursor, 17, "still after the 'l' of line3");
    type_str(&mut a, "X");
    assert_eq!(text(&a), "new\nline1\nline2\nlXine3\n");
}

/// A teammate's typing within lines is on our screen at once in the colours around it, and
/// coloured as a fresh editor colours it once ours is idle; a line break of theirs is
/// coloured from its line on in the frame that shows it.
#[test]
fn a_teammates_typing_is_coloured_as_our_own() {
    let code = "fn main() {\n    let x = 1;\n    let y = 2;\n}\n";
    let ana = session(code, Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    screen(&mut a, 40, 8);
    // bo: a comment at the end of line 2 and a quote opening line 3's text, in one update.
    {
        let mut st = bo.lock();
        let end2 = st.doc.rope().line_to_char(2) - 1;
        st.doc.apply_local(&Edit::insert(end2, " // note")).unwrap();
        let line3 = st.doc.rope().line_to_char(2);
        st.doc.apply_local(&Edit::insert(line3 + 4, "\"")).unwrap();
    }
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    assert!(
        a.idle_work(),
        "their lines wait for the parse, as typed ones do"
    );
    let shown = screen(&mut a, 40, 8);
    assert!(screen_text(&shown).contains("let x = 1; // note"));
    assert!(screen_text(&shown).contains("\"let y = 2;"));
    update(&mut a, Msg::Idle);
    let settled = screen(&mut a, 40, 8);
    let want = screen(&mut app(&text(&a)), 40, 8);
    assert_eq!(text_cells(&settled, 4), text_cells(&want, 4));
    // Two updates before our next frame: one on line 3, then a longer one on line 2 (which
    // moves where line 3's edit is in the text).
    let line = |st: &ClientState, l: usize| st.doc.rope().line_to_char(l);
    {
        let mut st = bo.lock();
        let at = line(&st, 2) + 5;
        st.doc.apply_local(&Edit::insert(at, "z")).unwrap();
    }
    exchange(&ana, &bo);
    {
        let mut st = bo.lock();
        let at = line(&st, 1) + 4;
        st.doc
            .apply_local(&Edit::insert(at, "abcdefghijkl"))
            .unwrap();
    }
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    let shown = screen_text(&screen(&mut a, 40, 8));
    assert!(
        shown.contains("abcdefghijkllet x") && shown.contains("\"zlet y"),
        "{shown}"
    );
    update(&mut a, Msg::Idle);
    let settled = screen(&mut a, 40, 8);
    let want = screen(&mut app(&text(&a)), 40, 8);
    assert_eq!(text_cells(&settled, 4), text_cells(&want, 4));
    // bo: a line break above everything.
    bo.lock()
        .doc
        .apply_local(&Edit::insert(0, "/* top */\n"))
        .unwrap();
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    assert!(!a.idle_work());
    let shown = screen(&mut a, 40, 8);
    let want = screen(&mut app(&text(&a)), 40, 8);
    assert_eq!(text_cells(&shown, 5), text_cells(&want, 5));
}

/// A teammate's edit that reaches the session while we type, before the editor hears of it:
/// our key comes first, and the teammate's text still shows where it went.
#[test]
fn a_teammates_edit_that_came_while_we_typed_shows_where_it_went() {
    let ana = session("fn a() {}\nfn b() {}\nfn c() {}\n", Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    screen(&mut a, 40, 8);
    bo.lock().doc.apply_local(&Edit::insert(20, "q")).unwrap();
    exchange(&ana, &bo);
    // Our keys on line 1, above bo's edit, before `Msg::Remote`.
    type_str(&mut a, "// twelve ch ");
    update(&mut a, Msg::Remote);
    let shown = screen_text(&screen(&mut a, 40, 8));
    assert!(shown.contains("3 qfn c() {}"), "{shown}");
    update(&mut a, Msg::Idle);
    let settled = screen(&mut a, 40, 8);
    let want = screen(&mut app(&text(&a)), 40, 8);
    assert_eq!(text_cells(&settled, 3), text_cells(&want, 3));
}

#[test]
fn follow_mode_tracks_a_teammate_and_any_own_move_stops_it() {
    let text: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let ana = session(&text, Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    screen(&mut a, 80, 12); // sets the view height
    assert_eq!(key(&mut a, KeyCode::F(3)), vec![]);
    assert_eq!(
        a.status.as_ref().map(|s| s.0.as_str()),
        Some("nobody to follow yet (nobody here has shown a cursor)")
    );
    let line_150 = bo.lock().doc.rope().line_to_char(150);
    bo.lock().set_cursor(line_150, line_150);
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    key(&mut a, KeyCode::F(3));
    assert_eq!(a.follow, Some(bo.lock().client_id()));
    assert!(
        a.top <= 150 && 150 < a.top + a.view_height,
        "view shows bo's line (top {})",
        a.top
    );
    // bo moves; the view goes along.
    let line_20 = bo.lock().doc.rope().line_to_char(20);
    bo.lock().set_cursor(line_20, line_20);
    exchange(&ana, &bo);
    update(&mut a, Msg::Remote);
    assert!(
        a.top <= 20 && 20 < a.top + a.view_height,
        "view follows to line 20 (top {})",
        a.top
    );
    // Our own move stops following.
    key(&mut a, KeyCode::Down);
    assert_eq!(a.follow, None);
    assert_eq!(
        a.status.as_ref().map(|s| s.0.as_str()),
        Some("stopped following")
    );
}

#[test]
fn tiny_and_odd_terminal_sizes_never_panic() {
    let text = "fn main() {\n\t\"日本語 😀 e\u{301}\";\n}\n".repeat(50);
    let mut a = app(&text);
    a.codes = Some(Codes {
        write: "ws://h/r/R/w_T".into(),
        view: "ws://h/r/R/v_T".into(),
    });
    for (w, h) in [(1, 1), (2, 2), (5, 3), (10, 4), (20, 5), (40, 2), (200, 60)] {
        for k in [
            KeyCode::End,
            KeyCode::PageDown,
            KeyCode::F(1),
            KeyCode::Esc,
            KeyCode::F(2),
            KeyCode::Esc,
        ] {
            key(&mut a, k);
            screen(&mut a, w, h);
        }
        ctrl(&mut a, 't');
        screen(&mut a, w, h);
        key(&mut a, KeyCode::Esc);
    }
}

/// With the host's undo window (500 ms), a burst of typing in the editor — each key moving the
/// cursor, published to peers, and a frame drawn after each with a teammate's cursor on screen —
/// reaches yrs as one transaction per flush, not one per key; the teammate gets the same text.
#[test]
fn typing_in_the_editor_composes_into_one_update_per_flush() {
    let ana = session("fn main() {}\n", Role::Writer, "ana");
    let bo = session("", Role::Writer, "bo");
    ana.lock().doc.enable_undo(500);
    sync_pair(&ana, &bo);
    bo.lock().set_cursor(3, 3);
    exchange(&bo, &ana);
    let mut a = app_on(ana.clone());
    update(&mut a, Msg::Remote);
    key(&mut a, KeyCode::Down);
    for c in "let answer = 42;".chars() {
        key(&mut a, KeyCode::Char(c));
        // A frame after every key, as the event loop draws one (it resolves bo's cursor).
        let _ = screen(&mut a, 60, 10);
    }
    let updates = ana.lock().doc.take_outgoing();
    assert_eq!(updates.len(), 1, "16 keys, one transaction");
    bo.lock().doc.apply_remote(&updates[0]).unwrap();
    assert_eq!(bo.lock().doc.text(), "fn main() {}\nlet answer = 42;");
    assert_eq!(bo.lock().doc.text(), ana.lock().doc.text());
}

/// A frame on a [`Screen`] redraws only the rows whose content changed: after any step, what
/// the screen shows must be exactly what a frame drawn whole shows, cursor included. The steps
/// are typing (wide characters, tabs, CRLF), moving, selecting, scrolling both ways, a
/// teammate's cursor, selection and edits, the help overlay, chat, and resizes.
#[test]
fn frames_that_keep_rows_show_exactly_what_a_whole_frame_shows() {
    use pairedit::tui::term::Screen;
    let mut text = String::new();
    // 996 lines: Enter and Backspace take the gutter across 999 → 1000 and back.
    for i in 0..995 {
        text.push_str(&format!("fn f{i}() {{ let s = \"界{i}\";\tx }}\r\n"));
    }
    let ana = session(&text, Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    let cy = joiner(Role::Viewer, "cy");
    let mut cy_here = false;
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    update(&mut a, Msg::Remote);
    // Start at the end, where the gutter grows.
    press(&mut a, KeyCode::End, KeyModifiers::CONTROL);
    let (mut w, mut h) = (100u16, 20u16);
    let mut screen = Screen::with_size(w, h);
    // A terminal emulator reads what the screen writes: it must show the frames too.
    let mut term = emulator(w, h);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let shift = KeyModifiers::SHIFT;
    let mut bo_sel = (0, 0);
    for step in 0..600 {
        match next(22) {
            0..=5 => type_str(&mut a, ["x", "界", "\t", "é", "ab"][next(5) as usize]),
            6 => {
                key(&mut a, KeyCode::Enter);
            }
            7 => {
                key(&mut a, KeyCode::Backspace);
            }
            8 => {
                key(
                    &mut a,
                    [KeyCode::Left, KeyCode::Right, KeyCode::Up, KeyCode::Down][next(4) as usize],
                );
            }
            9 => {
                press(
                    &mut a,
                    [KeyCode::Left, KeyCode::Right, KeyCode::Down][next(3) as usize],
                    shift,
                );
            }
            10 => {
                key(
                    &mut a,
                    [
                        KeyCode::PageDown,
                        KeyCode::PageUp,
                        KeyCode::End,
                        KeyCode::Home,
                    ][next(4) as usize],
                );
            }
            11 => {
                // A long line: the view scrolls sideways.
                type_str(&mut a, &"long".repeat(30));
            }
            12 | 13 => {
                let len = bo.lock().doc.text().chars().count();
                // A new selection, or the last one turned around (its head at the other end).
                // Near our cursor, so that it is on screen.
                let near = |r: u64| (a.cursor + r as usize).saturating_sub(150).min(len);
                let (anchor, head) = match next(3) {
                    0 => (near(next(300)), near(next(300))),
                    // Only the anchor moves.
                    1 => (near(next(300)), bo_sel.1.min(len)),
                    _ => (bo_sel.1.min(len), bo_sel.0.min(len)),
                };
                bo_sel = (anchor, head);
                bo.lock().set_cursor(anchor, head);
                exchange(&ana, &bo);
                update(&mut a, Msg::Remote);
            }
            14 => {
                let len = bo.lock().doc.text().chars().count();
                bo.lock()
                    .doc
                    .apply_local(&Edit::insert(next(len as u64 + 1) as usize, "bo\n"))
                    .unwrap();
                exchange(&ana, &bo);
                update(&mut a, Msg::Remote);
            }
            15 => {
                key(&mut a, KeyCode::F(1));
                check_frames(&mut screen, &mut term, &mut a, step);
                key(&mut a, KeyCode::Esc);
            }
            16 => {
                ctrl(&mut a, 't');
                type_str(&mut a, "hi");
                check_frames(&mut screen, &mut term, &mut a, step);
                key(&mut a, KeyCode::Enter);
                exchange(&ana, &bo);
            }
            17 => {
                (w, h) = (60 + next(60) as u16, 8 + next(20) as u16);
                screen.resize(w, h);
                term.screen_mut().set_size(nonzero(h), nonzero(w));
            }
            18 if !cy_here => {
                // A third member comes: the members panel grows; their cursor shows too.
                cy_here = true;
                sync_pair(&ana, &cy);
                let len = cy.lock().doc.text().chars().count();
                cy.lock().set_cursor(a.cursor.min(len), a.cursor.min(len));
                exchange(&ana, &cy);
                update(&mut a, Msg::Remote);
            }
            18 => {
                // Follow the next member, or stop.
                key(&mut a, KeyCode::F(3));
            }
            19 => {
                // The prompt line asks, echoes and goes.
                ctrl(&mut a, ['f', 'g'][next(2) as usize]);
                check_frames(&mut screen, &mut term, &mut a, step);
                type_str(&mut a, ["a", "1", "界"][next(3) as usize]);
                check_frames(&mut screen, &mut term, &mut a, step);
                key(&mut a, [KeyCode::Esc, KeyCode::Enter][next(2) as usize]);
            }
            _ => {
                update(&mut a, Msg::Tick);
            }
        }
        check_frames(&mut screen, &mut term, &mut a, step);
    }
}

/// Whatever is typed here or by a teammate (within lines and across them; quotes and comment
/// marks that change every line below), the lines a frame shows always spell the text, and once
/// the editor has been idle they are coloured exactly as a fresh highlighter colours the text.
#[test]
fn shown_lines_always_spell_the_text_and_settle_to_a_fresh_highlighters_colours() {
    // CRLF lines, and a line ending in a lone CR, among LF ones.
    let text: String = (0..60)
        .map(|i| {
            let eol = ["\n", "\r\n", "\n", "\r"][i % 4];
            format!("fn f{i}() {{ let s = \"{i}\"; }} // c{eol}")
        })
        .collect();
    let ana = session(&text, Role::Writer, "ana");
    let bo = joiner(Role::Writer, "bo");
    sync_pair(&ana, &bo);
    let mut a = app_on(ana.clone());
    update(&mut a, Msg::Remote);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut idles, mut patched, mut remote_patched) = (0, 0, 0);
    for step in 0..500 {
        match next(10) {
            0..=3 => type_str(
                &mut a,
                ["x", "\"", "/*", "*/", "//", " ", "é"][next(7) as usize],
            ),
            4 => {
                key(&mut a, KeyCode::Enter);
            }
            5 => {
                key(&mut a, KeyCode::Backspace);
            }
            6 => {
                let moves = [KeyCode::Left, KeyCode::Right, KeyCode::Up, KeyCode::Down];
                key(&mut a, moves[next(4) as usize]);
            }
            7 | 8 => {
                // bo inserts (a form feed too: ropey ends a line there) or deletes a few
                // characters (perhaps a line break, perhaps half a CRLF), near our cursor so
                // that it is on screen; sometimes twice before our frame, and sometimes we type
                // before the editor hears of it.
                for _ in 0..=next(2) {
                    let mut st = bo.lock();
                    let len = st.doc.len_chars();
                    let at = (a.cursor + next(200) as usize).saturating_sub(100).min(len);
                    let edit = if next(2) == 0 || at == len {
                        Edit::insert(at, ["q", "\"", "/*", "*/", "x\u{c}y"][next(5) as usize])
                    } else {
                        Edit::delete(at, (1 + next(5) as usize).min(len - at))
                    };
                    st.doc.apply_local(&edit).unwrap();
                    drop(st);
                    exchange(&ana, &bo);
                }
                if next(2) == 0 {
                    type_str(&mut a, ["zzzzzzzzzzzzzzzzzzzz", "\n"][next(2) as usize]);
                }
                let was = a.idle_work();
                update(&mut a, Msg::Remote);
                remote_patched += usize::from(!was && a.idle_work());
            }
            _ => {
                patched += usize::from(a.idle_work());
                update(&mut a, Msg::Idle);
                assert!(!a.idle_work());
                idles += 1;
            }
        }
        // A frame, as the loop draws it; then what it showed, from the highlighter's cache.
        screen(&mut a, 80, 24);
        let session = a.session.clone();
        let st = session.lock();
        let rope = st.doc.rope();
        let (top, rows) = (a.top, a.view_height);
        let shown: Vec<Spans> = a
            .highlighter
            .lines(rope, top, rows)
            .into_iter()
            .cloned()
            .collect();
        for (i, spans) in shown.iter().enumerate() {
            let line = rope.line(top + i);
            let eol = pairedit::tui::text::eol_len(line);
            let body = line.slice(..line.len_chars() - eol).to_string();
            let spelled: String = spans.iter().map(|(_, t)| t.as_str()).collect();
            assert_eq!(
                spelled,
                body,
                "step {step}: line {} shows stale text",
                top + i
            );
        }
        if !a.idle_work() {
            let mut fresh = Highlighter::new("Rust", load_theme(DEFAULT_THEME).unwrap());
            assert_eq!(
                shown.iter().collect::<Vec<_>>(),
                fresh.lines(rope, top, rows),
                "step {step}: colours after settling"
            );
        }
    }
    assert!(
        idles > 20 && patched > 10 && remote_patched >= 3,
        "{idles} idle steps, {patched} with work, {remote_patched} with a teammate's"
    );
}

/// Draws a frame on `screen` and one whole, and says where they differ.
fn nonzero(n: u16) -> std::num::NonZero<u16> {
    std::num::NonZero::new(n).expect("a size")
}

fn emulator(w: u16, h: u16) -> vt100::Parser {
    vt100::Parser::new(nonzero(h), nonzero(w), 0)
}

/// A colour as the terminal emulator has it once crossterm has written it.
fn emulated(c: ratatui::style::Color) -> vt100::Color {
    use ratatui::style::Color as C;
    let named = [
        C::Black,
        C::Red,
        C::Green,
        C::Yellow,
        C::Blue,
        C::Magenta,
        C::Cyan,
        C::Gray,
        C::DarkGray,
        C::LightRed,
        C::LightGreen,
        C::LightYellow,
        C::LightBlue,
        C::LightMagenta,
        C::LightCyan,
        C::White,
    ];
    match c {
        C::Reset => vt100::Color::Default,
        C::Rgb(r, g, b) => vt100::Color::Rgb(r, g, b),
        C::Indexed(i) => vt100::Color::Idx(i),
        named_colour => vt100::Color::Idx(
            named
                .iter()
                .position(|&n| n == named_colour)
                .expect("a named colour") as u8,
        ),
    }
}

/// Draws a frame on `screen` and feeds what it wrote to `term`; checks that the screen's idea
/// of the terminal, and the terminal itself (symbols and colours), show the whole frame.
fn check_frames(
    screen: &mut pairedit::tui::term::Screen,
    term: &mut vt100::Parser,
    app: &mut App,
    step: usize,
) {
    let mut out = Vec::new();
    screen.draw_to(|c| view::render(c, app), &mut out).unwrap();
    term.process(&out);
    let area = screen.shown().area;
    let mut t = Terminal::new(TestBackend::new(area.width, area.height)).unwrap();
    // The frame as drawn (the backend's buffer keeps cells a wide character hides as they were).
    let whole = t.draw(|f| view::draw(f, app)).unwrap().buffer.clone();
    for y in 0..area.height {
        for x in 0..area.width {
            assert_eq!(
                screen.shown()[(x, y)],
                whole[(x, y)],
                "step {step}: cell ({x}, {y}) differs; whole frame:\n{}",
                screen_text(&t)
            );
        }
    }
    for y in 0..area.height {
        for x in 0..area.width {
            let Some(got) = term.screen().cell(y, x) else {
                panic!("step {step}: the emulator has no cell ({x}, {y})");
            };
            if got.is_wide_continuation() {
                continue;
            }
            let want = &whole[(x, y)];
            let symbol = if got.has_contents() {
                got.contents()
            } else {
                " "
            };
            assert_eq!(
                (symbol, got.fgcolor(), got.bgcolor()),
                (want.symbol(), emulated(want.fg), emulated(want.bg)),
                "step {step}: the terminal's cell ({x}, {y}) differs; it shows:\n{}",
                term.screen().contents()
            );
        }
    }
    let b = t.backend();
    let expected = b.cursor_visible().then(|| b.cursor_position());
    assert_eq!(screen.cursor(), expected, "step {step}: the cursor");
}
