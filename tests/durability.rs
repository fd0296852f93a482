//! `kill -9` the relay process mid-typing, restart it on the same `--data-dir`: every update it
//! had acknowledged (broadcast to a viewer) is still there, and clients reconnect and converge.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use pairedit::client::{Client, Connection};
use pairedit::sync::Edit;
use tokio::process::Child;

async fn spawn_relay(dir: &Path, listen: &str) -> (Child, SocketAddr) {
    let mut args = vec![
        std::ffi::OsString::from("--listen"),
        listen.into(),
        "--data-dir".into(),
    ];
    args.push(dir.into());
    let (mut child, base) = spawn_serve(args).await;
    drain_stderr(&mut child);
    let addr = base
        .strip_prefix("http://")
        .expect("a plain http address")
        .parse()
        .expect("a socket address");
    (child, addr)
}

/// A relay process on a fresh data dir, with one room.
async fn relay_with_room() -> (
    tempfile::TempDir,
    Child,
    SocketAddr,
    pairedit::relay::CreatedRoom,
) {
    let dir = tempfile::tempdir().unwrap();
    let (relay, addr) = spawn_relay(dir.path(), "127.0.0.1:0").await;
    let room = pairedit::client::http::create_room(&format!("http://{addr}"), None, None)
        .await
        .unwrap();
    (dir, relay, addr, room)
}

async fn kill_9(mut child: Child) {
    child.start_kill().expect("SIGKILL");
    let _ = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("relay died");
}

/// Is `small` a subsequence of `big`? (With inserts only, every later text contains every
/// earlier one as a subsequence.)
fn subsequence(small: &str, big: &str) -> bool {
    let mut it = big.chars();
    small.chars().all(|c| it.any(|b| b == c))
}

/// Types `n` single-char inserts of `ch` at pseudo-random places.
fn type_some(c: &Client, ch: &str, n: usize, seed: &mut u64) {
    for _ in 0..n {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = c.state().doc.len_chars();
        c.edit(&Edit::insert((*seed >> 33) as usize % (len + 1), ch))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_edit_is_lost_to_kill_9() {
    let (dir, relay, _, room) = relay_with_room().await;
    let a = join(&room.write_code, "a").await;
    let b = join(&room.write_code, "b").await;
    let v = join(&room.view_code, "v").await;
    let (mut sa, mut sb) = (1u64, 2u64);
    for _ in 0..20 {
        type_some(&a, "a", 10, &mut sa);
        type_some(&b, "b", 10, &mut sb);
        a.flush();
        b.flush();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Acknowledged: what the relay has broadcast to the viewer.
    v.wait_for("400 edits", WAIT, |st| st.doc.len_chars() == 400)
        .await
        .unwrap();
    let acked = v.text();
    // Keep typing and kill the relay mid-stream.
    type_some(&a, "a", 50, &mut sa);
    a.flush();
    kill_9(relay).await;
    for c in [a, b, v] {
        c.close().await;
    }

    let (_relay, addr2) = spawn_relay(dir.path(), "127.0.0.1:0").await;
    let mut code = pairedit::protocol::JoinCode::parse(&room.view_code).unwrap();
    code.authority = addr2.to_string();
    let back = join(&code.to_string(), "back").await;
    let text = back.text();
    assert!(subsequence(&acked, &text), "an acknowledged edit was lost");
    assert!(
        text.matches('a').count() >= 200 && text.matches('b').count() == 200,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_kill_9_and_converge_with_everything() {
    let (dir, relay, addr, room) = relay_with_room().await;
    let a = join(&room.write_code, "a").await;
    let b = join(&room.write_code, "b").await;
    let (mut sa, mut sb) = (3u64, 4u64);
    type_some(&a, "a", 100, &mut sa);
    type_some(&b, "b", 100, &mut sb);
    a.flush();
    b.flush();
    kill_9(relay).await;
    // Typing goes on while the relay is gone.
    type_some(&a, "a", 300, &mut sa);
    type_some(&b, "b", 300, &mut sb);
    for c in [&a, &b] {
        c.wait_for("reconnecting", WAIT, |st| {
            matches!(st.connection, Connection::Reconnecting { .. })
        })
        .await
        .unwrap();
    }
    let (_relay, _) = spawn_relay(dir.path(), &addr.to_string()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ta, tb) = (a.text(), b.text());
        if ta == tb && ta.matches('a').count() == 400 && ta.matches('b').count() == 400 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: {} a, {} b",
            ta.matches('a').count(),
            tb.matches('b').count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.state().connection, Connection::Connected);
    assert_eq!(a.text().chars().count(), 800, "every edit exactly once");
}
