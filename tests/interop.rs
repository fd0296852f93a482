//! Interop with a stock Yjs client: the npm packages `yjs` + `y-websocket`, unchanged, driven by
//! `tests/interop/peer.mjs`, against our relay and our client in the same room.
//!
//! Needs `node` and `npm ci` in tests/interop (`.ci/run` does it). Without them the tests say
//! SKIPPED, unless PAIREDIT_REQUIRE_INTEROP=1 (set by `.ci/run`), which makes that a failure.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use pairedit::client::Client;
use pairedit::relay::CreatedRoom;
use pairedit::sync::Edit;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

fn interop_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let ready = dir.join("node_modules/y-websocket").exists()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok();
    if ready {
        return Some(dir);
    }
    let why =
        "SKIPPED: node or tests/interop/node_modules missing (run `npm ci --prefix tests/interop`)";
    if std::env::var("PAIREDIT_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!("{why}, and PAIREDIT_REQUIRE_INTEROP=1");
    }
    eprintln!("{why}");
    None
}

/// One stock Yjs peer in a node process.
struct NodePeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    events: Vec<Value>,
}

impl NodePeer {
    async fn spawn(
        dir: &PathBuf,
        relay: &TestRelay,
        room: &CreatedRoom,
        token: &str,
        name: &str,
    ) -> NodePeer {
        let url = format!("ws://{}/r", relay.addr);
        Self::spawn_at(dir, &url, &room.room, token, name, &[]).await
    }

    /// A peer on server URL `url` (`ws://` or `wss://` + `/r`), with extra environment.
    async fn spawn_at(
        dir: &PathBuf,
        url: &str,
        room: &str,
        token: &str,
        name: &str,
        env: &[(&str, &std::path::Path)],
    ) -> NodePeer {
        let mut child = Command::new("node")
            .arg(dir.join("peer.mjs"))
            .args([url, room, token, name])
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        NodePeer {
            child,
            stdin,
            lines,
            events: Vec::new(),
        }
    }

    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("node answered in time")
            .expect("read node stdout")
            .expect("node is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line from node {line:?}: {e}"))
    }

    async fn cmd(&mut self, cmd: &str) -> Value {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write to node");
        loop {
            let v = self.next_line().await;
            if let Some(reply) = v.get("reply") {
                return reply.clone();
            }
            self.events.push(v);
        }
    }

    async fn wait_event(&mut self, name: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        loop {
            let v = self.next_line().await;
            if v["event"] == name {
                return v;
            }
            self.events.push(v);
        }
    }

    async fn text(&mut self) -> String {
        self.cmd("text")
            .await
            .as_str()
            .expect("text reply")
            .to_string()
    }

    /// Polls the peer's text until it equals `want`.
    async fn wait_text(&mut self, want: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.text().await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "yjs peer text stayed {got:?}, want {want:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    async fn quit(mut self) {
        let _ = self.cmd("quit").await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_client_and_pairedit_converge_both_ways_with_awareness() {
    let Some(dir) = interop_dir() else { return };
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let rust = join(&room.write_code, "rust-peer").await;
    rust.edit(&Edit::insert(0, "// pairedit was here first\n"))
        .unwrap();
    rust.flush();
    let check = join(&room.view_code, "check").await;
    wait_text(&check, "// pairedit was here first\n").await;

    let mut node = NodePeer::spawn(&dir, &relay, &room, &room.write_token, "node-peer").await;
    node.wait_event("synced").await;
    assert_eq!(
        node.text().await,
        "// pairedit was here first\n",
        "state on join reaches yjs"
    );

    // yjs -> pairedit
    node.cmd(r#"insert 0 "hello from yjs 👋\n""#).await;
    wait_text(&rust, "hello from yjs 👋\n// pairedit was here first\n").await;

    // pairedit -> yjs, with non-BMP text at a UTF-16 boundary
    let len = rust.state().doc.len_chars();
    rust.edit(&Edit::insert(len, "// from pairedit 😀 日本\n"))
        .unwrap();
    rust.edit(&Edit::delete(0, 6)).unwrap();
    rust.flush();
    let want = rust.text();
    node.wait_text(&want).await;

    // Both at once: random concurrent edits on each side converge.
    node.cmd("random 150 7").await;
    let mut seed = 0xC0FFEEu64;
    for _ in 0..150 {
        let edit = random_edit(&mut seed, rust.state().doc.len_chars());
        rust.edit(&edit).unwrap();
    }
    rust.flush();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ours, theirs) = (rust.text(), node.text().await);
        if ours == theirs {
            assert_eq!(rust.state().doc.ytext(), ours);
            assert!(ours.chars().count() > 150);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never converged:\n{ours:?}\n{theirs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    // Awareness both ways: names, our role and cursor reach yjs; yjs's user reaches us.
    rust.set_cursor(1, 4);
    rust.flush();
    rust.wait_for("node-peer in awareness", WAIT, |st| {
        st.members().iter().any(|m| m.name == "node-peer")
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let members = node.cmd("members").await;
        let seen = members
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "rust-peer" && m["role"] == "writer" && m["cursor"] == true);
        if seen {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "yjs never saw rust-peer: {members}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    node.quit().await;
    rust.wait_for("node-peer to leave", WAIT, |st| {
        st.members().iter().all(|m| m.name != "node-peer")
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_viewer_is_read_only() {
    let Some(dir) = interop_dir() else { return };
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let rust = join(&room.write_code, "rust-peer").await;
    rust.edit(&Edit::insert(0, "shared\n")).unwrap();
    rust.flush();

    let mut viewer = NodePeer::spawn(&dir, &relay, &room, &room.view_token, "node-viewer").await;
    viewer.wait_event("synced").await;
    viewer.wait_text("shared\n").await;
    assert!(
        viewer.events.iter().all(|e| e["event"] != "denied"),
        "just joining is not a write"
    );
    viewer.cmd(r#"insert 0 "VIEWER WAS HERE ""#).await;
    viewer.cmd("delete 0 3").await;
    let denied = viewer.wait_event("denied").await;
    assert!(
        denied["reason"]
            .as_str()
            .unwrap_or("")
            .contains("read-only"),
        "{denied}"
    );

    // A later writer edit reaches the viewer, so anything the viewer sent has been handled by now.
    rust.edit(&Edit::insert(7, "more\n")).unwrap();
    rust.flush();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !viewer.text().await.contains("more") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "viewer never got the writer's edit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(rust.text(), "shared\nmore\n");
    let fresh = Client::connect(&room.view_code, fast_opts("fresh"))
        .await
        .unwrap();
    fresh.wait_synced(WAIT).await.unwrap();
    assert_eq!(fresh.text(), "shared\nmore\n");
    let metrics = relay.metrics().await;
    assert!(metric(&metrics, "pairedit_viewer_writes_dropped_total") >= 1);
    viewer.quit().await;
}

/// The stock client over TLS: Node's `ws` trusts our test CA through NODE_EXTRA_CA_CERTS, the
/// standard way to add a CA to Node; nothing in yjs or y-websocket changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_client_over_wss() {
    let Some(dir) = interop_dir() else { return };
    let cert = TestCert::new();
    let relay = TestRelay::with_config(pairedit::relay::RelayConfig {
        tls: Some(cert.server()),
        ..pairedit::relay::RelayConfig::default()
    })
    .await;
    let room = pairedit::client::http::create_room(&relay.http(), None, Some(&cert.client()))
        .await
        .expect("create");
    let opts = pairedit::client::ClientOptions {
        tls: Some(cert.client()),
        ..fast_opts("rust")
    };
    let rust = Client::connect(&room.write_code, opts).await.expect("wss");
    rust.wait_synced(WAIT).await.expect("synced");
    rust.edit(&Edit::insert(0, "over TLS 🔒\n")).unwrap();
    rust.flush();
    wait_text(&rust, "over TLS 🔒\n").await;

    let url = format!("wss://{}/r", relay.addr);
    let env = [("NODE_EXTRA_CA_CERTS", cert.ca.as_path())];
    let mut node =
        NodePeer::spawn_at(&dir, &url, &room.room, &room.write_token, "node-tls", &env).await;
    node.wait_event("synced").await;
    node.wait_text("over TLS 🔒\n").await;
    node.cmd(r#"insert 0 "yjs says hi\n""#).await;
    wait_text(&rust, "yjs says hi\nover TLS 🔒\n").await;
    node.quit().await;
}
