//! The typing fast path: an insert that continues this replica's previous insert goes into yrs as
//! an update we encode ourselves, not through `Text::insert(index)`.
//!
//! yrs 0.28 turns an index into a place in the text by walking its block list from the start
//! (it has no search markers), so every local insert costs O(document). But an insert made right
//! after our own previous one, with no other change to the text in between, has a place we
//! already know: its left neighbour is the last character we inserted, its right neighbour the
//! one that insert had. An update carrying an item with those two origins is integrated by ID
//! (a binary search per origin), and it is exactly the update `Text::insert` would have produced.
//!
//! A reader does the reverse: an update that continues the last remote insert it saw (same
//! client, same two origins, deletes only of what that client typed since) lands at a place it
//! knows, so its rope is edited without yrs' delta (another walk of the whole text).
//!
//! The encoding is lib0 v1, the y-protocols update format:
//! `structs = varuint clients, { varuint structs, varuint client, varuint clock, struct* }`, then
//! the delete set. An item is an info byte (content ref in the low 5 bits, 0x80 = has origin,
//! 0x40 = has right origin, 0x20 = has parent sub), the origins as `varuint client, varuint clock`,
//! and its content (a string is `varuint byte length, UTF-8`).

use yrs::block::{ClientID, ID};

const HAS_ORIGIN: u8 = 0x80;
const HAS_RIGHT_ORIGIN: u8 = 0x40;
const HAS_PARENT_SUB: u8 = 0x20;
const CONTENT_STRING: u8 = 4;

/// Where this replica's last insert ended, and what surrounds that point in yrs.
///
/// yrs (like Yjs) puts an insert after any deleted items at its index, right before the next
/// visible one. So every insert that continues this one lands right before the same item,
/// `right`, after the last character inserted before it, `end`, even if that one was deleted
/// since (backspaced): those are its two origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// UTF-16 offset where the next insert goes (after the visible text we typed).
    pub at16: u32,
    /// The visible text just before `at16` that we typed, as runs of consecutive clocks, in
    /// text order (an insert after a backspace starts a new run: the deleted characters keep
    /// their clocks). A backspace within them deletes by ID.
    pub runs: Vec<(ID, u32)>,
    /// The last character inserted, deleted or not: the next insert's left origin.
    pub end: ID,
    /// The first visible item after our inserts, if any: the next insert's right origin.
    pub right: Option<ID>,
    /// The document's text-change count once the edit was in: if it moved since, something
    /// else changed the text and the neighbours may be others.
    pub seen: u64,
}

/// Runs kept for backspacing by ID; an older one is forgotten (a backspace reaching it takes
/// the index path).
const MAX_RUNS: usize = 32;

/// What an edit at a [`Tail`] becomes: ID ranges to delete, and the tail after it (its `seen`
/// left for the caller to set). An insert goes between the tail's `end` and `right`.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// `(clock, len)` of our client's characters to delete, ascending.
    pub deletes: Vec<(u32, u32)>,
    /// How many UTF-16 units that is.
    pub del16: u32,
    pub next: Tail,
}

impl Tail {
    /// The tail of `ins`, made at UTF-16 offset `start16` (as yrs placed it: deleted items stay
    /// in the list, so the deletes beside it do not move its neighbours). `None` if the offsets
    /// or clocks would overflow (a hostile peer's update).
    pub fn after_insert(start16: u32, ins: &ReadInsert, seen: u64) -> Option<Tail> {
        let last = ins.first.clock.checked_add(ins.len16)?.checked_sub(1)?;
        Some(Tail {
            at16: start16.checked_add(ins.len16)?,
            runs: vec![(ins.first, ins.len16)],
            end: ID::new(ins.first.client, last),
            right: ins.right,
            seen,
        })
    }

    /// The edit "delete `del16` units before the tail, then insert `len16` units as item
    /// `(client, clock)`" by ID, or `None` if the tail does not know every deleted character.
    pub fn plan(&self, del16: u32, len16: u32, client: ClientID, clock: u32) -> Option<Plan> {
        let typed: u64 = self.runs.iter().map(|&(_, len)| u64::from(len)).sum();
        if u64::from(del16) > typed {
            return None;
        }
        let mut runs = self.runs.clone();
        let mut deletes = Vec::new();
        let mut left = del16;
        while left > 0 {
            let (first, len) = runs.last_mut()?;
            let cut = left.min(*len);
            *len -= cut;
            left -= cut;
            deletes.push((first.clock + *len, cut));
            if *len == 0 {
                runs.pop();
            }
        }
        deletes.sort_unstable();
        let mut end = self.end;
        if len16 > 0 {
            let last = clock.checked_add(len16)?.checked_sub(1)?;
            match runs.last_mut() {
                // Typing on: the run grows (and yrs merges the items). After a delete, the
                // run's end is a clock before `end`, so it cannot be `clock` any more.
                Some((first, len))
                    if first.client == client && first.clock.checked_add(*len) == Some(clock) =>
                {
                    *len += len16;
                }
                _ => runs.push((ID::new(client, clock), len16)),
            }
            if runs.len() > MAX_RUNS {
                runs.remove(0);
            }
            end = ID::new(client, last);
        }
        Some(Plan {
            deletes,
            del16,
            next: Tail {
                at16: self.at16.checked_sub(del16)?.checked_add(len16)?,
                runs,
                end,
                right: self.right,
                seen: self.seen,
            },
        })
    }
}

fn put_varuint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_id(out: &mut Vec<u8>, id: &ID) {
    put_varuint(out, id.client.get());
    put_varuint(out, u64::from(id.clock));
}

/// The v1 update that deletes our client's `deletes` (`(clock, len)`, ascending) and, if
/// `insert` is given, inserts its text as item `(client, clock)` between its two origins.
pub fn encode_edit(
    client: ClientID,
    clock: u32,
    deletes: &[(u32, u32)],
    insert: Option<(&ID, Option<&ID>, &str)>,
) -> Vec<u8> {
    let deletes: Vec<_> = deletes.iter().map(|&(k, n)| (client, k, n)).collect();
    encode_update(
        client,
        clock,
        insert.map(|(o, r, t)| (Some(o), r, t)),
        &deletes,
    )
}

/// The v1 update that only deletes `ranges` (`(client, clock, len)`, as [`normalized`] leaves
/// them: grouped by client).
pub fn encode_deletes(ranges: &[(ClientID, u32, u32)]) -> Vec<u8> {
    encode_update(ClientID::new(0), 0, None, ranges)
}

/// The v1 update that inserts `insert`'s text as item `(client, clock)` between its origins
/// (at least one given: an item with neither would have to name its parent) and deletes
/// `ranges` (`(client, clock, len)`, grouped by client as [`normalized`] leaves them).
pub fn encode_update(
    client: ClientID,
    clock: u32,
    insert: Option<(Option<&ID>, Option<&ID>, &str)>,
    ranges: &[(ClientID, u32, u32)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(insert.map_or(0, |(_, _, t)| t.len()) + 16 + ranges.len() * 8);
    match insert {
        None => put_varuint(&mut out, 0), // no structs
        Some((origin, right, text)) => {
            put_varuint(&mut out, 1); // clients
            put_varuint(&mut out, 1); // structs of this client
            put_varuint(&mut out, client.get());
            put_varuint(&mut out, u64::from(clock));
            let info = CONTENT_STRING
                | if origin.is_some() { HAS_ORIGIN } else { 0 }
                | if right.is_some() { HAS_RIGHT_ORIGIN } else { 0 };
            out.push(info);
            if let Some(origin) = origin {
                put_id(&mut out, origin);
            }
            if let Some(right) = right {
                put_id(&mut out, right);
            }
            put_varuint(&mut out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
    }
    let clients: Vec<&[(ClientID, u32, u32)]> = ranges.chunk_by(|a, b| a.0 == b.0).collect();
    put_varuint(&mut out, clients.len() as u64);
    for ranges in clients {
        put_varuint(&mut out, ranges[0].0.get());
        put_varuint(&mut out, ranges.len() as u64);
        for &(_, clock, len) in ranges {
            put_varuint(&mut out, u64::from(clock));
            put_varuint(&mut out, u64::from(len));
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The delete set that ends an update: `(client, clock, len)` ranges as written; `None`
    /// unless it is all that is left.
    fn delete_set(&mut self) -> Option<Vec<(ClientID, u32, u32)>> {
        let mut deletes = Vec::new();
        for _ in 0..self.varuint()? {
            let client = self.client()?;
            for _ in 0..self.varuint()? {
                let clock = u32::try_from(self.varuint()?).ok()?;
                let len = u32::try_from(self.varuint()?).ok()?;
                deletes.push((client, clock, len));
                if deletes.len() > 4096 {
                    return None;
                }
            }
        }
        self.bytes.is_empty().then_some(deletes)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    fn varuint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A client ID: 53 bits at most (what JS numbers hold exactly).
    fn client(&mut self) -> Option<ClientID> {
        let v = self.varuint()?;
        (v < 1 << 53).then(|| ClientID::new(v))
    }

    fn id(&mut self) -> Option<ID> {
        let client = self.client()?;
        let clock = u32::try_from(self.varuint()?).ok()?;
        Some(ID::new(client, clock))
    }

    fn string(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.varuint()?).ok()?;
        if len > self.bytes.len() {
            return None;
        }
        let (s, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        std::str::from_utf8(s).ok()
    }
}

/// One insert as [`read_edit`] reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadInsert<'a> {
    pub first: ID,
    pub len16: u32,
    pub origin: ID,
    pub right: Option<ID>,
    pub text: &'a str,
}

/// An update that is at most one string insert (with a left origin) and a delete set: what
/// one `Text::remove_range` + `insert` (or a backspace) produces.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadEdit<'a> {
    pub insert: Option<ReadInsert<'a>>,
    /// `(client, clock, len)`, sorted, adjacent ranges merged.
    pub deletes: Vec<(ClientID, u32, u32)>,
}

/// Reads `update` if it has that shape; `None` for anything else (more structs, other
/// content, a map entry, trailing bytes).
pub fn read_edit(update: &[u8]) -> Option<ReadEdit<'_>> {
    let read = read_update(update)?;
    let insert = match read.inserts.as_slice() {
        [] => None,
        [one] => Some(ReadInsert {
            first: one.first,
            len16: one.len16,
            origin: one.origin?,
            right: one.right,
            text: one.text,
        }),
        _ => return None,
    };
    Some(ReadEdit {
        insert,
        deletes: read.deletes,
    })
}

/// One string insert of an update, as [`read_update`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStruct<'a> {
    pub first: ID,
    pub len16: u32,
    /// At least one of the origins is set (an item with neither names its parent instead).
    pub origin: Option<ID>,
    pub right: Option<ID>,
    pub text: &'a str,
}

/// An update made of string inserts into the text (items with an origin) and a delete set.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadUpdate<'a> {
    /// In the order the update lists them: by client as written, each client's by clock.
    pub inserts: Vec<ReadStruct<'a>>,
    /// `(client, clock, len)`, sorted, adjacent ranges merged.
    pub deletes: Vec<(ClientID, u32, u32)>,
}

/// Structs an update may have for [`read_update`] to read it.
const MAX_STRUCTS: usize = 4096;

/// Reads `update` if it has that shape; `None` for anything else (other content, an item
/// without origins, a map entry, trailing bytes, more than [`MAX_STRUCTS`]).
pub fn read_update(update: &[u8]) -> Option<ReadUpdate<'_>> {
    let mut r = Reader { bytes: update };
    let mut inserts = Vec::new();
    for _ in 0..r.varuint()? {
        let structs = r.varuint()?;
        let client = r.client()?;
        let mut clock = u32::try_from(r.varuint()?).ok()?;
        for _ in 0..structs {
            let info = r.byte()?;
            if info & 0x1f != CONTENT_STRING
                || info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0
                || info & HAS_PARENT_SUB != 0
            {
                return None;
            }
            let origin = if info & HAS_ORIGIN != 0 {
                Some(r.id()?)
            } else {
                None
            };
            let right = if info & HAS_RIGHT_ORIGIN != 0 {
                Some(r.id()?)
            } else {
                None
            };
            let text = r.string()?;
            let len16 = u32::try_from(text.encode_utf16().count()).ok()?;
            if len16 == 0 || inserts.len() >= MAX_STRUCTS {
                return None;
            }
            inserts.push(ReadStruct {
                first: ID::new(client, clock),
                len16,
                origin,
                right,
                text,
            });
            clock = clock.checked_add(len16)?;
        }
    }
    let deletes = r.delete_set()?;
    Some(ReadUpdate {
        inserts,
        deletes: normalized(deletes),
    })
}

/// What of an update's insert is visible after it: the IDs of its units that the update did
/// not delete, as `(client, clock, len)` runs in text order, and their text.
#[derive(Debug, PartialEq, Eq)]
pub struct Inserted {
    pub runs: Vec<(ClientID, u32, u32)>,
    pub text: String,
}

/// The inserts of `update`, each less what the update itself deletes of it, if all its structs
/// are string inserts with a left origin (any number, any clients); `None` for anything else,
/// or for an insert the update deletes half a character of.
pub fn read_inserts(update: &[u8]) -> Option<Vec<Inserted>> {
    let mut r = Reader { bytes: update };
    // (first ID, text, whether it continues the struct before: its left origin is that one's
    // last unit, as when a transaction typed on, or deleted from the middle of what it typed).
    let mut inserts = Vec::new();
    for _ in 0..r.varuint()? {
        let structs = r.varuint()?;
        let client = r.client()?;
        let mut clock = u32::try_from(r.varuint()?).ok()?;
        for i in 0..structs {
            let info = r.byte()?;
            if info & 0x1f != CONTENT_STRING || info & HAS_ORIGIN == 0 || info & HAS_PARENT_SUB != 0
            {
                return None;
            }
            let origin = r.id()?;
            if info & HAS_RIGHT_ORIGIN != 0 {
                r.id()?;
            }
            let text = r.string()?;
            // Only within this client's structs here: the one before may be in another update.
            let continues = i > 0 && clock > 0 && origin == ID::new(client, clock - 1);
            inserts.push((ID::new(client, clock), text, continues));
            if inserts.len() > 4096 {
                return None;
            }
            clock = clock.checked_add(u32::try_from(text.encode_utf16().count()).ok()?)?;
        }
    }
    let deletes = r.delete_set()?;
    let deleted = |c: ClientID, k: u32| {
        deletes.iter().any(|&(dc, clock, n)| {
            dc == c && clock <= k && u64::from(k) < u64::from(clock) + u64::from(n)
        })
    };
    let mut out: Vec<Inserted> = Vec::with_capacity(inserts.len());
    for (first, text, continues) in inserts {
        if !continues || out.is_empty() {
            out.push(Inserted {
                runs: Vec::new(),
                text: String::new(),
            });
        }
        let seen = out.last_mut()?;
        let mut k = first.clock;
        for ch in text.chars() {
            let n = ch.len_utf16() as u32;
            let gone = (0..n).filter(|&i| deleted(first.client, k + i)).count() as u32;
            if gone == 0 {
                seen.text.push(ch);
                match seen.runs.last_mut() {
                    Some((c, clock, len)) if *c == first.client && *clock + *len == k => *len += n,
                    _ => seen.runs.push((first.client, k, n)),
                }
            } else if gone != n {
                return None;
            }
            k += n;
        }
    }
    out.retain(|i| !i.text.is_empty());
    Some(out)
}

/// Ranges sorted, empty ones dropped, adjacent or overlapping ones merged.
pub fn normalized(mut ranges: Vec<(ClientID, u32, u32)>) -> Vec<(ClientID, u32, u32)> {
    ranges.retain(|r| r.2 > 0);
    ranges.sort_unstable_by_key(|&(c, clock, _)| (c.get(), clock));
    let mut out: Vec<(ClientID, u32, u32)> = Vec::with_capacity(ranges.len());
    for (c, clock, len) in ranges {
        match out.last_mut() {
            // In u64: a hostile peer's ranges may run past u32::MAX.
            Some((pc, pclock, plen))
                if *pc == c && u64::from(*pclock) + u64::from(*plen) >= u64::from(clock) =>
            {
                let end =
                    (u64::from(clock) + u64::from(len)).max(u64::from(*pclock) + u64::from(*plen));
                *plen = u32::try_from(end - u64::from(*pclock)).unwrap_or(u32::MAX);
            }
            _ => out.push((c, clock, len)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, Options, ReadTxn, Text, Transact, Update};

    fn id(client: u64, clock: u32) -> ID {
        ID::new(ClientID::new(client), clock)
    }

    fn doc(client: u64) -> Doc {
        Doc::with_options(Options {
            client_id: ClientID::new(client),
            offset_kind: yrs::OffsetKind::Utf16,
            ..Options::default()
        })
    }

    #[test]
    fn inserts_are_read_less_what_the_update_deletes_of_them() {
        let d = doc(3);
        let text = d.get_or_insert_text("content");
        text.insert(&mut d.transact_mut(), 0, "ab");
        let update = {
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 1, "xy😀z");
            text.insert(&mut txn, 7, "q");
            // "y" goes again in the same transaction.
            text.remove_range(&mut txn, 2, 1);
            txn.encode_update_v1()
        };
        assert_eq!(text.get_string(&d.transact()), "ax😀zbq");
        let mut got = read_inserts(&update).expect("string inserts");
        got.sort_by_key(|i| i.runs[0].1);
        let c = ClientID::new(3);
        assert_eq!(
            got,
            vec![
                Inserted {
                    runs: vec![(c, 2, 1), (c, 4, 3)],
                    text: "x😀z".into()
                },
                Inserted {
                    runs: vec![(c, 7, 1)],
                    text: "q".into()
                },
            ]
        );
        // Half of the emoji deleted: not a text anyone can mirror.
        let half = encode_edit(c, 0, &[(1, 1)], Some((&id(9, 0), None, "😀")));
        assert_eq!(read_inserts(&half), None);
        assert_eq!(read_inserts(&half[..half.len() - 1]), None, "cut short");
    }

    #[test]
    fn hostile_numbers_are_refused_or_clamped_never_a_panic() {
        let c = ClientID::new(5);
        // Delete ranges running past u32::MAX merge without overflowing.
        let merged = normalized(vec![(c, u32::MAX - 1, 10), (c, u32::MAX, 3), (c, 0, 0)]);
        assert_eq!(merged, vec![(c, u32::MAX - 1, 10)]);
        // An insert whose clocks would pass u32::MAX gives no tail.
        let ins = |first, len16| ReadInsert {
            first,
            len16,
            origin: id(5, 0),
            right: None,
            text: "",
        };
        assert_eq!(Tail::after_insert(0, &ins(id(5, u32::MAX), 2), 0), None);
        assert_eq!(Tail::after_insert(u32::MAX, &ins(id(5, 0), 2), 0), None);
        let tail = Tail::after_insert(0, &ins(id(5, 0), 3), 0).expect("tail");
        assert_eq!(tail.at16, 3);
        assert_eq!(tail.plan(0, 2, c, u32::MAX), None);
        assert_eq!(tail.plan(4, 0, c, 9), None, "deletes more than was typed");
        // Garbage and truncations of a real edit: read or refused, never a panic.
        let real = encode_edit(c, 7, &[(1, 2)], Some((&id(5, 6), Some(&id(9, 1)), "héllo")));
        assert!(read_edit(&real).is_some());
        for cut in 0..real.len() {
            assert_eq!(read_edit(&real[..cut]), None);
        }
        let huge = [
            1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(read_edit(&huge), None);
    }

    #[test]
    fn reads_what_yrs_writes_and_writes_what_yrs_reads() {
        let d = doc(7);
        let text = d.get_or_insert_text("content");
        text.insert(&mut d.transact_mut(), 0, "helloworld");
        let sv = d.transact().state_vector();
        let update = {
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 5, "🦀 ");
            txn.encode_update_v1()
        };
        let read = read_edit(&update).expect("one insert");
        assert!(read.deletes.is_empty());
        let got = read.insert.expect("an insert");
        assert_eq!(got.first, id(7, 10));
        assert_eq!(got.len16, 3, "the crab is two UTF-16 units");
        assert_eq!(got.origin, id(7, 4));
        assert_eq!(got.right, Some(id(7, 5)));
        assert_eq!(got.text, "🦀 ");
        assert_eq!(read_edit(&update[..update.len() - 4]), None, "cut short");

        // Continue it with our own encoding: the same as yrs' own insert, byte for byte.
        let ours = encode_edit(
            ClientID::new(7),
            13,
            &[],
            Some((&id(7, 12), got.right.as_ref(), "é!")),
        );
        let twin = doc(7);
        twin.transact_mut()
            .apply_update(
                Update::decode_v1(&d.transact().encode_state_as_update_v1(&Default::default()))
                    .expect("decode"),
            )
            .expect("apply");
        let twin_text = twin.get_or_insert_text("content");
        let theirs = {
            let mut txn = twin.transact_mut();
            twin_text.insert(&mut txn, 8, "é!");
            txn.encode_update_v1()
        };
        assert_eq!(ours, theirs);
        d.transact_mut()
            .apply_update(Update::decode_v1(&ours).expect("decode"))
            .expect("apply");
        assert_eq!(text.get_string(&d.transact()), "hello🦀 é!world");
        assert_ne!(sv, d.transact().state_vector());
    }
}
