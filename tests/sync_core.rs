//! The pure sync core: the rope mirror stays equal to the Y.Text, replicas converge, and the
//! batcher turns many local edits into one update that reproduces them.

use pairedit::sync::{Batcher, Edit, SharedDoc};
use proptest::prelude::*;
use yrs::updates::decoder::Decode as _;

/// Pieces of text that stress offset conversion: multi-byte, astral (surrogate pairs in UTF-16),
/// combining marks, ZWJ sequences, CRLF and tabs.
const PIECES: &[&str] = &[
    "a",
    "xyz",
    "é",
    "e\u{301}",
    "日本語",
    "😀",
    "👩\u{200d}💻",
    "\r\n",
    "\t",
    "ñ",
    " ",
    "\n",
    "Ω≈ç√",
];

#[derive(Debug, Clone)]
enum Op {
    Insert {
        frac: f64,
        piece: usize,
        times: usize,
    },
    Delete {
        frac: f64,
        len: usize,
    },
    /// Type at the cursor (where the previous edit ended): what composes.
    Type {
        piece: usize,
    },
    /// Delete before the cursor.
    Backspace {
        len: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0.0..=1.0f64, 0..PIECES.len(), 1..4usize)
            .prop_map(|(frac, piece, times)| Op::Insert { frac, piece, times }),
        1 => (0.0..=1.0f64, 0..6usize).prop_map(|(frac, len)| Op::Delete { frac, len }),
        4 => (0..PIECES.len()).prop_map(|piece| Op::Type { piece }),
        1 => (1..4usize).prop_map(|len| Op::Backspace { len }),
    ]
}

/// The edit `op` makes in a text of `len` chars; `cursor` follows the edits like a caret.
fn to_edit(op: &Op, len: usize, cursor: &mut usize) -> Edit {
    *cursor = (*cursor).min(len);
    let edit = match op {
        Op::Insert { frac, piece, times } => {
            Edit::insert((frac * len as f64) as usize, PIECES[*piece].repeat(*times))
        }
        Op::Delete { frac, len: n } => {
            let at = (frac * len as f64) as usize;
            Edit::delete(at, (*n).min(len - at))
        }
        Op::Type { piece } => Edit::insert(*cursor, PIECES[*piece]),
        Op::Backspace { len: n } => {
            let n = (*n).min(*cursor);
            Edit::delete(*cursor - n, n)
        }
    };
    *cursor = edit.at + edit.insert.chars().count();
    edit
}

/// A yrs doc as `SharedDoc` makes it (UTF-16 offsets), with a fixed client ID.
fn ydoc(client: u64) -> yrs::Doc {
    yrs::Doc::with_options(yrs::Options {
        client_id: yrs::block::ClientID::new(client),
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    })
}

fn utf16_of(s: &str, char_idx: usize) -> u32 {
    s.chars().take(char_idx).map(char::len_utf16).sum::<usize>() as u32
}

/// Everything `w` has not sent yet, applied by `r`.
fn send(w: &mut SharedDoc, r: &mut SharedDoc) {
    for u in w.take_outgoing() {
        r.apply_remote(&u).unwrap();
    }
}

/// `e` made in a raw yrs text by index, as yrs' own API does it (`before` is the text before).
fn edit_by_index(doc: &yrs::Doc, text: &yrs::TextRef, before: &str, e: &Edit) {
    use yrs::{Text as _, Transact as _};
    let at16 = utf16_of(before, e.at);
    let del16 = utf16_of(before, e.at + e.delete) - at16;
    let mut txn = doc.transact_mut();
    if del16 > 0 {
        text.remove_range(&mut txn, at16, del16);
    }
    if !e.insert.is_empty() {
        text.insert(&mut txn, at16, &e.insert);
    }
}

fn full_state(doc: &yrs::Doc) -> Vec<u8> {
    use yrs::{ReadTxn as _, Transact as _};
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

#[test]
fn typing_goes_into_yrs_by_id_after_the_first_key() {
    let mut doc = SharedDoc::new();
    let mut replica = SharedDoc::new();
    doc.apply_local(&Edit::insert(0, "fn main() {}")).unwrap();
    doc.commit_local();
    let mut at = 11;
    for key in ["\n", "  ", "l", "é", "😀", "t"] {
        doc.apply_local(&Edit::insert(at, key)).unwrap();
        doc.commit_local();
        at += key.chars().count();
    }
    // The first key is not where the text before it ended (that was after the `}`).
    assert_eq!(
        doc.continued_inserts(),
        5,
        "every key after the first continues it"
    );
    for u in doc.take_outgoing() {
        replica.apply_remote(&u).unwrap();
    }
    assert_eq!(replica.text(), "fn main() {\n  lé😀t}");
    assert_eq!(doc.ytext(), doc.text());
    // A remote change to the text ends the run: the next key goes in by index, then runs on.
    replica.apply_local(&Edit::insert(0, "// x\n")).unwrap();
    for u in replica.take_outgoing() {
        doc.apply_remote(&u).unwrap();
    }
    let at = doc.len_chars() - 1;
    doc.apply_local(&Edit::insert(at, "!")).unwrap();
    doc.commit_local();
    assert_eq!(doc.continued_inserts(), 5);
    doc.apply_local(&Edit::insert(at + 1, "?")).unwrap();
    doc.commit_local();
    assert_eq!(doc.continued_inserts(), 6);
    assert_eq!(doc.ytext(), "// x\nfn main() {\n  lé😀t!?}");
}

#[test]
fn typing_by_id_is_undone_and_redone_like_any_edit() {
    let mut doc = SharedDoc::new();
    let mut peer = SharedDoc::new();
    // A capture window long enough to group what follows the boundary.
    doc.enable_undo(60_000);
    doc.apply_local(&Edit::insert(0, "one")).unwrap();
    doc.commit_local();
    doc.undo_boundary();
    // Typed on, backspaced, typed on again: one undo step. All but the first go by ID (the
    // first insert of a document has no left origin, so its update gives no tail).
    for edit in [
        Edit::insert(3, " two"),
        Edit::insert(7, "x"),
        Edit::delete(7, 1),
        Edit::insert(7, "!"),
    ] {
        doc.apply_local(&edit).unwrap();
        doc.commit_local();
    }
    assert_eq!(doc.continued_inserts(), 3);
    assert_eq!(doc.text(), "one two!");
    let undone = doc.undo();
    assert!(!undone.is_empty());
    assert_eq!(doc.text(), "one");
    assert_eq!(doc.ytext(), "one");
    doc.redo();
    assert_eq!(doc.text(), "one two!");
    // After the redo (not a continuation), typing goes by index again, then by ID.
    doc.apply_local(&Edit::insert(8, "?")).unwrap();
    doc.commit_local();
    doc.apply_local(&Edit::insert(9, "?")).unwrap();
    doc.commit_local();
    assert_eq!(doc.continued_inserts(), 4);
    for u in doc.take_outgoing() {
        peer.apply_remote(&u).unwrap();
    }
    assert_eq!(peer.text(), "one two!??");
    assert_eq!(doc.ytext(), doc.text());
}

#[test]
fn a_peers_typing_lands_without_a_delta_once_its_place_is_known() {
    let mut writer = SharedDoc::new();
    let mut reader = SharedDoc::new();
    writer
        .apply_local(&Edit::insert(0, "let x = 1;\n"))
        .unwrap();
    send(&mut writer, &mut reader);
    let mut at = 9;
    for key in ["2", "3", "😀", "é"] {
        writer.apply_local(&Edit::insert(at, key)).unwrap();
        send(&mut writer, &mut reader);
        at += 1;
    }
    // Backspace twice (a delete by ID), then type on after the deleted characters.
    writer.apply_local(&Edit::delete(at - 1, 1)).unwrap();
    send(&mut writer, &mut reader);
    writer.apply_local(&Edit::delete(at - 2, 1)).unwrap();
    send(&mut writer, &mut reader);
    writer.apply_local(&Edit::insert(at - 2, "4")).unwrap();
    send(&mut writer, &mut reader);
    // All but the first two: "2" went in before the `;`, not after the first insert.
    assert_eq!(reader.remote_known(), 6, "every update after the first two");
    assert_eq!(reader.text(), "let x = 1234;\n");
    assert_eq!(reader.ytext(), reader.text());
    // The reader's own edit ends the run on its side: the next update goes through yrs' delta.
    reader.apply_local(&Edit::insert(0, "// ")).unwrap();
    reader.commit_local();
    writer.apply_local(&Edit::insert(at - 1, "5")).unwrap();
    send(&mut writer, &mut reader);
    assert_eq!(reader.remote_known(), 6);
    writer.apply_local(&Edit::insert(at, "6")).unwrap();
    send(&mut writer, &mut reader);
    assert_eq!(reader.remote_known(), 7);
    assert_eq!(reader.text(), "// let x = 123456;\n");
    send(&mut reader, &mut writer);
    assert_eq!(writer.text(), reader.text());
}

/// A peer's edit away from where it last typed (a jump, a delete elsewhere, a replaced
/// character) is placed from the characters its update names, not from yrs' delta; the rope
/// must stay the Y.Text, and the edits returned must turn the old text into the new one.
#[test]
fn a_peers_edit_elsewhere_is_placed_from_the_characters_it_names() {
    let mut writer = SharedDoc::new();
    let mut reader = SharedDoc::new();
    writer
        .apply_local(&Edit::insert(
            0,
            "fn main() {\n    println!(\"😀 héllo\");\n}\n",
        ))
        .unwrap();
    for u in writer.take_outgoing() {
        reader.apply_remote(&u).unwrap();
    }
    let jumps = [
        Edit::insert(3, "x"),
        Edit::delete(20, 1),
        Edit {
            at: 27,
            delete: 1,
            insert: "Y".into(),
        },
        // The emoji is two UTF-16 units: two IDs to place.
        Edit::delete(26, 1),
        Edit::insert(38, "// end"),
        Edit::insert(12, "日本"),
        Edit::delete(1, 1),
    ];
    for (k, e) in jumps.iter().enumerate() {
        writer.apply_local(e).unwrap();
        let before = reader.rope().clone();
        let placed = reader.remote_placed();
        let mut edits = Vec::new();
        for u in writer.take_outgoing() {
            edits.extend(reader.apply_remote(&u).unwrap());
        }
        assert_eq!(
            reader.remote_placed(),
            placed + 1,
            "edit {k} ({e:?}) was placed"
        );
        let mut replayed = before;
        for edit in &edits {
            edit.apply_to(&mut replayed);
        }
        assert_eq!(
            replayed.to_string(),
            reader.text(),
            "edit {k}: the edits returned"
        );
        assert_eq!(reader.text(), reader.ytext(), "edit {k}");
        assert_eq!(reader.text(), writer.text(), "edit {k}");
    }
    assert_eq!(
        reader.text(),
        "f xmain() {日本\n    pritln!(\"Yhéllo\");\n}\n// end"
    );
}

/// After a peer replaced a selection elsewhere (deletes and an insert in one update), its next
/// key continues that insert: the reader knows the place from the update before.
#[test]
fn typing_on_after_a_replaced_selection_is_known() {
    let mut writer = SharedDoc::new();
    let mut reader = SharedDoc::new();
    writer
        .apply_local(&Edit::insert(0, "let x = 10;\n"))
        .unwrap();
    send(&mut writer, &mut reader);
    writer
        .apply_local(&Edit {
            at: 8,
            delete: 2,
            insert: "4".into(),
        })
        .unwrap();
    send(&mut writer, &mut reader);
    let known = reader.remote_known();
    writer.apply_local(&Edit::insert(9, "2")).unwrap();
    send(&mut writer, &mut reader);
    assert_eq!(reader.remote_known(), known + 1);
    assert_eq!(reader.text(), "let x = 42;\n");
    assert_eq!(reader.ytext(), reader.text());
}

/// A file's text (in yrs without an ID map) is edited at several places: once deletes keep
/// coming, the map is built from yrs and deletes go in by ID. The document must be the one yrs'
/// own index deletes make, byte for byte; with undo on, undo must bring the text back.
#[test]
fn deletes_go_in_by_id_once_the_map_is_built() {
    use yrs::{Text as _, Transact as _};
    let content = "fn main() {\r\n\tprintln!(\"😀 e\u{301} 日本\");\r\n}\r\n// end\n";
    let with_content = |client| {
        let d = ydoc(client);
        let t = d.get_or_insert_text(pairedit::protocol::TEXT_NAME);
        t.insert(&mut d.transact_mut(), 0, content);
        d
    };
    let mut doc = SharedDoc::with_doc(with_content(1));
    let mut undoable = SharedDoc::with_doc(with_content(1));
    undoable.enable_undo(500);
    let reference = with_content(1);
    let rtext = reference.get_or_insert_text(pairedit::protocol::TEXT_NAME);
    // Deletes here and there (each its own transaction), a jump insert between them.
    let edits = [
        Edit::delete(30, 1),
        Edit::delete(0, 1),
        Edit::delete(20, 2),
        Edit::insert(10, "x"),
        Edit::delete(19, 1),
        Edit::delete(25, 3),
        Edit::delete(4, 1),
        Edit::delete(3, 1),
        Edit::delete(17, 1),
    ];
    for e in &edits {
        let before = doc.text();
        doc.apply_local(e).unwrap();
        doc.commit_local();
        undoable.apply_local(e).unwrap();
        undoable.undo_boundary();
        edit_by_index(&reference, &rtext, &before, e);
    }
    assert!(
        doc.deleted_by_id() >= 3,
        "{} deletes by ID",
        doc.deleted_by_id()
    );
    assert_eq!(full_state(doc.doc()), full_state(&reference));
    assert_eq!(doc.text(), doc.ytext());
    assert!(undoable.deleted_by_id() >= 3);
    assert_eq!(undoable.text(), doc.text());
    for _ in &edits {
        undoable.undo();
    }
    assert_eq!(undoable.text(), content);
    assert_eq!(undoable.ytext(), content);
}

/// A stock client's embed has no string to map: deletes stay by index, and stay right.
#[test]
fn an_embed_keeps_deletes_by_index() {
    use yrs::{Any, ReadTxn as _, Text as _, Transact as _};
    let peer = ydoc(5);
    let text = peer.get_or_insert_text(pairedit::protocol::TEXT_NAME);
    {
        let mut txn = peer.transact_mut();
        text.insert(&mut txn, 0, "abcdefgh");
        text.insert_embed(&mut txn, 4, Any::from(vec![1u8]));
    }
    let state = peer
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    let mut doc = SharedDoc::from_update(&state).unwrap();
    for _ in 0..6 {
        doc.apply_local(&Edit::delete(1, 1)).unwrap();
        doc.commit_local();
    }
    assert_eq!(doc.deleted_by_id(), 0);
    assert_eq!(doc.text(), "agh");
    assert_eq!(doc.ytext(), "agh");
}

/// `set_meta` with a delete pending that rebuilds the ID map (from a review: it hung, the map's
/// rebuild taking a lock `set_meta` held). Bounded: the thread must finish within 10 s.
#[test]
fn set_meta_after_deletes_does_not_hang() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut doc = SharedDoc::with_text("hello world, hello world");
        for i in 0..3 {
            doc.apply_local(&Edit::delete(i * 3, 1)).unwrap();
            doc.commit_local();
        }
        doc.apply_local(&Edit::delete(0, 1)).unwrap();
        doc.set_meta("language", "rust");
        tx.send((doc.text(), doc.ytext())).unwrap();
    });
    let (text, ytext) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("set_meta hung");
    assert_eq!(text, ytext);
}

/// A peer inserting between the halves of an emoji: yrs turns each half into U+FFFD, and the
/// rope must follow (from a review: it kept the emoji, with equal lengths).
#[test]
fn an_insert_inside_a_surrogate_pair_rebuilds_the_mirror() {
    use yrs::{Text as _, Transact as _};
    let mut doc = SharedDoc::new();
    doc.apply_local(&Edit::insert(0, "a😀b")).unwrap();
    let peer = ydoc(4);
    let text = peer.get_or_insert_text(pairedit::protocol::TEXT_NAME);
    for u in doc.take_outgoing() {
        peer.transact_mut()
            .apply_update(yrs::Update::decode_v1(&u).unwrap())
            .unwrap();
    }
    let update = {
        let mut txn = peer.transact_mut();
        text.insert(&mut txn, 2, "x");
        txn.encode_update_v1()
    };
    let old = doc.text();
    let edits = doc.apply_remote(&update).unwrap();
    assert_eq!(doc.text(), doc.ytext());
    // The edits still turn the old text into the new one (the rebuild's edit is of the rope as
    // the ops before it left it), and the "a" before the pair is not replaced.
    let mut rope = ropey::Rope::from_str(&old);
    for e in &edits {
        assert!(
            e.at >= 1 && e.at + e.delete <= rope.len_chars(),
            "{edits:?}"
        );
        e.apply_to(&mut rope);
    }
    assert_eq!(rope.to_string(), doc.text());
}

/// A hostile insert whose left origin is the first half of an emoji, with no right origin:
/// yrs cuts the emoji there (two U+FFFD, no event for it) and puts the item elsewhere. The
/// length is unchanged; the mirror must follow all the same, with the ID map and without.
#[test]
fn an_origin_inside_a_surrogate_pair_is_followed_wherever_the_insert_lands() {
    for with_map in [true, false] {
        let mut writer = SharedDoc::with_doc(ydoc(7));
        writer.apply_local(&Edit::insert(0, "a😀b")).unwrap();
        let mut reader = if with_map {
            SharedDoc::new()
        } else {
            SharedDoc::with_doc(ydoc(5))
        };
        send(&mut writer, &mut reader);
        // Client 9, clock 0: "x" with left origin (7, 1), the emoji's first half.
        let hostile = [1, 1, 9, 0, 0x80 | 4, 7, 1, 1, b'x', 0];
        let edits = reader.apply_remote(&hostile).unwrap();
        assert_eq!(reader.text(), reader.ytext(), "with map: {with_map}");
        assert!(reader.text().contains('\u{FFFD}'), "{:?}", reader.text());
        let mut rope = ropey::Rope::from_str("a😀b");
        for e in &edits {
            e.apply_to(&mut rope);
        }
        assert_eq!(rope.to_string(), reader.text());
    }
}

/// Two peers delete the same character at once: the second delete changes nothing, and the
/// length check sends it to the delta instead of removing a character from the rope.
#[test]
fn a_delete_of_what_is_already_deleted_is_not_placed() {
    let mut a = SharedDoc::new();
    let mut b = SharedDoc::new();
    let mut reader = SharedDoc::new();
    a.apply_local(&Edit::insert(0, "abcdef")).unwrap();
    for u in a.take_outgoing() {
        b.apply_remote(&u).unwrap();
        reader.apply_remote(&u).unwrap();
    }
    a.apply_local(&Edit::delete(2, 1)).unwrap();
    b.apply_local(&Edit::delete(2, 1)).unwrap();
    for u in a.take_outgoing() {
        reader.apply_remote(&u).unwrap();
    }
    assert_eq!(reader.text(), "abdef");
    let placed = reader.remote_placed();
    for u in b.take_outgoing() {
        assert!(reader.apply_remote(&u).unwrap().is_empty());
    }
    assert_eq!(reader.remote_placed(), placed, "not placed");
    assert_eq!(reader.text(), "abdef");
    assert_eq!(reader.ytext(), "abdef");
}

/// A writer and a reader of "hello world" with a few jumps typed: the reader's ID map is built.
fn writer_and_reader_with_map() -> (SharedDoc, SharedDoc) {
    let mut writer = SharedDoc::new();
    writer.apply_local(&Edit::insert(0, "hello world")).unwrap();
    let mut reader = SharedDoc::from_update(&writer.encode_state()).unwrap();
    writer.take_outgoing();
    // Updates the map could place: once enough wanted it, it is built from yrs (8 here: the
    // map `from_update` started with went at once, with the first update's parent-only insert).
    for at in [5, 1, 3, 8, 10, 12, 14, 16] {
        writer.apply_local(&Edit::insert(at, "#")).unwrap();
        for u in writer.take_outgoing() {
            reader.apply_remote(&u).unwrap();
        }
    }
    (writer, reader)
}

/// Char offset of `pat` in `w`'s text.
fn at(w: &SharedDoc, pat: &str) -> usize {
    let t = w.text();
    t[..t.find(pat).expect("in the text")].chars().count()
}

/// An edit made from the text it applies to.
type EditOf<'a> = &'a dyn Fn(&SharedDoc) -> Edit;

/// `edits` made one transaction each, merged into one update as a flush window is.
fn merged_window(w: &mut SharedDoc, edits: &[EditOf]) -> Vec<u8> {
    let mut batcher = Batcher::new();
    for edit in edits {
        let e = edit(w);
        w.apply_local(&e).unwrap();
        w.commit_local();
        for u in w.take_outgoing() {
            batcher.push(u);
        }
    }
    batcher.flush().unwrap().expect("an update")
}

/// Inserts the map cannot place (the first one's left origin was deleted before) are placed by
/// a walk each while each stays whole; one typed inside another, or partly deleted again, goes
/// to yrs' delta, and the rope still follows exactly.
#[test]
fn inserts_placed_by_walks_stay_whole() {
    let windows: [&[EditOf]; 3] = [
        // Typed where "r" was, and more a little later: placed.
        &[&|w| Edit::insert(at(w, "o##l") + 2, "XYZ"), &|w| {
            Edit::insert(at(w, "h#") + 1, "Q")
        }],
        // One inside the other: not by walks.
        &[&|w| Edit::insert(at(w, "o##l") + 2, "XYZ"), &|w| {
            Edit::insert(at(w, "YZ"), "Q")
        }],
        // Partly deleted again: not by walks.
        &[
            &|w| Edit::insert(at(w, "o##l") + 2, "XYZ"),
            &|w| Edit::delete(at(w, "Y"), 1),
            &|_| Edit::insert(0, "<"),
        ],
    ];
    for (i, window) in windows.iter().enumerate() {
        let (mut writer, mut reader) = writer_and_reader_with_map();
        // A character deleted before the window: yrs' own insert there names it as origin.
        writer
            .apply_local(&Edit::delete(at(&writer, "r"), 1))
            .unwrap();
        for u in writer.take_outgoing() {
            reader.apply_remote(&u).unwrap();
        }
        let old = reader.text();
        let placed = reader.remote_placed();
        let update = merged_window(&mut writer, window);
        let edits = reader.apply_remote(&update).unwrap();
        assert_eq!(reader.text(), writer.text(), "window {i}");
        assert_eq!(reader.ytext(), reader.text(), "window {i}");
        let mut replay = ropey::Rope::from_str(&old);
        for e in &edits {
            e.apply_to(&mut replay);
        }
        assert_eq!(replay.to_string(), reader.text(), "window {i}");
        assert!(
            edits.iter().all(|e| e.delete < old.chars().count()),
            "window {i}: placed, not rebuilt from the whole text"
        );
        assert_eq!(
            reader.remote_placed(),
            placed + u64::from(i == 0),
            "window {i}"
        );
    }
}

/// A flush window merged into one update with inserts at several places: one at the start (no
/// left origin), one inside an insert of the same window, one partly deleted again, and a delete
/// of old text. The reader places it from its ID map, without yrs' delta, and the edits it
/// reports turn its old text into the new one.
#[test]
fn a_merged_update_with_several_inserts_is_placed_from_the_map() {
    let (mut writer, mut reader) = writer_and_reader_with_map();
    let old = reader.text();
    assert_eq!(old, "h#e#llo## #w#o#r#ld");
    let mut batcher = Batcher::new();
    let edits: [&dyn Fn(&SharedDoc) -> Edit; 6] = [
        &|w| Edit::insert(at(w, "#w"), "😀 big "),
        // At the very start: no left origin.
        &|_| Edit::insert(0, ">> "),
        // Inside the window's first insert.
        &|w| Edit::insert(at(w, "ig "), "XYZ"),
        // Part of the window's own insert.
        &|w| Edit::delete(at(w, "Y"), 1),
        &|w| Edit::delete(at(w, "#o#"), 3),
        &|w| Edit::insert(at(w, "d") + 1, "!"),
    ];
    for edit in edits {
        let e = edit(&writer);
        writer.apply_local(&e).unwrap();
        writer.commit_local();
        for u in writer.take_outgoing() {
            batcher.push(u);
        }
    }
    let merged = batcher.flush().unwrap().expect("an update");
    let placed = reader.remote_placed();
    let edits = reader.apply_remote(&merged).unwrap();
    assert_eq!(writer.text(), ">> h#e#llo## 😀 bXZig #wr#ld!");
    assert_eq!(reader.text(), writer.text());
    assert_eq!(reader.ytext(), reader.text());
    assert_eq!(
        reader.remote_placed(),
        placed + 1,
        "placed, not from the delta"
    );
    let mut replay = ropey::Rope::from_str(&old);
    for e in &edits {
        e.apply_to(&mut replay);
    }
    assert_eq!(replay.to_string(), reader.text());
    // The map kept every ID: the next merged update is placed too.
    for e in [
        Edit::insert(1, "a"),
        Edit::insert(20, "b"),
        Edit::delete(4, 2),
    ] {
        writer.apply_local(&e).unwrap();
        writer.commit_local();
        for u in writer.take_outgoing() {
            batcher.push(u);
        }
    }
    let merged = batcher.flush().unwrap().expect("an update");
    reader.apply_remote(&merged).unwrap();
    assert_eq!(reader.remote_placed(), placed + 2);
    assert_eq!(reader.text(), writer.text());
    assert_eq!(reader.ytext(), reader.text());
}

#[test]
fn a_continuation_that_completes_a_held_back_update_goes_through_the_delta() {
    let mut writer = SharedDoc::new();
    let mut third = SharedDoc::new();
    let mut reader = SharedDoc::new();
    let updates = |d: &mut SharedDoc| d.take_outgoing();
    writer.apply_local(&Edit::insert(0, "ab")).unwrap();
    writer.commit_local();
    writer.apply_local(&Edit::insert(2, "c")).unwrap();
    for u in updates(&mut writer) {
        reader.apply_remote(&u).unwrap();
        third.apply_remote(&u).unwrap();
    }
    // The writer types on ("d", which the reader could place by itself); the third peer sees
    // it and types right after it, and that reaches the reader first: yrs holds it back.
    writer.apply_local(&Edit::insert(3, "d")).unwrap();
    let d = updates(&mut writer);
    for u in &d {
        third.apply_remote(u).unwrap();
    }
    third.apply_local(&Edit::insert(4, "XY")).unwrap();
    for u in updates(&mut third) {
        reader.apply_remote(&u).unwrap();
    }
    assert_eq!(
        reader.text(),
        "abc",
        "held back until the writer's \"d\" arrives"
    );
    let known = reader.remote_known();
    let mut edits = Vec::new();
    for u in &d {
        edits.extend(reader.apply_remote(u).unwrap());
    }
    assert_eq!(
        reader.remote_known(),
        known,
        "it brings the held-back edit in too"
    );
    // Placed by yrs' delta, not rebuilt from the whole text.
    assert_eq!(edits, vec![Edit::insert(3, "dXY")]);
    assert_eq!(reader.text(), "abcdXY");
    assert_eq!(reader.ytext(), reader.text());
}

#[test]
fn no_tail_is_learned_from_an_update_that_completes_a_held_back_one() {
    // A third peer replaces the writer's next character before the reader has it; its update
    // arrives first. The writer's character then comes in deleted, together with the third
    // peer's, and the writer's next key must not be placed after it by assumption: yrs orders
    // the two by client ID (the third peer's is higher here).
    let mut writer = SharedDoc::with_doc(ydoc(1));
    let mut third = SharedDoc::with_doc(ydoc(2));
    let mut reader = SharedDoc::with_doc(ydoc(3));
    writer.apply_local(&Edit::insert(0, "ab")).unwrap();
    writer.commit_local();
    writer.apply_local(&Edit::insert(2, "c")).unwrap();
    for u in writer.take_outgoing() {
        reader.apply_remote(&u).unwrap();
        third.apply_remote(&u).unwrap();
    }
    writer.apply_local(&Edit::insert(3, "d")).unwrap();
    let d = writer.take_outgoing();
    for u in &d {
        third.apply_remote(u).unwrap();
    }
    third
        .apply_local(&Edit {
            at: 3,
            delete: 1,
            // The same character: the delta of the writer's "d" then looks like its own insert.
            insert: "d".into(),
        })
        .unwrap();
    let from_third = third.take_outgoing();
    for u in &from_third {
        reader.apply_remote(u).unwrap();
    }
    for u in &d {
        reader.apply_remote(u).unwrap();
    }
    assert_eq!(reader.text(), reader.ytext());
    // The writer types on after its "d" before it hears of the replacement.
    writer.apply_local(&Edit::insert(4, "e")).unwrap();
    let e = writer.take_outgoing();
    for u in &e {
        reader.apply_remote(u).unwrap();
    }
    assert_eq!(reader.text(), reader.ytext());
    for u in &from_third {
        writer.apply_remote(u).unwrap();
    }
    assert_eq!(reader.text(), writer.ytext());
}

#[test]
fn half_a_surrogate_pair_deleted_by_a_peer_never_desyncs_the_mirror() {
    let mut peer = SharedDoc::with_doc(ydoc(3));
    let mut reader = SharedDoc::new();
    let send = |from: &mut SharedDoc, to: &mut SharedDoc| {
        for u in from.take_outgoing() {
            to.apply_remote(&u).unwrap();
        }
    };
    for (at, key) in [(0, "x"), (1, "y"), (2, "🦀")] {
        peer.apply_local(&Edit::insert(at, key)).unwrap();
        send(&mut peer, &mut reader);
    }
    assert_eq!(reader.remote_known(), 1, "the crab was placed by ID");
    // Delete only the crab's second UTF-16 unit, clock 3 of client 3 (as a buggy or hostile
    // peer could): no structs, one delete range.
    let half = [0, 1, 3, 1, 3, 1];
    reader.apply_remote(&half).unwrap();
    peer.apply_remote(&half).unwrap();
    assert_eq!(reader.text(), reader.ytext());
    let at = peer.len_chars();
    peer.apply_local(&Edit::insert(at, "z")).unwrap();
    send(&mut peer, &mut reader);
    assert_eq!(reader.text(), reader.ytext());
    assert_eq!(reader.text(), peer.ytext());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A reader places a writer's typing from the update before it, not from yrs' delta; with
    /// its own edits and a third peer's arriving in between (held back a while), its rope must
    /// stay the Y.Text and everyone must converge.
    #[test]
    fn known_remote_edits_keep_the_mirror_exact(
        ops in prop::collection::vec(op(), 1..80),
        reader_ops in prop::collection::vec(op(), 0..20),
        reader_every in 2..12usize,
        third_every in 3..15usize,
    ) {
        let mut writer = SharedDoc::new();
        let mut reader = SharedDoc::new();
        let mut third = SharedDoc::new();
        let (mut wc, mut rc, mut tc) = (0, 0, 0);
        let mut from_reader = Vec::new();
        let mut from_third = Vec::new();
        let mut reader_ops = reader_ops.iter();
        for (i, op) in ops.iter().enumerate() {
            let e = to_edit(op, writer.len_chars(), &mut wc);
            writer.apply_local(&e).unwrap();
            for u in writer.take_outgoing() {
                reader.apply_remote(&u).unwrap();
                third.apply_remote(&u).unwrap();
                prop_assert_eq!(reader.text(), reader.ytext());
            }
            if i % reader_every == 0
                && let Some(op) = reader_ops.next()
            {
                let e = to_edit(op, reader.len_chars(), &mut rc);
                reader.apply_local(&e).unwrap();
                from_reader.extend(reader.take_outgoing());
            }
            if i % third_every == 0 {
                let e = to_edit(op, third.len_chars(), &mut tc);
                third.apply_local(&e).unwrap();
                from_third.extend(third.take_outgoing());
                // Delivered late: the writer typed on meanwhile.
                for u in from_third.drain(..) {
                    reader.apply_remote(&u).unwrap();
                    writer.apply_remote(&u).unwrap();
                    prop_assert_eq!(reader.text(), reader.ytext());
                }
                for u in from_reader.drain(..) {
                    writer.apply_remote(&u).unwrap();
                    third.apply_remote(&u).unwrap();
                }
            }
        }
        for u in from_reader.drain(..) {
            writer.apply_remote(&u).unwrap();
            third.apply_remote(&u).unwrap();
        }
        for u in writer.take_outgoing().into_iter().chain(third.take_outgoing()) {
            reader.apply_remote(&u).unwrap();
        }
        prop_assert_eq!(reader.text(), reader.ytext());
        prop_assert_eq!(writer.text(), writer.ytext());
        prop_assert_eq!(reader.text(), writer.ytext());
    }

    /// Inserts that continue the previous one go into yrs as updates pairedit encodes itself
    /// (by ID); the document they make must be the one yrs' own index inserts make, byte for
    /// byte, with a peer's edits arriving in between.
    #[test]
    fn typing_by_id_makes_the_same_document_as_yrs(
        ops in prop::collection::vec(op(), 1..80),
        peer_every in 2..15usize,
    ) {
        use yrs::{GetString as _, Transact as _};
        let mut doc = SharedDoc::with_doc(ydoc(1));
        let reference = ydoc(1);
        let rtext = reference.get_or_insert_text(pairedit::protocol::TEXT_NAME);
        let mut peer = SharedDoc::with_doc(ydoc(2));
        let (mut cursor, mut peer_cursor) = (0, 0);
        for (i, op) in ops.iter().enumerate() {
            let edit = to_edit(op, doc.len_chars(), &mut cursor);
            let before = doc.text();
            doc.apply_local(&edit).unwrap();
            doc.commit_local();
            edit_by_index(&reference, &rtext, &before, &edit);
            prop_assert_eq!(full_state(doc.doc()), full_state(&reference));
            if i % peer_every == 0 {
                for u in doc.take_outgoing() {
                    peer.apply_remote(&u).unwrap();
                }
                let e = to_edit(op, peer.len_chars(), &mut peer_cursor);
                peer.apply_local(&e).unwrap();
                for u in peer.take_outgoing() {
                    doc.apply_remote(&u).unwrap();
                    let u = yrs::Update::decode_v1(&u).unwrap();
                    reference.transact_mut().apply_update(u).unwrap();
                }
                prop_assert_eq!(full_state(doc.doc()), full_state(&reference));
            }
        }
        prop_assert_eq!(doc.text(), rtext.get_string(&reference.transact()));
        prop_assert_eq!(doc.text(), doc.ytext());
    }

    /// Edits compose in between checks (`check_every`), so yrs sees multi-edit compositions.
    #[test]
    fn mirror_equals_ytext_under_local_edits(
        ops in prop::collection::vec(op(), 1..80),
        check_every in 1..12usize,
    ) {
        let mut doc = SharedDoc::new();
        let mut replica = SharedDoc::new();
        let mut model = String::new();
        let mut cursor = 0;
        for (i, op) in ops.iter().enumerate() {
            let edit = to_edit(op, doc.len_chars(), &mut cursor);
            doc.apply_local(&edit).unwrap();
            let mut chars: Vec<char> = model.chars().collect();
            chars.splice(edit.at..edit.at + edit.delete, edit.insert.chars());
            model = chars.into_iter().collect();
            prop_assert_eq!(&doc.text(), &model);
            if i % check_every == 0 {
                prop_assert_eq!(doc.text(), doc.ytext());
                for u in doc.take_outgoing() {
                    replica.apply_remote(&u).unwrap();
                }
                prop_assert_eq!(replica.text(), doc.text());
            }
        }
        prop_assert_eq!(doc.text(), doc.ytext());
        prop_assert_eq!(doc.text(), model);
    }

    #[test]
    fn concurrent_replicas_converge(
        a_ops in prop::collection::vec(op(), 1..40),
        b_ops in prop::collection::vec(op(), 1..40),
        sync_every in 1..10usize,
    ) {
        let mut a = SharedDoc::new();
        let mut b = SharedDoc::new();
        let (mut ba, mut bb) = (Batcher::new(), Batcher::new());
        let (mut ca, mut cb) = (0, 0);
        for i in 0..a_ops.len().max(b_ops.len()) {
            if let Some(op) = a_ops.get(i) {
                let e = to_edit(op, a.len_chars(), &mut ca);
                a.apply_local(&e).unwrap();
            }
            if let Some(op) = b_ops.get(i) {
                let e = to_edit(op, b.len_chars(), &mut cb);
                b.apply_local(&e).unwrap();
            }
            // Local edits keep composing between syncs; a remote update arriving in the
            // middle of a composition must land after it.
            if i % sync_every == 0 {
                a.take_outgoing().into_iter().for_each(|u| ba.push(u));
                b.take_outgoing().into_iter().for_each(|u| bb.push(u));
                if let Some(u) = ba.flush().unwrap() { b.apply_remote(&u).unwrap(); }
                if let Some(u) = bb.flush().unwrap() { a.apply_remote(&u).unwrap(); }
                // Receiving is not sending: nothing remote may echo back out.
                prop_assert!(!a.has_outgoing() && !b.has_outgoing());
                prop_assert_eq!(a.text(), a.ytext());
                prop_assert_eq!(b.text(), b.ytext());
            }
        }
        a.take_outgoing().into_iter().for_each(|u| ba.push(u));
        b.take_outgoing().into_iter().for_each(|u| bb.push(u));
        if let Some(u) = ba.flush().unwrap() { b.apply_remote(&u).unwrap(); }
        if let Some(u) = bb.flush().unwrap() { a.apply_remote(&u).unwrap(); }
        prop_assert_eq!(a.text(), b.text());
        prop_assert_eq!(a.text(), a.ytext());
        prop_assert_eq!(b.text(), b.ytext());
    }
}

#[test]
fn batcher_merges_many_edits_into_one_update_that_reproduces_them() {
    let mut writer = SharedDoc::new();
    let mut batcher = Batcher::new();
    assert_eq!(
        batcher.flush().unwrap(),
        None,
        "nothing to send when nothing changed"
    );
    let typed = "fn main() { println!(\"héllo 😀 世界\"); }";
    for (i, ch) in typed.chars().enumerate() {
        writer
            .apply_local(&Edit::insert(i, ch.to_string()))
            .unwrap();
        // One transaction per key (without this, adjacent keys compose into one).
        writer.commit_local();
    }
    writer.apply_local(&Edit::delete(3, 4)).unwrap();
    let updates = writer.take_outgoing();
    assert_eq!(
        updates.len(),
        typed.chars().count() + 1,
        "one update per local transaction"
    );
    let total: usize = updates.iter().map(Vec::len).sum();
    for u in updates {
        batcher.push(u);
    }
    let merged = batcher.flush().unwrap().expect("one update");
    assert!(batcher.is_empty());
    assert_eq!(batcher.flush().unwrap(), None);
    // yrs merges headers and client runs but keeps one item per typed transaction (no squashing).
    assert!(
        merged.len() < total,
        "merged {} bytes vs {} separately",
        merged.len(),
        total
    );
    let replica = SharedDoc::from_update(&merged).unwrap();
    assert_eq!(replica.text(), writer.text());
    assert_eq!(replica.text(), "fn () { println!(\"héllo 😀 世界\"); }");
}

#[test]
fn remote_changes_come_back_as_char_edits() {
    let mut a = SharedDoc::new();
    let mut b = SharedDoc::new();
    a.apply_local(&Edit::insert(0, "😀ab")).unwrap();
    let u = a.take_outgoing().remove(0);
    assert_eq!(b.apply_remote(&u).unwrap(), vec![Edit::insert(0, "😀ab")]);
    a.apply_local(&Edit::delete(1, 1)).unwrap();
    a.apply_local(&Edit::insert(2, "日")).unwrap();
    let edits: Vec<Edit> = a
        .take_outgoing()
        .iter()
        .flat_map(|u| b.apply_remote(u).unwrap())
        .collect();
    assert_eq!(edits, vec![Edit::delete(1, 1), Edit::insert(2, "日")]);
    assert_eq!(b.text(), "😀b日");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut doc = SharedDoc::new();
    doc.apply_local(&Edit::insert(0, "abc")).unwrap();
    assert!(doc.apply_local(&Edit::insert(4, "x")).is_err());
    assert!(doc.apply_local(&Edit::delete(2, 5)).is_err());
    assert!(doc.apply_local(&Edit::delete(usize::MAX, 2)).is_err());
    assert!(doc.apply_remote(&[0xff, 0x13, 0x01]).is_err());
    assert!(doc.apply_remote(&[]).is_err());
    assert_eq!(doc.text(), "abc");
    assert_eq!(doc.ytext(), "abc");
}

#[test]
fn meta_is_shared() {
    let mut a = SharedDoc::new();
    a.set_meta("name", "main.rs");
    a.set_meta("language", "Rust");
    let b = SharedDoc::from_update(&a.encode_state()).unwrap();
    assert_eq!(b.meta("name").as_deref(), Some("main.rs"));
    assert_eq!(b.meta("language").as_deref(), Some("Rust"));
    assert_eq!(b.meta("missing"), None);
}

/// A stock Yjs client (a rich-text editor, say) may put an embed into the Y.Text. It has length 1
/// there; the mirror holds U+FFFC in its place so every offset after it still lines up, and edits
/// on both sides of it land where they were meant to.
#[test]
fn an_embed_from_a_stock_client_keeps_offsets_aligned() {
    use yrs::updates::decoder::Decode;
    use yrs::{Any, Doc, GetString, Options, ReadTxn, Text, Transact};
    let peer = Doc::with_options(Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..Options::default()
    });
    let text = peer.get_or_insert_text("content");
    {
        let mut txn = peer.transact_mut();
        text.insert(&mut txn, 0, "a😀b");
        // After "a😀" (3 UTF-16 units): an image-like embed.
        text.insert_embed(&mut txn, 3, Any::from(vec![1u8, 2, 3]));
    }
    let state = peer
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    let mut doc = SharedDoc::new();
    let edits = doc.apply_remote(&state).unwrap();
    assert_eq!(doc.text(), "a😀\u{FFFC}b");
    assert_eq!(doc.ytext(), doc.text());
    let mut replay = ropey::Rope::new();
    for e in &edits {
        e.apply_to(&mut replay);
    }
    assert_eq!(
        replay.to_string(),
        doc.text(),
        "the reported edits rebuild the mirror"
    );
    // A local edit after the embed lands after it in the Y.Text too.
    doc.apply_local(&Edit::insert(3, "X")).unwrap();
    doc.apply_local(&Edit::delete(0, 1)).unwrap();
    assert_eq!(doc.text(), "😀\u{FFFC}Xb");
    assert_eq!(doc.ytext(), doc.text());
    let mut peer_txn = peer.transact_mut();
    for update in doc.take_outgoing() {
        peer_txn
            .apply_update(yrs::Update::decode_v1(&update).unwrap())
            .unwrap();
    }
    assert_eq!(
        text.get_string(&peer_txn),
        "😀Xb",
        "the peer's plain string skips its embed"
    );
    assert_eq!(
        text.len(&peer_txn),
        5,
        "😀 is 2 units, the embed 1, X and b 1 each"
    );
}

/// Local edits that touch one region compose into one yrs transaction before yrs sees them;
/// an edit elsewhere starts another. The result is the same text on a replica, in fewer bytes.
#[test]
fn adjacent_local_edits_compose_into_one_transaction() {
    let mut doc = SharedDoc::new();
    doc.apply_local(&Edit::insert(0, "fn main() {}\n")).unwrap();
    let mut replica = SharedDoc::new();
    for u in doc.take_outgoing() {
        replica.apply_remote(&u).unwrap();
    }
    // Typing inside the braces, a typo fixed with backspace, a selection replaced, and a
    // forward delete of old text right after the region: all one region.
    let mut at = 11;
    for ch in "prinx".chars() {
        doc.apply_local(&Edit::insert(at, ch.to_string())).unwrap();
        at += 1;
    }
    doc.apply_local(&Edit::delete(at - 1, 1)).unwrap();
    at -= 1;
    doc.apply_local(&Edit::insert(at, "tln!(\"日本 😀\");"))
        .unwrap();
    doc.apply_local(&Edit {
        at: 11,
        delete: 7,
        insert: "eprintln".into(),
    })
    .unwrap();
    let end_of_region = doc.text().find('}').unwrap();
    let end_of_region = doc.text()[..end_of_region].chars().count();
    doc.apply_local(&Edit::delete(end_of_region, 1)).unwrap();
    assert_eq!(doc.outgoing_len(), 9, "every key counts as queued");
    let composed = doc.take_outgoing();
    assert_eq!(composed.len(), 1, "one region, one transaction");
    for u in &composed {
        replica.apply_remote(u).unwrap();
    }
    assert_eq!(replica.text(), doc.text());
    assert_eq!(doc.text(), "fn main() {eprintln!(\"日本 😀\");\n");
    assert_eq!(doc.ytext(), doc.text());

    // An edit away from the region starts a new transaction.
    doc.apply_local(&Edit::insert(0, "// a\n")).unwrap();
    let n = doc.len_chars();
    doc.apply_local(&Edit::insert(n, "// z\n")).unwrap();
    let two = doc.take_outgoing();
    assert_eq!(two.len(), 2);
    for u in &two {
        replica.apply_remote(u).unwrap();
    }
    assert_eq!(replica.text(), doc.text());
}

/// A remote update that arrives while local edits are still composing integrates after them:
/// both replicas end with both changes, byte for byte.
#[test]
fn a_remote_update_lands_after_pending_local_edits() {
    let mut a = SharedDoc::new();
    a.apply_local(&Edit::insert(0, "hello world")).unwrap();
    let mut b = SharedDoc::from_update(&a.encode_state()).unwrap();
    let _ = a.take_outgoing();
    // a types at the end, not yet flushed; b edits the start meanwhile.
    a.apply_local(&Edit::insert(11, "!")).unwrap();
    a.apply_local(&Edit::insert(12, "!")).unwrap();
    b.apply_local(&Edit::delete(0, 5)).unwrap();
    b.apply_local(&Edit::insert(0, "HELLO")).unwrap();
    for u in b.take_outgoing() {
        let edits = a.apply_remote(&u).unwrap();
        assert!(!edits.is_empty());
    }
    assert_eq!(a.text(), "HELLO world!!");
    for u in a.take_outgoing() {
        b.apply_remote(&u).unwrap();
    }
    assert_eq!(b.text(), "HELLO world!!");
    assert_eq!(a.ytext(), a.text());
    assert_eq!(b.ytext(), b.text());
}

/// A peer's cursor resolves to the right place while our own edits are still composing (the
/// editor resolves cursors every frame and must not end the composition to do it).
#[test]
fn a_peer_cursor_resolves_through_pending_local_edits() {
    let mut a = SharedDoc::new();
    a.apply_local(&Edit::insert(0, "hello 😀 world")).unwrap();
    let b = SharedDoc::from_update(&a.encode_state()).unwrap();
    // b's cursor just before "world" (char 8; UTF-16 9 because of the emoji).
    let idx = {
        use yrs::{IndexedSequence, Transact};
        let txn = b.doc().transact();
        b.text_ref()
            .sticky_index(&txn, 9, yrs::Assoc::After)
            .unwrap()
    };
    assert_eq!(b.resolve(&idx), Some(8));
    // a types before it, deletes "hello", and types after it, all still pending.
    a.apply_local(&Edit::insert(0, "日本")).unwrap();
    a.apply_local(&Edit::insert(2, ">")).unwrap();
    assert_eq!(a.resolve(&idx), Some(11));
    a.apply_local(&Edit::delete(3, 5)).unwrap();
    assert_eq!(a.text(), "日本> 😀 world");
    assert_eq!(a.resolve(&idx), Some(6), "{:?}", a.text());
    let end = a.len_chars();
    a.apply_local(&Edit::insert(end, "!")).unwrap();
    let pending = a.resolve(&idx);
    // The same answer from yrs once the edits are in it.
    a.commit_local();
    assert_eq!(pending, a.resolve(&idx));
    assert_eq!(pending, Some(6));
}

/// A host opens a file with its text in the rope only; yrs gets it after the first frame. The
/// load is not sent (peers get the text through the handshake), not mirrored twice, and not
/// undoable; edits made before it land in the right place; a peer that joins converges.
/// A big deferred text goes into yrs in pieces (last first): what yrs ends with is the text,
/// byte for byte, across piece boundaries that fall inside CRLF pairs, astral and combining
/// characters; a peer gets it whole; edits at the boundaries land in place.
#[test]
fn a_big_deferred_text_loads_in_pieces_byte_exactly() {
    let line = "x\r\n日本 😀 e\u{301}\t";
    let content: String =
        std::iter::repeat_n(line, 2_600_000 / line.chars().count() + 1).collect::<String>() + "end";
    assert!(content.chars().count() > 2 << 20, "more than two pieces");
    let mut host = SharedDoc::with_text_deferred(content.clone());
    host.load();
    assert!(host.ytext() == content, "yrs has the text byte for byte");
    let mut peer = SharedDoc::from_update(&host.encode_state()).unwrap();
    assert!(peer.text() == content);
    let boundary = 1 << 20;
    host.apply_local(&Edit::insert(boundary, "<B>")).unwrap();
    host.apply_local(&Edit::delete(boundary + 3, 2)).unwrap();
    for u in host.take_outgoing() {
        peer.apply_remote(&u).unwrap();
    }
    let mut want: Vec<char> = content.chars().collect();
    want.drain(boundary..boundary + 2);
    let tail: String = want.split_off(boundary).into_iter().collect();
    let want = format!("{}<B>{tail}", want.into_iter().collect::<String>());
    assert!(host.text() == want && host.ytext() == want && peer.text() == want);
}

#[test]
fn a_deferred_text_loads_once_and_is_neither_sent_nor_undone() {
    let content = "fn main() {\r\n\tprintln!(\"日本 😀 e\u{301}\");\r\n}\r\n".to_string();
    let mut host = SharedDoc::with_text_deferred(content.clone());
    host.set_meta("name", "main.rs");
    host.enable_undo(500);
    assert_eq!(host.text(), content, "the rope has the text at once");
    assert_eq!(host.meta("name").as_deref(), Some("main.rs"));
    // Nothing is outgoing: the text and the meta reach peers through the handshake.
    assert!(host.take_outgoing().is_empty(), "loading sends nothing");
    let joined = SharedDoc::from_update(&host.encode_state()).unwrap();
    assert_eq!(joined.text(), content);
    assert_eq!(joined.meta("name").as_deref(), Some("main.rs"));
    assert_eq!(host.ytext(), content);
    // Once loaded, edits are outgoing as usual.
    host.apply_local(&Edit::insert(0, "x")).unwrap();
    let mut peer = SharedDoc::from_update(&host.encode_state()).unwrap();
    host.apply_local(&Edit::insert(1, "y")).unwrap();
    let out = host.take_outgoing();
    assert!(!out.is_empty());
    for u in &out {
        peer.apply_remote(u).unwrap();
    }
    assert_eq!(peer.text(), format!("xy{content}"));

    // Edits before the load (a second host) go in after it, in place.
    let mut early = SharedDoc::with_text_deferred(content.clone());
    early.enable_undo(500);
    early.apply_local(&Edit::insert(0, "// hi\r\n")).unwrap();
    let want = format!("// hi\r\n{content}");
    assert_eq!(early.text(), want);
    assert_eq!(early.ytext(), want);
    // Undo takes back the typing, never the file.
    early.undo_boundary();
    early.undo();
    assert_eq!(early.text(), content);
    assert_eq!(early.ytext(), content);
    assert!(
        early.undo().is_empty(),
        "nothing more to undo: the load is not an edit"
    );
    assert_eq!(early.text(), content);

    // A peer that joins through the handshake gets the text; edits flow both ways.
    let mut peer = SharedDoc::from_update(&early.diff(&yrs::StateVector::default())).unwrap();
    assert_eq!(peer.text(), content);
    peer.apply_local(&Edit::insert(peer.len_chars(), "// end\r\n"))
        .unwrap();
    for u in peer.take_outgoing() {
        early.apply_remote(&u).unwrap();
    }
    assert_eq!(early.text(), format!("{content}// end\r\n"));
    assert_eq!(early.text(), early.ytext());
}

/// A peer's cursor resolves to the same place while our edits are still being composed as after
/// they reach yrs — on both sides of each boundary of the edited region, for both ways a
/// position can stick (to the character after it, or before it).
#[test]
fn a_peer_cursor_resolves_the_same_before_and_after_our_edit_reaches_yrs() {
    use yrs::{Assoc, IndexedSequence, Transact};
    let base = "0123456789abcdef";
    for (at, delete, insert) in [
        (5, 0, "XYZ"),
        (5, 3, "XY"),
        (5, 3, ""),
        (0, 2, "é😀"),
        (16, 0, "!"),
    ] {
        for assoc in [Assoc::After, Assoc::Before] {
            for cursor in 0..=base.len() as u32 {
                let mut a = SharedDoc::new();
                a.apply_local(&Edit::insert(0, base)).unwrap();
                a.commit_local();
                let idx = {
                    let txn = a.doc().transact();
                    a.text_ref().sticky_index(&txn, cursor, assoc)
                };
                // The very start has nothing before it to stick to.
                let Some(idx) = idx else { continue };
                if delete > 0 {
                    a.apply_local(&Edit::delete(at, delete)).unwrap();
                }
                if !insert.is_empty() {
                    a.apply_local(&Edit::insert(at, insert)).unwrap();
                }
                let pending = a.resolve(&idx);
                a.commit_local();
                assert_eq!(
                    pending,
                    a.resolve(&idx),
                    "cursor {cursor} {assoc:?}, edit at {at} -{delete} +{insert:?}"
                );
            }
        }
    }
}

/// Undo steps follow the typing, not when composed edits reach yrs: two edits a pause apart are
/// two steps even if nothing flushed in between (an offline editor has no flush tick).
#[test]
fn a_pause_in_typing_ends_an_undo_step_even_without_a_flush() {
    let mut doc = SharedDoc::new();
    doc.enable_undo(50);
    doc.apply_local(&Edit::insert(0, "a")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    doc.apply_local(&Edit::insert(1, "b")).unwrap();
    doc.apply_local(&Edit::insert(2, "c")).unwrap();
    doc.undo();
    assert_eq!(doc.text(), "a");
    assert_eq!(doc.ytext(), "a");
    doc.undo();
    assert_eq!(doc.text(), "");
}
