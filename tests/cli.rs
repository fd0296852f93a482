//! The binary end to end: `serve` on port 0, `room create`, `cat`, clean shutdown on SIGTERM.

mod common;

use common::*;
use pairedit::sync::Edit;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pairedit");

async fn run(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(WAIT, Command::new(BIN).args(args).output())
        .await
        .expect("command finished in time")
        .expect("run pairedit")
}

#[tokio::test]
async fn serve_room_create_cat_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut serve, base) = spawn_serve([
        std::ffi::OsStr::new("--listen"),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
    ])
    .await;
    let base = base.as_str();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let created = run(&["room", "create", "--relay", base, "--json"]).await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let room: pairedit::relay::CreatedRoom = serde_json::from_slice(&created.stdout).unwrap();
    let plain = run(&["room", "create", "--relay", base]).await;
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(
        plain.contains("write code") && plain.contains("view code"),
        "{plain}"
    );

    let writer = join(&room.write_code, "writer").await;
    let text = "line one\r\n\tdeux 日本語 e\u{301} 😀\nlast line without newline";
    writer.edit(&Edit::insert(0, text)).unwrap();
    writer.flush();
    let check = join(&room.view_code, "check").await;
    wait_text(&check, text).await;

    let cat = run(&["cat", &room.view_code]).await;
    assert_printed(&cat, text.as_bytes());

    let bad = run(&["cat", &room.view_code.replace("/v_", "/v_x")]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("refused the token"));
    let garbage = run(&["cat", "not-a-code"]).await;
    assert!(!garbage.status.success());
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("not a pairedit join code"));

    writer.close().await;
    check.close().await;
    let pid = serve.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, serve.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("relay stopped"), "{stderr}");
    let stored = dir.path().join(&room.room);
    assert!(
        stored.join("snapshot.ydoc").exists(),
        "room compacted on shutdown"
    );
    let record = std::fs::read_to_string(stored.join("room.json")).unwrap();
    assert!(
        !record.contains(&room.write_token) && !record.contains(&room.view_token),
        "tokens are stored hashed"
    );
}

#[tokio::test]
async fn help_teaches() {
    let help = run(&["--help"]).await;
    let help = String::from_utf8(help.stdout).unwrap();
    for word in ["serve", "room", "cat", "ws://HOST:PORT/r/ROOM/TOKEN"] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
    let serve = String::from_utf8(run(&["serve", "--help"]).await.stdout).unwrap();
    for word in [
        "--listen",
        "--data-dir",
        "--max-frame",
        "[default: 127.0.0.1:7070]",
    ] {
        assert!(
            serve.contains(word),
            "serve --help mentions {word}:\n{serve}"
        );
    }
}

#[tokio::test]
async fn host_refuses_binary_and_invalid_utf8_files_before_touching_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("image.png");
    std::fs::write(&bin, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"caf\xe9\n").unwrap();
    for (path, needle) in [(&bin, "binary"), (&bad, "not valid UTF-8")] {
        let out = run(&["host", path.to_str().unwrap()]).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
        assert!(out.stdout.is_empty(), "no escape codes were written");
    }
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        b"caf\xe9\n",
        "the file is untouched"
    );
    // A missing directory is refused (a missing file in one that exists is a new file), and
    // the reason is said once.
    let missing = run(&["host", "/nonexistent/file.rs"]).await;
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("cannot read /nonexistent/file.rs"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // `join --file` into a directory that is not there: refused at once, not at the first
    // save (and before any relay is asked: this one does not exist).
    let nodir = run(&[
        "join",
        "ws://127.0.0.1:9/r/room/w_token",
        "--file",
        "/nonexistent/copy.txt",
    ])
    .await;
    assert!(!nodir.status.success());
    let err = String::from_utf8_lossy(&nodir.stderr);
    assert!(
        err.contains("the directory /nonexistent does not exist"),
        "{err}"
    );
    // Without a terminal, `host` says so before it starts anything (the output is a pipe here).
    let ok_file = dir.path().join("fine.txt");
    std::fs::write(&ok_file, "fine\n").unwrap();
    let no_tty = run(&["host", ok_file.to_str().unwrap()]).await;
    assert!(!no_tty.status.success());
    let err = String::from_utf8_lossy(&no_tty.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(
        no_tty.stdout.is_empty(),
        "no codes printed: nothing started"
    );
    // A garbled code is a bad code, not a network problem.
    let garbled = run(&["cat", "garbage"]).await;
    let err = String::from_utf8_lossy(&garbled.stderr);
    assert!(
        err.contains("not a pairedit join code") && !err.contains("could not reach"),
        "{err}"
    );
    // `serve --data-dir` on a file: refused before "listening" is printed.
    let not_dir = dir.path().join("plain-file");
    std::fs::write(&not_dir, "").unwrap();
    let serve = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        not_dir.to_str().unwrap(),
    ])
    .await;
    assert!(!serve.status.success());
    assert!(
        serve.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&serve.stdout)
    );
    assert!(String::from_utf8_lossy(&serve.stderr).contains("cannot use --data-dir"));
    let good = dir.path().join("ok.rs");
    std::fs::write(&good, "fn main() {}\n").unwrap();
    let theme = run(&["host", good.to_str().unwrap(), "--theme", "nope"]).await;
    assert!(!theme.status.success());
    assert!(
        String::from_utf8_lossy(&theme.stderr).contains("pairedit-light"),
        "lists the shipped themes"
    );
}

/// `bench probe` looks until its standard input closes, then prints every look as
/// `MICROS CPU SLOWDOWN` on the monotonic clock, each CPU's fastest look at 1.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn bench_probe_prints_its_looks_when_stdin_closes() {
    use tokio::io::AsyncWriteExt as _;
    let before = std::time::Instant::now();
    let mut child = Command::new(BIN)
        .args(["bench", "probe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run pairedit");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"ignored\n").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("stopped when stdin closed")
        .expect("output");
    assert!(out.status.success());
    let looks: Vec<(u64, usize, f64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(!looks.is_empty(), "no looks in 300 ms");
    assert!(looks.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
    // On the same clock as this process's: between its start and now.
    let now_us = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| std::time::Duration::from(t).as_micros() as u64)
        .unwrap();
    let started_us = now_us - before.elapsed().as_micros() as u64;
    assert!(looks.iter().all(|l| (started_us..=now_us).contains(&l.0)));
    let mut cpus: Vec<usize> = looks.iter().map(|l| l.1).collect();
    cpus.sort_unstable();
    cpus.dedup();
    for cpu in cpus {
        let fastest = looks
            .iter()
            .filter(|l| l.1 == cpu)
            .map(|l| l.2)
            .fold(f64::MAX, f64::min);
        assert_eq!(fastest, 1.0, "CPU {cpu}");
    }
}
