//! Clients survive the network: a relay restart (with `--data-dir`) while people keep typing;
//! edits made offline merge on reconnect, none lost, none applied twice.

mod common;

use common::*;
use pairedit::client::Connection;
use pairedit::relay::RelayConfig;
use pairedit::sync::Edit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_merge_after_a_relay_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..RelayConfig::default()
    };
    let relay = TestRelay::with_config(config.clone()).await;
    let addr = relay.addr;
    let room = relay.create_room().await;
    let a = join(&room.write_code, "a").await;
    let b = join(&room.write_code, "b").await;
    let v = join(&room.view_code, "v").await;
    a.edit(&Edit::insert(0, "start\n")).unwrap();
    a.flush();
    wait_text(&v, "start\n").await;
    b.wait_for("a in awareness", WAIT, |st| {
        st.members().iter().any(|m| m.name == "a")
    })
    .await
    .unwrap();

    relay.stop().await;
    for c in [&a, &b, &v] {
        c.wait_for("reconnecting", WAIT, |st| {
            matches!(st.connection, Connection::Reconnecting { .. })
        })
        .await
        .unwrap();
    }
    // Offline: a types 1,000 edits, b types 10, at positions spread over the text.
    let mut seed = 0x5EEDu64;
    for i in 0..1000 {
        let len = a.state().doc.len_chars();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = if i % 3 == 0 {
            len
        } else {
            (seed >> 33) as usize % (len + 1)
        };
        a.edit(&Edit::insert(at, "x")).unwrap();
    }
    for i in 0..10 {
        b.edit(&Edit::insert(i, "y")).unwrap();
    }
    assert!(
        a.state().queued_updates() >= 1000,
        "a's edits wait in its queue"
    );
    assert!(
        b.members().is_empty(),
        "stale presence is dropped while offline"
    );

    // The relay comes back where it was, with its data dir.
    let relay = TestRelay::at(addr, config).await;
    for c in [&a, &b, &v] {
        c.wait_for("reconnect", WAIT, |st| {
            st.connection == Connection::Connected
        })
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let (ta, tb, tv) = (a.text(), b.text(), v.text());
        if ta == tb && tb == tv && ta.matches('x').count() == 1000 && ta.matches('y').count() == 10
        {
            break ta;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: a {} x, b {} y, v len {}",
            ta.matches('x').count(),
            tb.matches('y').count(),
            tv.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        text.replace(['x', 'y'], ""),
        "start\n",
        "the text from before the restart survives"
    );
    assert_eq!(
        text.chars().count(),
        "start\n".len() + 1010,
        "nothing applied twice"
    );
    assert_eq!(a.state().queued_updates(), 0, "the queue drained");
    // Presence comes back too.
    b.wait_for("a again", WAIT, |st| {
        st.members().iter().any(|m| m.name == "a")
    })
    .await
    .unwrap();
    // A fresh joiner sees the merged text from the relay.
    let late = join(&room.view_code, "late").await;
    assert_eq!(late.text(), text);
    drop(relay);
}

/// A relay that shuts down says so (1001), and a member keeps being told why while it retries,
/// not "could not reach the relay": a host's relay ends when the host quits.
#[tokio::test]
async fn members_are_told_the_relay_shut_down_while_they_retry() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let a = join(&room.write_code, "a").await;
    relay.stop().await;
    for tries in [1, 2] {
        a.wait_for("a retry after the shutdown", WAIT, |st| {
            matches!(&st.connection, Connection::Reconnecting { attempt, .. } if *attempt >= tries)
        })
        .await
        .unwrap();
        let Connection::Reconnecting { reason, .. } = a.state().connection.clone() else {
            panic!("still reconnecting");
        };
        assert!(
            reason.contains("the relay shut down"),
            "try {tries}: {reason}"
        );
    }
}

#[tokio::test]
async fn a_room_the_relay_forgot_is_a_clear_permanent_error() {
    let relay = TestRelay::start().await;
    let addr = relay.addr;
    let room = relay.create_room().await;
    let a = join(&room.write_code, "a").await;
    relay.stop().await;
    // Restarted without a data dir: the room is gone. The client stops retrying and says why.
    let _relay = TestRelay::at(addr, RelayConfig::default()).await;
    a.wait_for("closed", WAIT, |st| {
        matches!(st.connection, Connection::Closed(_))
    })
    .await
    .unwrap();
    match &a.state().connection {
        Connection::Closed(reason) => {
            assert!(reason.contains("does not know this room"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mismatched_protocol_versions_are_refused_with_a_message() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let (status, body) = http_get(
        relay.addr,
        &format!("/r/{}?token={}&v=99", room.room, room.write_token),
    )
    .await;
    assert_eq!(status, 426);
    assert!(
        body.contains("protocol v1") && body.contains("v99"),
        "{body}"
    );
    // Stock clients send no version and are let in (the interop tests cover them).
    let (status, _) = http_get(
        relay.addr,
        &format!("/r/{}?token={}&v=1", room.room, room.write_token),
    )
    .await;
    assert_ne!(status, 426);
}

#[tokio::test]
async fn idle_rooms_are_evicted_to_disk_and_loaded_again_on_join() {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::with_config(RelayConfig {
        data_dir: Some(dir.path().to_path_buf()),
        evict_idle_after: std::time::Duration::ZERO,
        snapshot_every: std::time::Duration::from_millis(50),
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    let a = join(&room.write_code, "a").await;
    a.edit(&Edit::insert(0, "kept while evicted ✓")).unwrap();
    a.flush();
    let v = join(&room.view_code, "v").await;
    wait_text(&v, "kept while evicted ✓").await;
    // A room with members stays in memory. (With eviction after zero idle time the fresh room
    // may already have been evicted once before anyone joined, and loaded again: count from here.)
    let m = relay.metrics().await;
    let (evicted, loaded) = (
        metric(&m, "pairedit_rooms_evicted_total"),
        metric(&m, "pairedit_rooms_loaded_total"),
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        metric(&relay.metrics().await, "pairedit_rooms_evicted_total"),
        evicted
    );
    a.close().await;
    v.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = relay.metrics().await;
        if metric(&m, "pairedit_rooms_evicted_total") == evicted + 1
            && metric(&m, "pairedit_rooms ") == 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never evicted:\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let back = join(&room.view_code, "back").await;
    assert_eq!(back.text(), "kept while evicted ✓");
    assert_eq!(
        metric(&relay.metrics().await, "pairedit_rooms_loaded_total"),
        loaded + 1
    );
    // Wrong tokens are still refused for a loaded room.
    let mut bad = pairedit::protocol::JoinCode::parse(&room.view_code).unwrap();
    bad.token = "v_nope".into();
    assert!(
        pairedit::client::Client::connect(&bad.to_string(), fast_opts("x"))
            .await
            .is_err()
    );
}
