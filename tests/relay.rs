//! The relay over real sockets with real clients: convergence, roles, limits, bad input.

mod common;

use std::time::Duration;

use common::*;
use pairedit::client::{Client, ClientError, ClientOptions};
use pairedit::protocol::{self, JoinCode};
use pairedit::relay::RelayConfig;
use pairedit::sync::{Edit, SharedDoc};
use yrs::sync::{Message, SyncMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_random_edits_converge_byte_exactly() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let clients = vec![
        join(&room.write_code, "ana").await,
        join(&room.write_code, "bo").await,
        join(&room.write_code, "cy").await,
    ];
    let mut seeds = [0x9E37_79B9u64, 0x1234_5678, 0xDEAD_BEEF];
    for round in 0..300 {
        for (c, seed) in clients.iter().zip(seeds.iter_mut()) {
            let edit = random_edit(seed, c.state().doc.len_chars());
            c.edit(&edit).expect("edit");
        }
        if round % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    for c in &clients {
        c.flush();
    }
    let want = {
        // Wait until all agree, then compare byte-exactly with a late joiner too.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let texts: Vec<String> = clients.iter().map(Client::text).collect();
            if texts.windows(2).all(|w| w[0] == w[1]) {
                break texts[0].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "clients never converged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(want.chars().count() > 100);
    for c in &clients {
        assert_eq!(c.state().doc.ytext(), want, "mirror equals Y.Text");
    }
    let late = join(&room.view_code, "late").await;
    assert_eq!(late.text(), want);
}

#[tokio::test]
async fn viewer_writes_are_dropped_and_the_viewer_is_told() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let writer = join(&room.write_code, "writer").await;
    writer.edit(&Edit::insert(0, "hello")).unwrap();
    writer.flush();

    // Our own client refuses to edit as a viewer...
    let polite = join(&room.view_code, "polite").await;
    wait_text(&polite, "hello").await;
    assert!(matches!(
        polite.edit(&Edit::insert(0, "x")),
        Err(ClientError::ReadOnly)
    ));

    // ...and the relay enforces it against a client that tries anyway.
    let mut rogue = raw_connect(&relay, &room.room, &room.view_token).await;
    raw_send(
        &mut rogue,
        protocol::sync_step1(&yrs::StateVector::default()),
    )
    .await;
    let step2 = match raw_expect(&mut rogue, |s| {
        matches!(s, Seen::Msg(Message::Sync(SyncMessage::SyncStep2(_))))
    })
    .await
    {
        Seen::Msg(Message::Sync(SyncMessage::SyncStep2(u))) => u,
        other => panic!("{other:?}"),
    };
    let mut local = SharedDoc::from_update(&step2).unwrap();
    assert_eq!(local.text(), "hello");
    // A stock viewer answers the relay's sync step 1 with an empty step 2: not a write, no denial.
    raw_send(
        &mut rogue,
        protocol::sync_step2(local.diff(&local.state_vector())),
    )
    .await;
    // Now real writes: an insert (as update and as step 2) and a delete-only update.
    local.apply_local(&Edit::insert(5, " EVIL")).unwrap();
    let insert = local.take_outgoing().remove(0);
    raw_send(&mut rogue, protocol::sync_update(insert.clone())).await;
    raw_send(&mut rogue, protocol::sync_step2(insert)).await;
    local.apply_local(&Edit::delete(0, 2)).unwrap();
    let delete = local.take_outgoing().remove(0);
    raw_send(&mut rogue, protocol::sync_update(delete)).await;
    // An update that starts past the room's state (its predecessor withheld) is a write too.
    local.apply_local(&Edit::insert(0, "a")).unwrap();
    local.commit_local();
    local.apply_local(&Edit::insert(1, "b")).unwrap();
    let gapped = local.take_outgoing().remove(1);
    raw_send(&mut rogue, protocol::sync_update(gapped)).await;
    for _ in 0..4 {
        match raw_expect(&mut rogue, |s| matches!(s, Seen::Msg(Message::Auth(_)))).await {
            Seen::Msg(Message::Auth(Some(reason))) => {
                assert!(reason.contains("read-only"), "{reason}")
            }
            other => panic!("expected permission denied, got {other:?}"),
        }
    }

    // The writer goes on; nobody ever sees the viewer's text.
    writer.edit(&Edit::insert(5, " world")).unwrap();
    writer.flush();
    wait_text(&polite, "hello world").await;
    assert_eq!(writer.text(), "hello world");
    let fresh = join(&room.view_code, "fresh").await;
    assert_eq!(fresh.text(), "hello world");
    let cat = Client::connect(&room.write_code, fast_opts("cat"))
        .await
        .unwrap();
    cat.wait_synced(WAIT).await.unwrap();
    assert_eq!(cat.text(), "hello world");
    let metrics = relay.metrics().await;
    assert_eq!(metric(&metrics, "pairedit_viewer_writes_dropped_total"), 4);
}

#[tokio::test]
async fn late_joiner_gets_the_document_after_every_writer_left() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let a = join(&room.write_code, "a").await;
    a.edit(&Edit::insert(0, "fn main() {}\n// 日本語 😀\n"))
        .unwrap();
    a.set_meta("name", "main.rs").unwrap();
    a.flush();
    let b = join(&room.view_code, "b").await;
    wait_text(&b, "fn main() {}\n// 日本語 😀\n").await;
    a.close().await;
    b.close().await;
    let late = join(&room.view_code, "late").await;
    assert_eq!(late.text(), "fn main() {}\n// 日本語 😀\n");
    assert_eq!(late.state().doc.meta("name").as_deref(), Some("main.rs"));
}

#[tokio::test]
async fn wrong_token_unknown_room_and_missing_token_are_refused_before_upgrade() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let mut code = JoinCode::parse(&room.write_code).unwrap();
    code.token = protocol::new_token(protocol::Role::Writer);
    let err = Client::connect(&code.to_string(), fast_opts("x"))
        .await
        .err();
    assert!(matches!(err, Some(ClientError::BadToken)), "{err:?}");
    // The view token's neighbour is not the write token.
    let mut code = JoinCode::parse(&room.view_code).unwrap();
    code.token = room.view_token.replacen("v_", "w_", 1);
    assert!(matches!(
        Client::connect(&code.to_string(), fast_opts("x")).await,
        Err(ClientError::BadToken)
    ));
    let mut code = JoinCode::parse(&room.write_code).unwrap();
    code.room = protocol::new_room_id();
    assert!(matches!(
        Client::connect(&code.to_string(), fast_opts("x")).await,
        Err(ClientError::UnknownRoom)
    ));
    assert_eq!(
        http_get(relay.addr, &format!("/r/{}", room.room)).await.0,
        401
    );
    assert_eq!(
        http_get(relay.addr, &format!("/r/{}?token=nope", room.room))
            .await
            .0,
        403
    );
    assert_eq!(http_get(relay.addr, "/r/nope?token=nope").await.0, 404);
    assert_eq!(http_get(relay.addr, "/healthz").await.0, 200);
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "pairedit_rejected_total{reason=\"bad_token\"}"),
        4
    );
    assert_eq!(
        metric(&metrics, "pairedit_rejected_total{reason=\"unknown_room\"}"),
        2
    );
}

#[tokio::test]
async fn oversized_and_malformed_messages_close_only_that_connection() {
    let relay = TestRelay::with_config(RelayConfig {
        max_frame: 64 * 1024,
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    let writer = join(&room.write_code, "writer").await;
    let watcher = join(&room.view_code, "watcher").await;

    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            protocol::sync_update(vec![7u8; 100 * 1024]),
            protocol::close::TOO_BIG,
        ),
        (
            vec![0xff, 0xff, 0xff, 0x00],
            protocol::close::PROTOCOL_ERROR,
        ),
        (vec![0, 2, 40, 1, 2, 3], protocol::close::PROTOCOL_ERROR), // truncated update
        (
            protocol::sync_update(vec![9, 9, 9, 9]),
            protocol::close::PROTOCOL_ERROR,
        ), // not an update
        (vec![0, 9], protocol::close::PROTOCOL_ERROR),              // unknown sync step
    ];
    for (i, (bytes, code)) in cases.into_iter().enumerate() {
        let mut ws = raw_connect(&relay, &room.room, &room.write_token).await;
        raw_send(&mut ws, bytes).await;
        match raw_expect(&mut ws, |s| matches!(s, Seen::Closed(_))).await {
            Seen::Closed(Some((got, reason))) => {
                assert_eq!(got, code, "case {i}: {reason}");
                assert!(!reason.is_empty(), "case {i}: a reason is given");
            }
            other => panic!("case {i}: {other:?}"),
        }
        // Everyone else carries on.
        writer.edit(&Edit::insert(0, i.to_string())).unwrap();
        writer.flush();
        let want = writer.text();
        wait_text(&watcher, &want).await;
    }
    // A text frame is not the protocol either.
    {
        use futures_util::SinkExt as _;
        let mut ws = raw_connect(&relay, &room.room, &room.write_token).await;
        ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
            .await
            .unwrap();
        assert!(matches!(
            raw_expect(&mut ws, |s| matches!(s, Seen::Closed(_))).await,
            Seen::Closed(Some((1002, _)))
        ));
    }
    assert_eq!(writer.text(), "43210");
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "pairedit_disconnects_total{reason=\"too_big\"}"),
        1
    );
    assert_eq!(
        metric(&metrics, "pairedit_disconnects_total{reason=\"malformed\"}"),
        5
    );
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// One item of client 16401001 at `clock` between the items `left` and `right` (v1 update:
/// an Item with both origins and a string), as a hand-made update may send it.
fn item_update(clock: u64, left: (u64, u64), right: (u64, u64), text: &str) -> Vec<u8> {
    let mut update = Vec::new();
    for n in [1, 1, 16_401_001, clock] {
        varint(&mut update, n);
    }
    update.push(0xc4);
    for n in [left.0, left.1, right.0, right.1, text.len() as u64] {
        varint(&mut update, n);
    }
    update.extend_from_slice(text.as_bytes());
    varint(&mut update, 0);
    update
}

/// An update whose items leave a hole in their client's clocks (client 16401001 from clock 11,
/// 0–10 not sent yet) is held back, as a stock Yjs peer holds it: yrs alone would put it in the
/// text at once, and the room would show a text no Yjs client shows (found by QA with a
/// hand-made update). When the missing items arrive, both go in, in order, for everyone. Past
/// the room's limit of held updates, one more is refused.
#[tokio::test]
async fn an_update_that_skips_clocks_waits_for_the_ones_before_it() {
    use yrs::updates::decoder::Decode as _;
    use yrs::{GetString as _, Transact as _};
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let writer = join(&room.write_code, "writer").await;
    writer.edit(&Edit::insert(0, "hello world")).unwrap();
    writer.flush();
    let watcher = join(&room.view_code, "watcher").await;
    wait_text(&watcher, "hello world").await;
    let a = writer.state().doc.doc_handle().client_id().get();
    let after_gap = item_update(11, (a, 4), (a, 5), " INJECTED ");
    let before_gap = item_update(0, (a, 10), (a, 10), "0123456789A");
    let mut ws = raw_connect(&relay, &room.room, &room.write_token).await;
    raw_send(&mut ws, protocol::sync_update(after_gap.clone())).await;
    // Nobody sees it, late joiners included; the room goes on.
    writer.edit(&Edit::insert(11, "!")).unwrap();
    writer.flush();
    wait_text(&watcher, "hello world!").await;
    let late = join(&room.view_code, "late").await;
    assert_eq!(late.text(), "hello world!");
    // The items before it arrive: both go in, as a Yjs peer (or yrs, given them in order) has them.
    raw_send(&mut ws, protocol::sync_update(before_gap.clone())).await;
    let reference = yrs::Doc::new();
    let text = reference.get_or_insert_text("content");
    for u in [
        writer.state().doc.diff(&Default::default()),
        before_gap,
        after_gap,
    ] {
        let u = yrs::Update::decode_v1(&u).unwrap();
        reference.transact_mut().apply_update(u).unwrap();
    }
    let want = text.get_string(&reference.transact());
    assert!(
        want.contains("INJECTED") && want.contains("0123456789A"),
        "{want}"
    );
    wait_text(&watcher, &want).await;
    wait_text(&late, &want).await;
    // Held back past the room's limit: refused, with the reason.
    for clock in 0..65 {
        let u = item_update(1000 + 2 * clock, (a, 4), (a, 5), "x");
        raw_send(&mut ws, protocol::sync_update(u)).await;
    }
    match raw_expect(&mut ws, |s| matches!(s, Seen::Closed(_))).await {
        Seen::Closed(Some((code, reason))) => {
            assert_eq!(code, protocol::close::PROTOCOL_ERROR, "{reason}");
            assert!(reason.contains("skips clocks"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(watcher.text(), want);
}

/// A room holding "ok" on a relay with `config`, and a second writer that then inserts `len`
/// more characters: returns the relay, the room, that writer, its text, and why its session ended.
async fn oversized_edit(
    config: RelayConfig,
    len: usize,
) -> (TestRelay, pairedit::relay::CreatedRoom, Client, String) {
    let relay = TestRelay::with_config(config).await;
    let room = relay.create_room().await;
    let small = join(&room.write_code, "small").await;
    small.edit(&Edit::insert(0, "ok")).unwrap();
    small.flush();
    let big = join(&room.write_code, "big").await;
    wait_text(&big, "ok").await;
    big.edit(&Edit::insert(2, "x".repeat(len))).unwrap();
    big.flush();
    big.wait_for("the session to end", WAIT, |st| {
        matches!(st.connection, pairedit::client::Connection::Closed(_))
    })
    .await
    .unwrap();
    let reason = match &big.state().connection {
        pairedit::client::Connection::Closed(reason) => reason.clone(),
        other => panic!("{other:?}"),
    };
    (relay, room, big, reason)
}

#[tokio::test]
async fn document_size_limit_refuses_growth_with_a_clear_close() {
    let config = RelayConfig {
        max_doc_bytes: 4 * 1024,
        ..RelayConfig::default()
    };
    let (_relay, room, _big, reason) = oversized_edit(config, 8 * 1024).await;
    assert!(
        reason.contains("1009") && reason.contains("limit"),
        "{reason}"
    );
    let check = join(&room.view_code, "check").await;
    assert_eq!(check.text(), "ok");
}

#[tokio::test]
async fn presence_is_shared_and_cleared_on_leave() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let ana = join(&room.write_code, "ana").await;
    let bo = join(&room.view_code, "bo").await;
    ana.edit(&Edit::insert(0, "abcdef")).unwrap();
    ana.set_cursor(1, 3);
    ana.flush();
    bo.wait_for("ana", WAIT, |st| {
        st.members()
            .iter()
            .any(|m| m.name == "ana" && m.cursor.is_some())
    })
    .await
    .unwrap();
    ana.wait_for("bo", WAIT, |st| {
        st.members()
            .iter()
            .any(|m| m.name == "bo" && m.role == Some(protocol::Role::Viewer))
    })
    .await
    .unwrap();
    let ana_seen = bo.members().into_iter().find(|m| m.name == "ana").unwrap();
    assert_eq!(ana_seen.role, Some(protocol::Role::Writer));
    ana.close().await;
    bo.wait_for("ana to leave", WAIT, |st| {
        st.members().iter().all(|m| m.name != "ana")
    })
    .await
    .unwrap();
}

fn awareness_query() -> Vec<u8> {
    use yrs::updates::encoder::Encode as _;
    Message::AwarenessQuery.encode_v1()
}

/// An awareness message of `(client id, clock, state JSON)` entries.
fn presence_msg(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    let mut update = yrs::sync::AwarenessUpdate {
        clients: std::collections::HashMap::new(),
    };
    for &(id, clock, json) in entries {
        update.clients.insert(
            yrs::block::ClientID::new(id),
            yrs::sync::awareness::AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
    }
    protocol::awareness(update)
}

/// The presence a new member of the room is given: client id -> (clock, state JSON).
async fn presence_seen(relay: &TestRelay, room: &str, token: &str) -> Vec<(u64, u32, String)> {
    let mut probe = raw_connect(relay, room, token).await;
    raw_send(&mut probe, awareness_query()).await;
    let seen = raw_expect(&mut probe, |s| {
        matches!(s, Seen::Msg(Message::Awareness(_)))
    })
    .await;
    let Seen::Msg(Message::Awareness(update)) = seen else {
        unreachable!()
    };
    let mut states: Vec<(u64, u32, String)> = update
        .clients
        .into_iter()
        .filter(|(_, e)| e.json.as_ref() != "null")
        .map(|(id, e)| (id.get(), e.clock, e.json.to_string()))
        .collect();
    states.sort();
    states
}

/// Asks `ws`'s relay for every presence state and waits for the answer, known by client `id`
/// at `clock` (other members' news may come first): everything `ws` sent before was handled.
async fn answered(ws: &mut RawWs, id: u64, clock: u32) {
    raw_send(ws, awareness_query()).await;
    raw_expect(ws, |s| {
        matches!(s, Seen::Msg(Message::Awareness(u))
            if u.clients.get(&yrs::block::ClientID::new(id)).is_some_and(|e| e.clock == clock))
    })
    .await;
}

/// Waits until `pred` holds for the presence a new member is given.
async fn wait_presence(
    relay: &TestRelay,
    room: &pairedit::relay::CreatedRoom,
    what: &str,
    pred: impl Fn(&[(u64, u32, String)]) -> bool,
) -> Vec<(u64, u32, String)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = presence_seen(relay, &room.room, &room.view_token).await;
        if pred(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: presence is {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Presence a connection may not publish is dropped by the relay, never stored or passed on:
/// state that is not JSON (a stock Yjs client's `JSON.parse` throws on it), a state over the
/// size limit, someone else's client id (a writer's, even while the writer is away), a removal of
/// a state the connection does not hold, a stale clock, more client ids than a connection may have.
#[tokio::test]
async fn presence_a_member_may_not_publish_is_dropped() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let writer = join(&room.write_code, "writer").await;
    let wid = writer.state().client_id();
    writer.edit(&Edit::insert(0, "hi")).unwrap();
    writer.flush();
    wait_presence(&relay, &room, "the writer", |s| {
        s.iter().any(|e| e.0 == wid)
    })
    .await;

    let mut viewer = raw_connect(&relay, &room.room, &room.view_token).await;
    let big = format!(r#"{{"user":{{"name":"{}"}}}}"#, "x".repeat(20 << 10));
    raw_send(
        &mut viewer,
        presence_msg(&[
            (31337, 1, r#"{"user":"#),
            (31338, 1, &big),
            (wid, 10_000, r#"{"user":{"name":"impostor"}}"#),
            (55, 3, "null"),
            (777, 1, r#"{"user":{"name":"v1"}}"#),
        ]),
    )
    .await;
    let many: Vec<(u64, u32, &str)> = (1000..1011).map(|id| (id, 1, "{}")).collect();
    raw_send(&mut viewer, presence_msg(&many)).await;
    raw_send(
        &mut viewer,
        presence_msg(&[(777, 1, r#"{"user":"stale"}"#)]),
    )
    .await;
    raw_send(
        &mut viewer,
        presence_msg(&[(777, 2, r#"{"user":{"name":"v2"}}"#)]),
    )
    .await;
    // Handled in order: once the query is answered, everything before it was.
    answered(&mut viewer, 777, 2).await;

    let seen = presence_seen(&relay, &room.room, &room.view_token).await;
    for (id, _, json) in &seen {
        assert!(
            serde_json::from_str::<serde_json::Value>(json).is_ok(),
            "{id}: {json}"
        );
    }
    let ids: Vec<u64> = seen.iter().map(|e| e.0).collect();
    for gone in [31337, 31338, 55] {
        assert!(!ids.contains(&gone), "{gone} in {ids:?}");
    }
    let writer_seen = seen.iter().find(|e| e.0 == wid).expect("the writer");
    assert!(writer_seen.2.contains("\"writer\""), "{}", writer_seen.2);
    assert!(seen.contains(&(777, 2, r#"{"user":{"name":"v2"}}"#.to_string())));
    let viewers: Vec<&u64> = ids.iter().filter(|id| **id != wid).collect();
    // One of the 1000s the relay took (which 7 of the 11 depends on the message's order).
    let taken = ids
        .iter()
        .copied()
        .find(|id| (1000..1011).contains(id))
        .expect("some taken");
    assert_eq!(
        viewers.len(),
        8,
        "one connection speaks for 8 ids at most: {ids:?}"
    );
    assert_eq!(
        metric(&relay.metrics().await, "pairedit_awareness_dropped_total"),
        4 + 4 + 1
    );
    // Presence switched off and on again (a stock client does on a tab's blur) is one id, not a
    // new one each time; a clock no removal could pass is not taken.
    for clock in 3..9 {
        let state = if clock % 2 == 1 {
            "null"
        } else {
            r#"{"user":"again"}"#
        };
        raw_send(&mut viewer, presence_msg(&[(777, clock, state)])).await;
    }
    raw_send(&mut viewer, presence_msg(&[(taken, u32::MAX, "{}")])).await;
    answered(&mut viewer, 777, 8).await;
    let seen = presence_seen(&relay, &room.room, &room.view_token).await;
    assert!(
        seen.contains(&(777, 8, r#"{"user":"again"}"#.to_string())),
        "{seen:?}"
    );
    assert!(seen.contains(&(taken, 1, "{}".to_string())), "{seen:?}");
    assert_eq!(
        metric(&relay.metrics().await, "pairedit_awareness_dropped_total"),
        4 + 4 + 1 + 1
    );

    // A writer's presence id that never wrote, taken by a viewer while its writer is away,
    // is still the writer's when it comes back.
    let mut first = raw_connect(&relay, &room.room, &room.write_token).await;
    raw_send(&mut first, presence_msg(&[(4242, 1, r#"{"user":"w"}"#)])).await;
    wait_presence(&relay, &room, "4242", |s| s.iter().any(|e| e.0 == 4242)).await;
    drop(first);
    wait_presence(&relay, &room, "4242 gone", |s| {
        s.iter().all(|e| e.0 != 4242)
    })
    .await;
    let mut v2 = raw_connect(&relay, &room.room, &room.view_token).await;
    raw_send(
        &mut v2,
        presence_msg(&[(4242, 10_000, r#"{"user":"squat"}"#)]),
    )
    .await;
    answered(&mut v2, 777, 8).await;
    let mut back = raw_connect(&relay, &room.room, &room.write_token).await;
    raw_send(&mut back, presence_msg(&[(4242, 5, r#"{"user":"back"}"#)])).await;
    wait_presence(&relay, &room, "4242 back", |s| {
        s.contains(&(4242, 5, r#"{"user":"back"}"#.to_string()))
    })
    .await;

    // Nor does another writer take it while its writer is there.
    let mut other = raw_connect(&relay, &room.room, &room.write_token).await;
    raw_send(
        &mut other,
        presence_msg(&[(4242, 50, r#"{"user":"other"}"#)]),
    )
    .await;
    answered(&mut other, 777, 8).await;
    let seen = presence_seen(&relay, &room.room, &room.view_token).await;
    assert!(
        seen.contains(&(4242, 5, r#"{"user":"back"}"#.to_string())),
        "{seen:?}"
    );

    // A viewer's states go when it does.
    drop(viewer);
    wait_presence(&relay, &room, "the viewer's ids gone", |s| {
        s.iter().all(|e| e.0 != 777 && !(1000..1011).contains(&e.0))
    })
    .await;
    drop((v2, back, other));
}

#[tokio::test]
async fn a_full_room_refuses_more_members() {
    let relay = TestRelay::with_config(RelayConfig {
        max_members: 2,
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    let _a = join(&room.write_code, "a").await;
    let _b = join(&room.view_code, "b").await;
    let third = Client::connect(&room.view_code, fast_opts("c")).await.err();
    assert!(
        matches!(third, Some(ClientError::Refused(503))),
        "{third:?}"
    );
}

#[tokio::test]
async fn rooms_survive_a_clean_restart_with_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = RelayConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..RelayConfig::default()
    };
    let relay = TestRelay::with_config(config.clone()).await;
    let room = relay.create_room().await;
    let a = join(&room.write_code, "a").await;
    a.edit(&Edit::insert(0, "persisted ✓")).unwrap();
    a.flush();
    let check = join(&room.view_code, "check").await;
    wait_text(&check, "persisted ✓").await;
    relay.stop().await;

    let relay = TestRelay::with_config(config).await;
    let mut code = JoinCode::parse(&room.view_code).unwrap();
    code.authority = relay.addr.to_string();
    let back = join(&code.to_string(), "back").await;
    assert_eq!(back.text(), "persisted ✓");
    let mut bad = code.clone();
    bad.token = "v_wrong".into();
    assert!(matches!(
        Client::connect(&bad.to_string(), fast_opts("x")).await,
        Err(ClientError::BadToken)
    ));
}

/// Reads sync updates off a raw socket until one arrives; returns its payload.
async fn next_update(ws: &mut RawWs) -> Vec<u8> {
    match raw_expect(ws, |s| {
        matches!(s, Seen::Msg(Message::Sync(SyncMessage::Update(_))))
    })
    .await
    {
        Seen::Msg(Message::Sync(SyncMessage::Update(u))) => u,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_flush_sends_exactly_one_merged_update_and_nothing_when_idle() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let opts = pairedit::client::ClientOptions {
        // Only explicit flushes: the test decides where the window ends.
        flush_interval: Duration::from_secs(3600),
        ..fast_opts("typist")
    };
    let typist = Client::connect(&room.write_code, opts).await.unwrap();
    typist.wait_synced(WAIT).await.unwrap();
    let mut watcher = raw_connect(&relay, &room.room, &room.view_token).await;
    let mut mirror = SharedDoc::new();

    let typed = "let x = \"日本語 😀\";";
    for (i, ch) in typed.chars().enumerate() {
        typist.edit(&Edit::insert(i, ch.to_string())).unwrap();
    }
    typist.flush();
    let update = next_update(&mut watcher).await;
    mirror.apply_remote(&update).unwrap();
    assert_eq!(
        mirror.text(),
        typed,
        "one update carries all {} edits",
        typed.chars().count()
    );

    typist.flush(); // nothing changed: nothing must be sent
    typist.edit(&Edit::delete(0, 4)).unwrap();
    typist.flush();
    let update = next_update(&mut watcher).await;
    assert_eq!(
        mirror.apply_remote(&update).unwrap(),
        vec![Edit::delete(0, 4)]
    );
    assert_eq!(mirror.text(), typist.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_never_reads_is_disconnected_and_the_room_goes_on() {
    let relay = TestRelay::with_config(RelayConfig {
        send_queue: 4,
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    let writer = join(&room.write_code, "writer").await;
    let reader = join(&room.view_code, "reader").await;
    // Connects, then never reads a byte: its socket buffers fill, then its queue.
    let _stalled = raw_connect(&relay, &room.room, &room.view_token).await;
    let chunk = "x".repeat(512 * 1024);
    for i in 0..40 {
        writer.edit(&Edit::insert(0, chunk.as_str())).unwrap();
        writer.flush();
        wait_text(&reader, &writer.text()).await;
        if i > 4
            && metric(
                &relay.metrics().await,
                "pairedit_disconnects_total{reason=\"slow\"}",
            ) > 0
        {
            break;
        }
    }
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "pairedit_disconnects_total{reason=\"slow\"}"),
        1
    );
    assert_eq!(
        metric(&metrics, "pairedit_connections{role=\"viewer\"}"),
        1,
        "only the reader is left"
    );
    writer.edit(&Edit::insert(0, "still here")).unwrap();
    writer.flush();
    wait_text(&reader, &writer.text()).await;
}

#[tokio::test]
async fn room_creation_stops_at_max_rooms() {
    let relay = TestRelay::with_config(RelayConfig {
        max_rooms: 1,
        ..RelayConfig::default()
    })
    .await;
    relay.create_room().await;
    let err = pairedit::client::http::create_room(&relay.http(), None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err:#}");
    assert_eq!(
        metric(
            &relay.metrics().await,
            "pairedit_rejected_total{reason=\"max_rooms\"}"
        ),
        1
    );
}

#[tokio::test]
async fn create_token_rate_limit_and_connections_per_address() {
    let relay = TestRelay::with_config(RelayConfig {
        create_token: Some("s3cret".into()),
        max_conns_per_ip: 3,
        ..RelayConfig::default()
    })
    .await;
    let http = relay.http();
    let err = pairedit::client::http::create_room(&http, None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a create token"), "{err:#}");
    assert!(err.to_string().contains("--create-token"), "{err:#}");
    let err = pairedit::client::http::create_room(&http, Some("wrong"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err:#}");
    assert!(
        err.to_string()
            .contains("the create token given is not this relay's"),
        "a wrong token is told apart from none: {err:#}"
    );
    let room = pairedit::client::http::create_room(&http, Some("s3cret"), None)
        .await
        .unwrap();
    // The token's holder is trusted: no per-address limit for it.
    for _ in 0..15 {
        pairedit::client::http::create_room(&http, Some("s3cret"), None)
            .await
            .expect("a trusted creator is not rate limited");
    }
    // Guesses are: ten in a burst per address (two were made above), then 429.
    let mut guesses = 2;
    let refused = loop {
        let e = pairedit::client::http::create_room(&http, Some("guess"), None)
            .await
            .expect_err("a wrong token never creates");
        if e.to_string().contains("429") {
            break e;
        }
        guesses += 1;
        assert!(guesses <= 10, "no rate limit on guesses");
    };
    assert_eq!(guesses, 10);
    assert!(refused.to_string().contains("429"), "{refused:#}");
    // Without a create token, anyone may create, ten in a burst per address.
    let open = TestRelay::start().await;
    let mut made = 0;
    let refused = loop {
        match pairedit::client::http::create_room(&open.http(), None, None).await {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made <= 10, "no rate limit");
    };
    assert_eq!(made, 10);
    assert!(refused.to_string().contains("429"), "{refused:#}");

    let _a = join(&room.write_code, "a").await;
    let _b = join(&room.view_code, "b").await;
    let _c = join(&room.view_code, "c").await;
    let fourth = Client::connect(&room.view_code, fast_opts("d")).await.err();
    assert!(
        matches!(fourth, Some(ClientError::Refused(429))),
        "{fourth:?}"
    );
    drop(_c);
    // The slot comes back when a connection ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Client::connect(&room.view_code, fast_opts("d")).await {
            Ok(_) => break,
            Err(ClientError::Refused(429)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "pairedit_rejected_total{reason=\"create_token\"}"),
        10
    );
    assert_eq!(
        metric(&metrics, "pairedit_rejected_total{reason=\"rate_limited\"}"),
        1
    );
    assert!(
        metric(
            &metrics,
            "pairedit_rejected_total{reason=\"too_many_connections\"}"
        ) >= 1
    );
}

#[tokio::test]
async fn out_of_order_updates_wait_for_what_they_depend_on() {
    let relay = TestRelay::start().await;
    let room = relay.create_room().await;
    let watcher = join(&room.view_code, "watcher").await;
    let mut local = SharedDoc::new();
    local.apply_local(&Edit::insert(0, "first ")).unwrap();
    local.commit_local();
    local.apply_local(&Edit::insert(6, "second")).unwrap();
    let updates = local.take_outgoing();
    let mut ws = raw_connect(&relay, &room.room, &room.write_token).await;
    // The second update arrives first: it cannot apply yet, and nothing is broken by it.
    raw_send(&mut ws, protocol::sync_update(updates[1].clone())).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(watcher.text(), "");
    raw_send(&mut ws, protocol::sync_update(updates[0].clone())).await;
    wait_text(&watcher, "first second").await;
}

/// A host lends its built-in relay its own document: the room keeps no copy, the big sync
/// step 2 never crosses the socket, and edits flow both ways: a member's into the host's rope
/// (in-process, through the host's session), the host's to every member. That holds even when a
/// member's update is handled after the host's edit reached the shared document but before the
/// host's own message about it (the host flushes late here): that member must still get it.
/// Everyone ends byte-equal, and a viewer's write changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lent_room_uses_the_hosts_document_and_edits_flow_both_ways() {
    use pairedit::client::{ClientState, SessionHandle};
    let seeds = std::sync::Arc::new(pairedit::relay::Seeds::default());
    let relay = TestRelay::with_config(RelayConfig {
        seeds: Some(seeds.clone()),
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    let text: String = (0..20_000)
        .map(|i| format!("line {i}: 日本 😀 e\u{301}\r\n"))
        .collect();
    let mut doc = SharedDoc::with_text(&text);
    doc.set_meta("name", "big.txt");
    let mut state = ClientState::detached(doc, protocol::Role::Writer, "host");
    state.synced = true;
    let handle = SessionHandle::detached(state);
    seeds.put(&room.room, pairedit::commands::lend(&handle));
    // The host sends only when told to (flush()), so its edit can sit in the shared document
    // while another member's update is handled.
    let host_opts = ClientOptions {
        flush_interval: Duration::from_secs(3600),
        ..fast_opts("host")
    };
    let code = JoinCode::parse(&room.write_code).unwrap();
    let host = Client::launch(code, host_opts, handle, protocol::Role::Writer, async {});
    let viewer = join(&room.view_code, "viewer").await;
    wait_text(&viewer, &text).await;
    assert_eq!(viewer.state().doc.meta("name").as_deref(), Some("big.txt"));
    let writer = join(&room.write_code, "writer").await;
    wait_text(&writer, &text).await;

    // A member's edit reaches the host's rope.
    writer.edit(&Edit::insert(0, "W")).unwrap();
    writer.flush();
    let want = format!("W{text}");
    wait_text(&host, &want).await;
    assert_eq!(host.state().doc.rope().to_string(), want);

    // The host's edit enters the shared document; a member's update is handled before the
    // host's message: both still reach everyone.
    host.edit(&Edit::insert(1, "H")).unwrap();
    host.state().doc.commit_local();
    writer.edit(&Edit::insert(0, "X")).unwrap();
    writer.flush();
    let want = format!("XWH{text}");
    wait_text(&writer, &want).await;
    wait_text(&viewer, &want).await;
    assert!(
        host.state().queued_updates() > 0,
        "the host has not sent its edit: the relay passed it on from the shared document"
    );
    host.flush();
    wait_text(&host, &want).await;

    // A viewer's write is dropped by the relay: nothing reaches the host's document.
    let mut rogue = raw_connect(&relay, &room.room, &room.view_token).await;
    let mut other = SharedDoc::new();
    other.apply_local(&Edit::insert(0, "ROGUE")).unwrap();
    for u in other.take_outgoing() {
        raw_send(&mut rogue, protocol::sync_update(u)).await;
    }
    writer.edit(&Edit::insert(0, ".")).unwrap();
    writer.flush();
    let want = format!(".{want}");
    wait_text(&host, &want).await;
    let late = join(&room.view_code, "late").await;
    wait_text(&late, &want).await;
    for c in [&host, &writer, &viewer, &late] {
        assert_eq!(c.text(), want, "byte-equal everywhere");
    }
    // What the relay received is a few small messages, not the document.
    let received = metric(&relay.metrics().await, "pairedit_bytes_received_total");
    assert!(
        (received as usize) < text.len() / 10,
        "the relay received {received} bytes for a {}-byte document",
        text.len()
    );
}

/// A writer whose document (or paste) is bigger than the relay's message limit is told so,
/// with the flag to change, before sending — instead of being cut off mid-send and retrying the
/// same send forever. Its text stays, and the room is untouched.
#[tokio::test]
async fn a_message_over_the_relays_limit_is_refused_by_the_client_with_the_fix() {
    let config = RelayConfig {
        max_frame: 16 * 1024,
        ..RelayConfig::default()
    };
    let (relay, room, big, reason) = oversized_edit(config, 64 * 1024).await;
    // A member learns the limit as it connects: an editor refuses a paste it could never
    // send (tests/editor.rs) rather than going offline for it.
    let probe = join(&room.write_code, "probe").await;
    assert_eq!(probe.state().relay_max_frame, Some(16 * 1024));
    assert!(probe.state().too_big(15 * 1024).is_some());
    assert!(probe.state().too_big(8 * 1024).is_none());
    drop(probe);
    assert!(
        reason.contains("limit") && reason.contains("--max-frame 131072"),
        "{reason}"
    );
    assert_eq!(
        big.text(),
        format!("ok{}", "x".repeat(64 * 1024)),
        "the edit stays local"
    );
    // The relay never saw it: nobody was cut off for an oversized message.
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "pairedit_disconnects_total{reason=\"too_big\"}"),
        0
    );
    let check = join(&room.view_code, "check").await;
    assert_eq!(check.text(), "ok");
    // The room goes on: a small edit still flows.
    let small = join(&room.write_code, "small again").await;
    small.edit(&Edit::insert(2, "!")).unwrap();
    small.flush();
    wait_text(&check, "ok!").await;
}

/// Shutting the relay down closes every connection with `1001` and its reason — members of
/// several rooms, viewers and writers alike — and the relay's run returns in time.
#[tokio::test]
async fn shutdown_closes_every_connection_with_going_away() {
    let relay = TestRelay::start().await;
    let (a, b) = (relay.create_room().await, relay.create_room().await);
    let mut sockets = vec![
        raw_connect(&relay, &a.room, &a.write_token).await,
        raw_connect(&relay, &a.room, &a.view_token).await,
        raw_connect(&relay, &b.room, &b.view_token).await,
    ];
    for ws in &mut sockets {
        // Each is in its room: the relay's sync step 1 arrived.
        raw_expect(ws, |s| {
            matches!(s, Seen::Msg(Message::Sync(SyncMessage::SyncStep1(_))))
        })
        .await;
    }
    relay.stop().await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        match raw_expect(ws, |s| matches!(s, Seen::Closed(_))).await {
            Seen::Closed(Some((code, reason))) => {
                assert_eq!(code, protocol::close::GOING_AWAY, "socket {i}: {reason}");
                assert_eq!(reason, "relay shutting down");
            }
            other => panic!("socket {i}: {other:?}"),
        }
    }
}

/// A document bigger than one fragment (the relay sends large messages in 64 KiB pieces, so its
/// write buffers stay small) reaches a stock WebSocket client whole: the sync step 2 it gets
/// reassembles to the writer's text byte for byte, and so does a big update.
#[tokio::test]
async fn big_messages_arrive_whole_through_fragments() {
    let relay = TestRelay::with_config(RelayConfig {
        max_frame: 8 << 20,
        ..RelayConfig::default()
    })
    .await;
    let room = relay.create_room().await;
    let writer = join(&room.write_code, "writer").await;
    let mut seed = 7u64;
    let mut text = String::new();
    while text.len() < 300 * 1024 {
        text.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    writer.edit(&Edit::insert(0, text.clone())).unwrap();
    writer.flush();
    let watcher = join(&room.view_code, "watcher").await;
    wait_text(&watcher, &text).await;

    // A stock client: its sync step 1 (empty) is answered with the whole document.
    let mut ws = raw_connect(&relay, &room.room, &room.view_token).await;
    raw_send(&mut ws, protocol::sync_step1(&yrs::StateVector::default())).await;
    let Seen::Msg(Message::Sync(SyncMessage::SyncStep2(update))) = raw_expect(
        &mut ws,
        |s| matches!(s, Seen::Msg(Message::Sync(SyncMessage::SyncStep2(u))) if u.len() > 1024),
    )
    .await
    else {
        unreachable!()
    };
    assert!(
        update.len() > 4 * 64 * 1024,
        "the test needs several fragments"
    );
    let replica = SharedDoc::from_update(&update).unwrap();
    assert_eq!(replica.text(), text);

    // A big update while connected is broadcast in pieces too.
    let more = "ünïcödé 😀 line\r\n".repeat(20_000);
    writer.edit(&Edit::insert(0, more.clone())).unwrap();
    writer.flush();
    let Seen::Msg(Message::Sync(SyncMessage::Update(update))) = raw_expect(
        &mut ws,
        |s| matches!(s, Seen::Msg(Message::Sync(SyncMessage::Update(u))) if u.len() > 64 * 1024),
    )
    .await
    else {
        unreachable!()
    };
    let mut replica = replica;
    replica.apply_remote(&update).unwrap();
    assert_eq!(replica.text(), format!("{more}{text}"));
    wait_text(&watcher, &format!("{more}{text}")).await;
}
