//! Connections that hold the relay's resources without using them: requests that never finish
//! their headers, connections that never send one, too many of either from one address, and
//! members whose peer vanished without closing (a laptop lid, a dead Wi-Fi, a killed VM).

mod common;

use std::time::Duration;

use common::*;
use pairedit::client::Connection;
use pairedit::relay::RelayConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads until the relay closes `tcp` (end of stream or a reset); the bytes it sent first.
async fn closed_by_relay(tcp: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!("{what}: the relay kept the connection open"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the relay keeps `tcp` open for `d` (nothing to read, no end of stream).
async fn still_open(tcp: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(d, tcp.read(&mut buf)).await.is_err()
}

/// Silent members pinged after 400 ms, dropped after about 800 ms.
fn quick_pings() -> RelayConfig {
    RelayConfig {
        ping_after: Some(Duration::from_millis(400)),
        ..RelayConfig::default()
    }
}

fn quick_http() -> RelayConfig {
    RelayConfig {
        header_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    }
}

#[tokio::test]
async fn a_connection_that_sends_no_request_or_half_of_one_is_closed() {
    let relay = TestRelay::with_config(quick_http()).await;
    let room = relay.create_room().await;

    let mut silent = TcpStream::connect(relay.addr).await.unwrap();
    closed_by_relay(&mut silent, "a connection that never sends").await;

    // Slowloris: the start of an upgrade, then a byte of header now and then.
    let mut slow = TcpStream::connect(relay.addr).await.unwrap();
    let start = format!(
        "GET /r/{}?token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n",
        room.room, room.write_token
    );
    slow.write_all(start.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(WAIT, reader.read(&mut buf)).await {
                Err(_) => panic!("a request whose headers trickle in was kept open"),
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
            }
        }
    };
    tokio::select! {
        _ = trickle => {}
        _ = closed => {}
    }

    // A kept-alive connection may ask again, within the header timeout each time, but not
    // for ever: it is closed after three header timeouts.
    let mut chatty = TcpStream::connect(relay.addr).await.unwrap();
    let asked_at = tokio::time::Instant::now();
    let mut answers = 0;
    let mut buf = vec![0u8; 4096];
    loop {
        if chatty
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(WAIT, chatty.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answers += 1,
            _ => break,
        }
        assert!(
            asked_at.elapsed() < WAIT,
            "kept open for {answers} requests"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answers >= 3, "{answers} answers before the close");

    // A request sent in time is answered as before.
    let (status, body) = http_get(relay.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn connections_still_speaking_http_are_limited_per_address() {
    let relay = TestRelay::with_config(RelayConfig {
        max_pending_per_ip: 3,
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    // Three members: their own limit, apart from the pending one.
    let members = [
        join(&room.write_code, "a").await,
        join(&room.write_code, "b").await,
        join(&room.view_code, "c").await,
    ];
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(relay.addr).await.unwrap();
    let said = closed_by_relay(&mut over, "a fourth pending connection").await;
    assert!(said.is_empty(), "closed before any answer");
    for tcp in &mut idle {
        assert!(still_open(tcp, Duration::from_millis(200)).await);
    }
    drop(idle.pop());
    // The slot is given back when the relay sees the close.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = closed_by_relay_or_answer(&mut tcp).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never let in again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in &members {
        assert_eq!(m.text(), "");
    }
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("pairedit_rejected_total{reason=\"too_many_pending\"} "),
        "{metrics}"
    );
    assert!(metric_with(&metrics, "reason=\"too_many_pending\"") >= 1);
}

/// The first answer on `tcp`, or nothing when the relay closes it first.
async fn closed_by_relay_or_answer(tcp: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        _ => Vec::new(),
    }
}

fn metric_with(text: &str, label: &str) -> u64 {
    text.lines()
        .find(|l| !l.starts_with('#') && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A member whose peer stopped answering (no frames, no pongs) is dropped and its presence
/// removed from everyone's screen; members that answer pings stay however quiet they are.
#[tokio::test]
async fn a_member_that_never_answers_a_ping_is_dropped() {
    let relay = TestRelay::with_config(quick_pings()).await;
    let room = relay.create_room().await;
    let watcher = join(&room.write_code, "watcher").await;

    // A stock client: announces itself, then reads (tungstenite answers pings while reading).
    let mut quiet = raw_connect(&relay, &room.room, &room.view_token).await;
    raw_send(&mut quiet, presence(7001, "quiet")).await;
    // One that vanishes: announces itself, then is never read or written again.
    let mut gone = raw_connect(&relay, &room.room, &room.view_token).await;
    raw_send(&mut gone, presence(7002, "gone")).await;
    watcher
        .wait_for("both in", WAIT, |st| {
            let names: Vec<String> = st.members().into_iter().map(|m| m.name).collect();
            names.contains(&"quiet".to_string()) && names.contains(&"gone".to_string())
        })
        .await
        .unwrap();

    let reading = async {
        // Reads (and so answers pings) until the test ends.
        raw_expect(&mut quiet, |s| matches!(s, Seen::Closed(_))).await;
        panic!("the quiet reader was disconnected");
    };
    let watched = async {
        watcher
            .wait_for("gone to go", WAIT, |st| {
                st.members().iter().all(|m| m.name != "gone")
            })
            .await
            .unwrap();
        // Well past the time a silent member is dropped: the readers are still in.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let names: Vec<String> = watcher.members().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"quiet".to_string()), "{names:?}");
    };
    tokio::select! {
        _ = reading => {}
        _ = watched => {}
    }
    assert!(
        matches!(watcher.state().connection, Connection::Connected),
        "the watcher too"
    );
    let metrics = relay.metrics().await;
    assert_eq!(metric_with(&metrics, "reason=\"silent\""), 1, "{metrics}");
    drop(gone);
}

fn presence(id: u64, name: &str) -> Vec<u8> {
    let mut update = yrs::sync::AwarenessUpdate {
        clients: std::collections::HashMap::new(),
    };
    update.clients.insert(
        yrs::block::ClientID::new(id),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock: 1,
            json: format!(r##"{{"user":{{"name":"{name}","color":"#123456"}}}}"##).into(),
        },
    );
    pairedit::protocol::awareness(update)
}

/// A member sending one long message slowly is heard from: the bytes count, not only whole
/// messages (a big paste on a slow uplink must not be dropped as silent, then resent for ever).
#[tokio::test]
async fn a_member_sending_a_long_message_slowly_is_not_silent() {
    let relay = TestRelay::with_config(quick_pings()).await;
    let room = relay.create_room().await;
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let request = format!(
        "GET /r/{}?token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        room.room, room.write_token
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // One binary message of 60,000 bytes, masked (a client's), never finished: its first
    // bytes now, then one every 100 ms for well past the time a silent member is dropped.
    let len: u16 = 60_000;
    let mut frame = vec![0x82, 0x80 | 126];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    tcp.write_all(&frame).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let trickle = async {
        for _ in 0..40 {
            writer.write_all(&[0]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The relay's pings arrive meanwhile; this peer never answers them (it is busy sending).
    let kept = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = trickle => {}
        _ = kept => panic!("the relay closed a member that was sending"),
    }
    let metrics = relay.metrics().await;
    assert_eq!(metric_with(&metrics, "reason=\"silent\""), 0, "{metrics}");
}
