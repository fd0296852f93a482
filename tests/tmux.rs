//! End to end in real terminals: `pairedit host` in one tmux window, `join` with the write code
//! in a second and with the view code in a third. Keys go in with `send-keys`, screens come out
//! with `capture-pane`; the file on disk is checked after Ctrl-S.
//!
//! Needs tmux (`.ci/run` installs it). Without it the test says SKIPPED, unless
//! PAIREDIT_REQUIRE_TMUX=1 (set by `.ci/run`), which makes that a failure.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pairedit");
const WAIT: Duration = Duration::from_secs(20);

/// A private tmux server, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Session `pe`, `width`×`height`, running `command` in its first window.
    fn session(&self, width: u16, height: u16, command: &str) {
        let (w, h) = (width.to_string(), height.to_string());
        self.run(&["new-session", "-d", "-s", "pe", "-x", &w, "-y", &h, command]);
    }

    /// A background window `target` running `command`.
    fn window(&self, target: &str, command: &str) {
        self.run(&["new-window", "-d", "-t", target, command]);
    }

    fn start() -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            let why = "SKIPPED: tmux is not installed";
            if std::env::var("PAIREDIT_REQUIRE_TMUX").is_ok_and(|v| v == "1") {
                panic!("{why}, and PAIREDIT_REQUIRE_TMUX=1");
            }
            eprintln!("{why}");
            return None;
        }
        // One server per test: tests run in parallel.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Tmux {
            socket: format!("pairedit-test-{}-{n}", std::process::id()),
        })
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self, target: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", target])
    }

    fn keys(&self, target: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", target];
        args.extend(keys);
        self.run(&args);
    }

    /// Types text literally (no key-name lookup).
    fn type_text(&self, target: &str, text: &str) {
        self.run(&["send-keys", "-t", target, "-l", text]);
    }

    /// Polls a window until its screen satisfies `pred`.
    fn wait(&self, target: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.capture(target);
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "window {target} never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn find_code(screen: &str, prefix: &str) -> Option<String> {
    screen
        .split_whitespace()
        .find(|w| w.starts_with("ws://") && w.contains(prefix))
        .map(str::to_string)
}

fn cat(code: &str) -> String {
    let out = Command::new(BIN)
        .args(["cat", code])
        .output()
        .expect("pairedit cat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `pairedit host` on `dir/name` (holding `content`) as ana in session `pe`, 100×20, with its
/// join codes closed.
struct Hosted {
    file: std::path::PathBuf,
    log: std::path::PathBuf,
    /// The code that may type.
    write: String,
}

fn host_past_codes(tmux: &Tmux, dir: &Path, name: &str, content: &str) -> Hosted {
    let file = dir.join(name);
    std::fs::write(&file, content).unwrap();
    host_file_past_codes(tmux, &file)
}

/// As [`host_past_codes`], on `file` as it is (there or not).
fn host_file_past_codes(tmux: &Tmux, file: &Path) -> Hosted {
    let file = file.to_path_buf();
    let log = file.with_file_name("pairedit.log");
    let host = format!("{BIN} host {} --name ana", file.display());
    tmux.session(100, 20, &editor(&host, &log));
    let codes = tmux.wait("pe:0", "the codes", |s| s.contains("/w_"));
    let write = find_code(&codes, "/w_").expect("write code on screen");
    tmux.keys("pe:0", &["Escape"]);
    // The status line shows under the codes too: wait for the codes to go (a key sent sooner
    // could reach the editor in one read with this Escape).
    tmux.wait("pe:0", "the editor", |s| {
        s.contains("F1 help") && !s.contains("/w_")
    });
    Hosted { file, log, write }
}

/// Ctrl-S on the host in `pe:0`: `file` then holds `want`. Then Ctrl-Q, and the host exits.
fn save_and_quit(tmux: &Tmux, file: &Path, want: &str) {
    tmux.keys("pe:0", &["C-s"]);
    let saved = format!("saved {}", file.display());
    tmux.wait("pe:0", "the save", |s| s.contains(&saved));
    assert_eq!(std::fs::read_to_string(file).unwrap(), want);
    tmux.keys("pe:0", &["C-q"]);
    tmux.wait("pe:0", "the exit", |s| s.contains("room codes were"));
}

fn editor(cmd: &str, log: &Path) -> String {
    // `sleep` keeps the window open after the editor exits, so a failure can still be read.
    format!("{cmd} --flush-ms 50 --log-file {}; sleep 60", log.display())
}

#[test]
fn host_join_and_view_in_three_terminals() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.rs");
    std::fs::write(&file, "fn main() {\r\n    println!(\"hi\");\r\n}\r\n").unwrap();
    let log = dir.path().join("pairedit.log");

    let host = format!("{BIN} host {} --name ana", file.display());
    tmux.session(110, 24, &editor(&host, &log));
    let screen = tmux.wait("pe:0", "the join codes", |s| {
        s.contains("/w_") && s.contains("/v_")
    });
    let write = find_code(&screen, "/w_").expect("write code on screen");
    let view = find_code(&screen, "/v_").expect("view code on screen");
    tmux.keys("pe:0", &["Escape"]);

    tmux.window(
        "pe:1",
        &editor(&format!("{BIN} join {write} --name bo"), &log),
    );
    tmux.window(
        "pe:2",
        &editor(&format!("{BIN} join {view} --name cy"), &log),
    );
    for w in ["pe:0", "pe:1", "pe:2"] {
        tmux.wait(w, "three members", |s| {
            s.contains("3 here") && s.contains("connected")
        });
    }
    tmux.wait("pe:1", "the host's file", |s| {
        s.contains("println!(\"hi\");")
    });

    // The host types at the end; the writer and the viewer see it.
    tmux.keys("pe:0", &["C-End"]);
    tmux.type_text("pe:0", "// from ana");
    for w in ["pe:1", "pe:2"] {
        tmux.wait(w, "ana's line", |s| s.contains("// from ana"));
    }
    // The second writer types at the top; the host and the viewer see it.
    tmux.keys("pe:1", &["C-Home"]);
    tmux.type_text("pe:1", "// bo first");
    tmux.keys("pe:1", &["Enter"]);
    for w in ["pe:0", "pe:2"] {
        tmux.wait(w, "bo's line", |s| {
            s.contains("1 // bo first") && s.contains("2 fn main() {")
        });
    }
    // The viewer's keys change nothing anywhere, and it is told why.
    tmux.keys("pe:2", &["C-End"]);
    tmux.type_text("pe:2", "VIEWER");
    tmux.keys("pe:2", &["Enter", "BSpace", "C-v", "C-z"]);
    tmux.wait("pe:2", "the read-only notice", |s| {
        s.contains("read-only: you joined with a view code")
    });

    // A chat line from the viewer reaches everyone.
    tmux.keys("pe:2", &["C-t"]);
    tmux.type_text("pe:2", "looks good");
    tmux.keys("pe:2", &["Enter"]);
    tmux.wait("pe:0", "cy's chat line", |s| s.contains("cy: looks good"));

    let want = "// bo first\r\nfn main() {\r\n    println!(\"hi\");\r\n}\r\n// from ana";
    // Give a wrongly sent viewer edit every chance to arrive before checking it did not.
    tmux.keys("pe:1", &["C-End"]);
    tmux.type_text("pe:1", "!");
    tmux.wait("pe:0", "bo's last key", |s| s.contains("// from ana!"));
    let want = format!("{want}!");
    assert_eq!(
        cat(&write),
        want,
        "the room holds exactly the writers' edits"
    );
    for w in ["pe:0", "pe:1", "pe:2"] {
        assert!(
            !tmux.capture(w).contains("VIEWER"),
            "window {w} shows the viewer's text"
        );
    }

    // Ctrl-S on the host writes the merged text, CRLF kept.
    tmux.keys("pe:0", &["C-s"]);
    let saved = format!("saved {}", file.display());
    tmux.wait("pe:0", "the save message", |s| s.contains(&saved));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
    assert!(!tmux.capture("pe:0").contains("[+] unsaved"));

    // Quitting asks first (the others are on this host's relay), then restores the
    // terminal and prints the codes.
    tmux.keys("pe:0", &["C-q"]);
    tmux.wait("pe:0", "the question", |s| {
        s.contains("2 others here will be disconnected")
    });
    tmux.keys("pe:0", &["y"]);
    // The codes are printed line by line: wait for the last one, not the heading.
    let screen = tmux.wait("pe:0", "the exit message", |s| {
        s.contains("room codes were") && s.contains(&view)
    });
    assert!(screen.contains(&view), "{screen}");
}

#[test]
fn a_crashed_host_leaves_a_recovery_copy_that_the_next_host_opens() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { file, log, .. } = host_past_codes(&tmux, dir.path(), "notes.txt", "saved line\n");
    let recovery = pairedit::fsutil::recovery_path(&file);
    tmux.keys("pe:0", &["C-End"]);
    tmux.type_text("pe:0", "typed but never saved");
    tmux.wait("pe:0", "the typing", |s| {
        s.contains("typed but never saved")
    });
    // Within about a second the unsaved text is in the recovery copy.
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&recovery).is_ok_and(|t| t.contains("typed but never saved")) {
        assert!(Instant::now() < deadline, "no recovery copy appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The host dies without a chance to clean up.
    let shell = tmux.run(&["display", "-p", "-t", "pe:0", "#{pane_pid}"]);
    let pids = Command::new("pgrep")
        .args(["-P", shell.trim(), "pairedit"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).to_string();
    assert!(!pids.trim().is_empty(), "found the editor's process");
    for pid in pids.split_whitespace() {
        assert!(
            Command::new("kill")
                .args(["-9", pid])
                .status()
                .unwrap()
                .success()
        );
    }
    tmux.wait("pe:0", "the editor killed", |s| s.contains("Killed"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "saved line\n",
        "the file was never touched"
    );
    assert!(recovery.exists(), "a crash leaves the recovery copy");

    // The next host is offered it (here non-interactively, with --recover).
    let again = format!("{BIN} host {} --name ana --recover", file.display());
    tmux.window("pe:1", &editor(&again, &log));
    tmux.wait("pe:1", "the codes", |s| s.contains("/w_"));
    tmux.keys("pe:1", &["Escape"]);
    tmux.wait("pe:1", "the recovered text", |s| {
        s.contains("typed but never saved") && s.contains("[+] unsaved") && !s.contains("/w_")
    });
    tmux.keys("pe:1", &["C-s"]);
    let saved = format!("saved {}", file.display());
    tmux.wait("pe:1", "the save", |s| s.contains(&saved));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "saved line\ntyped but never saved"
    );
    tmux.keys("pe:1", &["C-q"]);
    tmux.wait("pe:1", "the exit", |s| s.contains("room codes were"));
    assert!(
        !recovery.exists(),
        "a clean exit after saving removes the recovery copy"
    );
}

/// The editor's process in window `target` (a child of the window's shell).
fn editor_pid(tmux: &Tmux, target: &str) -> String {
    let shell = tmux.run(&["display", "-p", "-t", target, "#{pane_pid}"]);
    child_of(shell.trim()).expect("the editor's process")
}

/// Waits for process `pid` to end; fails with `what` if it does not in time.
fn wait_ended(pid: &str, what: &str) {
    let deadline = Instant::now() + WAIT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Typing is kept to the last key when the program is told to end (SIGTERM) or its terminal
/// goes away (the window closed: SIGHUP, and input hung up), not only up to the last
/// once-a-second recovery copy; and the program ends.
#[test]
fn a_signal_or_a_closed_terminal_keeps_the_typing_to_the_last_key() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { file, log, .. } = host_past_codes(&tmux, dir.path(), "a.txt", "on disk\n");
    let recovery = pairedit::fsutil::recovery_path(&file);
    let pid = editor_pid(&tmux, "pe:0");
    tmux.keys("pe:0", &["C-End"]);
    tmux.type_text("pe:0", "just typed");
    tmux.wait("pe:0", "the typing", |s| s.contains("just typed"));
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Its last words are printed one line at a time: wait for the one about the changes.
    let bye = tmux.wait("pe:0", "the exit", |s| {
        s.contains("unsaved changes: they are kept")
    });
    assert!(bye.contains("room codes were"), "{bye}");
    assert_eq!(
        std::fs::read_to_string(&recovery).unwrap(),
        "on disk\njust typed"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "on disk\n");
    wait_ended(&pid, "the host did not end after SIGTERM");

    // A second host, in a window that is then closed.
    let other = dir.path().join("b.txt");
    std::fs::write(&other, "").unwrap();
    let host = format!("{BIN} host {} --name ana", other.display());
    tmux.window("pe:1", &editor(&host, &log));
    tmux.wait("pe:1", "the codes", |s| s.contains("/w_"));
    tmux.keys("pe:1", &["Escape"]);
    tmux.wait("pe:1", "the editor", |s| {
        s.contains("F1 help") && !s.contains("/w_")
    });
    let pid = editor_pid(&tmux, "pe:1");
    tmux.type_text("pe:1", "gone with the window");
    tmux.wait("pe:1", "the typing", |s| s.contains("gone with the window"));
    tmux.run(&["kill-window", "-t", "pe:1"]);
    wait_ended(&pid, "the host did not end with its window");
    assert_eq!(
        std::fs::read_to_string(pairedit::fsutil::recovery_path(&other)).unwrap(),
        "gone with the window"
    );
}

/// crossterm reads `ESC ESC [ ...` (Option-arrow in macOS Terminal; Escape and a key read at
/// once over a slow link) as Escape and then typed characters. Here the bytes go into the
/// terminal in one write: the keys must act as keys, and nothing like `[1;5F` may reach the
/// document.
#[test]
fn escape_sequences_read_with_an_escape_are_keys_not_text() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { file, .. } = host_past_codes(&tmux, dir.path(), "words.txt", "hello world\n");
    // ESC ESC [1;5F: Alt-Ctrl-End, to the end of the file.
    tmux.run(&[
        "send-keys",
        "-t",
        "pe:0",
        "-H",
        "1b",
        "1b",
        "5b",
        "31",
        "3b",
        "35",
        "46",
    ]);
    tmux.type_text("pe:0", "tail");
    // ESC ESC [D: Alt-Left (Option-Left), a word back, to the start of "tail".
    tmux.run(&["send-keys", "-t", "pe:0", "-H", "1b", "1b", "5b", "44"]);
    tmux.type_text("pe:0", ">");
    // ESC b (Option-Left as Meta): another word back, over the ">" to the line's start.
    tmux.run(&["send-keys", "-t", "pe:0", "-H", "1b", "62"]);
    tmux.type_text("pe:0", "_");
    tmux.wait("pe:0", "the typing", |s| s.contains("2 _>tail"));
    save_and_quit(&tmux, &file, "hello world\n_>tail");
}

/// One editor per file: a second `host` of a file being edited is refused with the reason
/// (it would share the first one's recovery copy). A member's `--file` that holds something
/// else is not replaced by the first save without asking.
#[test]
fn one_editor_per_file_and_a_members_own_file_is_not_clobbered() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { file, log, write } = host_past_codes(&tmux, dir.path(), "a.txt", "shared\n");
    let again = format!("{BIN} host {} --name ana2", file.display());
    tmux.window("pe:1", &editor(&again, &log));
    tmux.wait("pe:1", "the refusal", |s| {
        s.contains("is open in another pairedit")
    });

    let mine = dir.path().join("mine.txt");
    std::fs::write(&mine, "MY WORK\n").unwrap();
    let join = format!("{BIN} join {write} --name bo --file {}", mine.display());
    tmux.window("pe:2", &editor(&join, &log));
    tmux.wait("pe:2", "the warning", |s| s.contains("not the room's text"));
    tmux.keys("pe:2", &["C-s"]);
    tmux.wait("pe:2", "the question", |s| {
        s.contains("did not open or write")
    });
    tmux.keys("pe:2", &["w"]);
    let beside = dir.path().join("mine.txt.pairedit");
    tmux.wait("pe:2", "the save beside", |s| {
        s.contains(&format!("saved {}", beside.display()))
    });
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "MY WORK\n");
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), "shared\n");
}

/// A file that starts with a byte order mark keeps it, in front: typing at the start goes after
/// it (it is not in the shared text), and the save writes it back.
#[test]
fn a_byte_order_mark_stays_in_front_of_the_text() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { file, write, log } =
        host_past_codes(&tmux, dir.path(), "bom.txt", "\u{feff}bom line\n");
    tmux.type_text("pe:0", "X");
    tmux.wait("pe:0", "the typing", |s| s.contains("1 Xbom line"));
    let deadline = Instant::now() + WAIT;
    let mut room = cat(&write);
    while room != "Xbom line\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        room = cat(&write);
    }
    assert_eq!(room, "Xbom line\n", "the room's text has no mark");
    // A member whose --file is that text with its mark: the room's text, not another file
    // (its first save asks nothing), and its saves keep the mark too.
    let copy = dir.path().join("copy.txt");
    std::fs::write(&copy, "\u{feff}Xbom line\n").unwrap();
    let join = format!("{BIN} join {write} --name bo --file {}", copy.display());
    tmux.window("pe:1", &editor(&join, &log));
    let joined = tmux.wait("pe:1", "the room's text", |s| {
        s.contains("1 Xbom line") && s.contains("2 here")
    });
    assert!(!joined.contains("not the room's text"), "{joined}");
    tmux.type_text("pe:1", "Y");
    tmux.keys("pe:1", &["C-s"]);
    let saved = format!("saved {}", copy.display());
    tmux.wait("pe:1", "the member's save", |s| s.contains(&saved));
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "\u{feff}YXbom line\n"
    );
    tmux.wait("pe:0", "bo's typing", |s| s.contains("1 YXbom line"));
    tmux.keys("pe:1", &["C-q"]);
    tmux.wait("pe:0", "bo gone", |s| s.contains("1 here"));
    save_and_quit(&tmux, &file, "\u{feff}YXbom line\n");
}

/// A member with no file of its own, whose relay is gone (the host killed), and whose window
/// is then closed: what it typed offline is kept with the whole text in NAME.unsent-SECS
/// where it ran, as quitting keeps it.
#[test]
fn a_member_without_a_file_keeps_its_offline_typing_when_its_window_closes() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { log, write, .. } = host_past_codes(&tmux, dir.path(), "notes.txt", "shared\n");
    let here = dir.path().join("member");
    std::fs::create_dir(&here).unwrap();
    let join = format!("cd {} && {BIN} join {write} --name bo", here.display());
    tmux.window("pe:1", &editor(&join, &log));
    tmux.wait("pe:1", "the room", |s| {
        s.contains("1 shared") && s.contains("2 here")
    });
    let host = editor_pid(&tmux, "pe:0");
    assert!(
        Command::new("kill")
            .args(["-KILL", &host])
            .status()
            .unwrap()
            .success()
    );
    wait_ended(&host, "the host did not end on SIGKILL");
    // Typed after the member saw its relay gone (the edits wait, queued).
    tmux.wait("pe:1", "the relay gone", |s| s.contains("reconnecting"));
    tmux.type_text("pe:1", "offline ");
    tmux.wait("pe:1", "the typing", |s| s.contains("1 offline shared"));
    let member = editor_pid(&tmux, "pe:1");
    tmux.run(&["kill-window", "-t", "pe:1"]);
    wait_ended(&member, "the member did not end with its window");
    let kept: Vec<_> = std::fs::read_dir(&here)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("notes.txt.unsent-"))
        })
        .collect();
    assert_eq!(kept.len(), 1, "one copy kept: {kept:?}");
    assert_eq!(
        std::fs::read_to_string(&kept[0]).unwrap(),
        "offline shared\n"
    );
}

/// `host` of a file that is not there yet opens an empty document marked as new, and the
/// first save creates the file with what was typed (as vim does); quitting a new file left
/// untouched creates nothing.
#[test]
fn hosting_a_new_file_creates_it_on_the_first_save() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fresh.rs");
    let Hosted { file, .. } = host_file_past_codes(&tmux, &file);
    tmux.wait("pe:0", "the new file's mark", |s| {
        s.contains("fresh.rs [new file]")
    });
    assert!(!file.exists(), "nothing is written before a save");
    tmux.type_text("pe:0", "fn main() {}");
    tmux.wait("pe:0", "the typing", |s| s.contains("1 fn main() {}"));
    save_and_quit(&tmux, &file, "fn main() {}");
    let untouched = dir.path().join("untouched.txt");
    let other = Tmux::start().expect("tmux, as above");
    host_file_past_codes(&other, &untouched);
    other.keys("pe:0", &["C-q"]);
    other.wait("pe:0", "the exit", |s| s.contains("room codes were"));
    assert!(!untouched.exists());
}

#[test]
fn the_screen_follows_resizes_and_a_paste_arrives_whole() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { file, .. } = host_past_codes(&tmux, dir.path(), "notes.txt", "first line\n");
    let row = |s: &str, i: usize| s.lines().nth(i).unwrap_or("").to_string();
    // Narrower than the members panel allows: it goes, and the status line is on the new
    // second-to-last row.
    tmux.run(&["resize-window", "-t", "pe:0", "-x", "60", "-y", "10"]);
    tmux.wait("pe:0", "the smaller screen", |s| {
        row(s, 8).contains("notes.txt") && !s.contains("(you)")
    });
    tmux.run(&["resize-window", "-t", "pe:0", "-x", "110", "-y", "16"]);
    tmux.wait("pe:0", "the bigger screen", |s| {
        row(s, 14).contains("notes.txt") && s.contains("(you)") && row(s, 0).contains("first line")
    });
    // A bracketed paste: its line break is text, not Enter.
    tmux.run(&["set-buffer", "-b", "p", "pasted\ntext "]);
    tmux.run(&["paste-buffer", "-p", "-b", "p", "-t", "pe:0"]);
    tmux.wait("pe:0", "the paste", |s| {
        row(s, 0).contains("1 pasted") && row(s, 1).contains("2 text first line")
    });
    save_and_quit(&tmux, &file, "pasted\ntext first line\n");
}

/// An unfinished escape sequence (Alt-[ sends `ESC [`) leaves crossterm waiting for more
/// bytes: the editor must still show a teammate's edits meanwhile, not sit in `read`.
#[test]
fn an_unfinished_escape_sequence_does_not_stop_the_editor() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Hosted { log, write, .. } = host_past_codes(&tmux, dir.path(), "notes.txt", "first line\n");
    tmux.window(
        "pe:1",
        &editor(&format!("{BIN} join {write} --name bo"), &log),
    );
    tmux.wait("pe:0", "bo", |s| s.contains("2 here"));
    tmux.keys("pe:0", &["M-["]);
    std::thread::sleep(Duration::from_millis(200));
    tmux.type_text("pe:1", "from bo ");
    tmux.wait("pe:0", "bo's text", |s| s.contains("from bo first line"));
}

/// The process whose parent is `pid` (the editor a window's shell runs).
fn child_of(pid: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == pid).then_some(name)
        })
}

/// CPU time (user + system, in clock ticks) the process `pid` has used so far.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// More input at once than crossterm reads in one go (1 KiB), not as a bracketed paste (as
/// `tmux send-keys`, or a terminal without bracketed paste, sends it): all of it arrives with
/// no further key, and the editor does not spin on what crossterm has not read yet
/// (helper-12's case: it spun at full CPU, and all but the first 1,024 characters waited).
#[test]
fn a_burst_of_input_larger_than_one_read_arrives_whole() {
    let Some(tmux) = Tmux::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let _hosted = host_past_codes(&tmux, dir.path(), "notes.txt", "\n");
    let long = "abcdefghi ".repeat(300);
    tmux.type_text("pe:0", &long);
    tmux.wait("pe:0", "all 3,000 characters", |s| s.contains("Col 3001"));
    let shell = tmux.run(&["display", "-p", "-t", "pe:0", "#{pane_pid}"]);
    let pid = child_of(shell.trim()).expect("the editor's process");
    let before = cpu_ticks(&pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(&pid) - before;
    // A spinning editor uses all of those 2 s (200 ticks); an idle one next to none.
    assert!(used < 100, "the idle editor used {used} ticks in 2 s");
}
