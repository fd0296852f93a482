//! Where a peer's edit landed in the text, found from the characters it names instead of from
//! yrs' delta.
//!
//! yrs' `TextEvent::delta` walks every item of the text and asks the transaction, for each, whether
//! it was added or deleted in it: two lookups per item, whatever the update changed. For the
//! updates a flush window makes (a few string inserts and deleted characters, which
//! [`typing::read_update`] reads), the change follows from the characters they name:
//! - with the [`IdMap`] of the text before the update, from where those characters were: each
//!   insert goes right after its left origin when that is followed by its right origin (yrs
//!   integrates an item between its origins; see [`from_map`]);
//! - else from where they are now: yrs answers that for one ID with a walk to the left of it
//!   that only sums lengths (`StickyIndex::get_offset`), cheaper per item than the delta and
//!   only over the items before it. A few walks at most.
//!
//! How the new offsets give the change: after the update, a deleted character's offset counts
//! the visible characters left of it, and so does the inserted run's. Sort the deleted ones; the
//! `j`-th had, in the old text, its new offset plus the `j` deleted before it, less the inserted
//! run if that is left of it. Deleted characters with the same offset as the insert lie left of
//! it (were the insert left, they would count it). Which way a tie goes does not change the text.
//!
//! Whether each named character was visible before is not asked one by one: the text's length
//! must have changed by exactly what the update inserts less what it deletes. With nothing held
//! back before or after, and every insert its client's next clocks (new, not one yrs already
//! has), the transaction made exactly this update's changes, so no unit can have been missing
//! from that count.

use yrs::block::{ClientID, ID};
use yrs::branch::BranchPtr;
use yrs::{Assoc, IndexScope, ReadTxn, StickyIndex, Text, TextRef};

use super::idmap::IdMap;
use super::typing::ReadUpdate;

/// `(client, clock, len16)` runs: the IDs of an insert's visible units, in text order.
pub(super) type Runs = Vec<(ClientID, u32, u32)>;

/// A change to the text in the doc's (UTF-16) units, as the mirror applies it in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Retain(u32),
    Delete(u32),
    /// Text inserted, with the IDs of its units when they are known.
    Insert(String, Option<Runs>),
}

/// Each ID placed is a walk over the items left of it; the delta is one walk over all items,
/// with more work per item. Beyond two walks the delta was as cheap (measured on the traces).
const MAX_WALKS: u64 = 2;

/// Delete ranges an update may have for this to place it (each is matched against every run of
/// the [`IdMap`]).
const MAX_RANGES: usize = 16;

/// Inserts an update may have for this to place it (each names two points looked up in the
/// [`IdMap`], and is placed among the others one by one).
const MAX_INSERTS: usize = 16;

/// One insert of a hinted update.
#[derive(Debug)]
struct Ins {
    first: ID,
    len16: u32,
    origin: Option<ID>,
    right: Option<ID>,
    text: String,
}

/// What an update will do to the text, read from it before it is applied.
#[derive(Debug)]
pub(super) struct Hint {
    /// The text's length before the update.
    before16: u32,
    /// The update's inserts, in its order; each is new (its client's next clocks).
    inserts: Vec<Ins>,
    /// `(client, clock, len)` ranges the update deletes.
    deletes: Vec<(ClientID, u32, u32)>,
    deleted16: u64,
}

impl Hint {
    /// `None` for an update this cannot place: too many deleted ranges or inserts, or an
    /// insert that is not its client's next (`next` says what that is before the update: an
    /// item yrs already has would be skipped, and one past a gap held back).
    pub(super) fn new(
        read: &ReadUpdate,
        before16: u32,
        next: impl Fn(ClientID) -> u32,
    ) -> Option<Hint> {
        if read.deletes.len() > MAX_RANGES || read.inserts.len() > MAX_INSERTS {
            return None;
        }
        let mut inserts: Vec<Ins> = Vec::with_capacity(read.inserts.len());
        for i in &read.inserts {
            // Clocks run on within a client's structs (`protocol::decode_update` refuses an
            // update listing a client twice); its first must be its next.
            let continues = inserts
                .last()
                .is_some_and(|p| p.first.client == i.first.client);
            if !continues && i.first.clock != next(i.first.client) {
                return None;
            }
            inserts.push(Ins {
                first: i.first,
                len16: i.len16,
                origin: i.origin,
                right: i.right,
                text: i.text.to_string(),
            });
        }
        let deleted16 = read.deletes.iter().map(|&(_, _, n)| u64::from(n)).sum();
        Some(Hint {
            before16,
            inserts,
            deletes: read.deletes.clone(),
            deleted16,
        })
    }

    /// Units of insert `ins` the update deletes, as `(from16, to16)` within it, sorted.
    fn self_deleted(&self, ins: &Ins) -> Vec<(u32, u32)> {
        let (start, end) = (
            u64::from(ins.first.clock),
            u64::from(ins.first.clock) + u64::from(ins.len16),
        );
        self.deletes
            .iter()
            .filter(|&&(c, _, _)| c == ins.first.client)
            .filter_map(|&(_, clock, n)| {
                let (from, to) = (u64::from(clock), u64::from(clock) + u64::from(n));
                (from < end && start < to).then(|| {
                    (
                        (from.max(start) - start) as u32,
                        (to.min(end) - start) as u32,
                    )
                })
            })
            .collect()
    }
}

/// In the text's observer, after the hinted update was integrated: its change to the text, or
/// `None` when anything is not as the hint says (the caller then asks yrs for the delta).
/// `ids`, the [`IdMap`] of the text before the update, places what it knows without a walk.
pub(super) fn ops<T: ReadTxn>(
    txn: &T,
    text: &TextRef,
    hint: &Hint,
    ids: Option<&IdMap>,
) -> Option<Vec<Op>> {
    if txn.has_missing_updates() {
        return None;
    }
    let inserted16: u64 = hint.inserts.iter().map(|i| u64::from(i.len16)).sum();
    let after16 = text.len(txn);
    if u64::from(hint.before16) + inserted16 != u64::from(after16) + hint.deleted16 {
        return None;
    }
    let branch = BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(text));
    let offset = |id: ID| -> Option<u32> {
        let at = StickyIndex::new(IndexScope::Relative(id), Assoc::After).get_offset(txn)?;
        (at.branch == branch).then_some(at.index)
    };
    // One insert and no delete of it: the shape the walks below can place.
    let single = match hint.inserts.as_slice() {
        [one] if one.origin.is_some() && hint.self_deleted(one).is_empty() => Some(one),
        _ => None,
    };
    let one_runs = |i: &Ins| Some(vec![(i.first.client, i.first.clock, i.len16)]);
    let placed = ids
        .filter(|m| m.len16() == u64::from(hint.before16))
        .map(|m| from_map(m, hint));
    match placed {
        Some(Ok(ops)) => return Some(ops),
        Some(Err(Miss::Insert(deleted))) => {
            // The deletes are known; each insert's place takes one walk left (so a few at most,
            // each whole and in one piece): its new offset counts what survived left of it,
            // and the inserts before it; add back what was deleted there.
            if hint.inserts.len() as u64 > MAX_WALKS || !separate(hint) {
                return None;
            }
            let mut found = Vec::with_capacity(hint.inserts.len());
            for ins in &hint.inserts {
                found.push((u64::from(offset(ins.first)?), ins));
            }
            found.sort_by_key(|&(at, _)| at);
            let mut inserts = Vec::with_capacity(found.len());
            let mut inserted = 0u64;
            for (new_at, ins) in found {
                let mut at = new_at.checked_sub(inserted)?;
                for &(p, n) in &deleted {
                    if p < at {
                        at += u64::from(n);
                    } else {
                        break;
                    }
                }
                inserts.push((at, ins.text.clone(), one_runs(ins)));
                inserted += u64::from(ins.len16);
            }
            return in_old_offsets(&deleted, inserts, hint.before16);
        }
        Some(Err(Miss::Deletes)) | None => {}
    }
    if hint.inserts.len() > usize::from(single.is_some())
        || hint.deleted16 + u64::from(single.is_some()) > MAX_WALKS
    {
        return None;
    }
    let insert = match single {
        Some(i) => Some((offset(i.first)?, i.len16, i.text.as_str(), one_runs(i))),
        None => None,
    };
    let mut deleted = Vec::with_capacity(usize::try_from(hint.deleted16).ok()?);
    for &(client, clock, len) in &hint.deletes {
        for k in 0..len {
            deleted.push(offset(ID::new(client, clock.checked_add(k)?))?);
        }
    }
    arrange(deleted, insert, hint.before16)
}

/// Whether each of the hint's inserts stays whole and in one piece in the text: none deleted
/// in part by the update, none placed inside another (an origin that is not the other's last
/// unit, or a right origin that is not its first).
fn separate(hint: &Hint) -> bool {
    let inside = |id: &ID, ok: &dyn Fn(&Ins) -> ID| {
        hint.inserts.iter().any(|j| {
            id.client == j.first.client
                && j.first.clock <= id.clock
                && u64::from(id.clock) < u64::from(j.first.clock) + u64::from(j.len16)
                && *id != ok(j)
        })
    };
    let last = |j: &Ins| ID::new(j.first.client, j.first.clock + (j.len16 - 1));
    hint.inserts.iter().all(|i| {
        hint.self_deleted(i).is_empty()
            && !i.origin.as_ref().is_some_and(|o| inside(o, &last))
            && !i
                .right
                .as_ref()
                .is_some_and(|r| inside(r, &|j: &Ins| j.first))
    })
}

/// Deleted units as `(offset, len)` pieces in the text before the update, sorted.
type Pieces = Vec<(u64, u32)>;

/// Why [`from_map`] could not place an update.
#[derive(Debug)]
enum Miss {
    /// Some deleted unit is not in the map (nor one of the update's inserts).
    Deletes,
    /// The deletes are these pieces, but an insert's origins are not neighbours.
    Insert(Pieces),
}

/// Part `from16..to16` of insert `ins` of the hint, in a gap of the old text.
#[derive(Debug, Clone, Copy)]
struct Piece {
    ins: usize,
    from16: u32,
    to16: u32,
}

/// Where a point of the text is while the update's inserts are placed one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// The old unit at this offset (the text's length: its end).
    Old(u64),
    /// Unit `unit` of insert `ins`.
    New { ins: usize, unit: u32 },
}

/// The update's change from the map: every deleted unit found there (or among the update's
/// own inserts), and each insert placed right after its left origin, which must be followed by
/// its right origin among the old visible units and the inserts placed before it. yrs
/// integrates an item between its origins, and nothing visible is between those two.
fn from_map(map: &IdMap, hint: &Hint) -> Result<Vec<Op>, Miss> {
    let points: Vec<ID> = hint
        .inserts
        .iter()
        .flat_map(|i| i.origin.into_iter().chain(i.right))
        .collect();
    let (mut pieces, at) = map.find(&hint.deletes, &points);
    let old_of = |id: &ID| points.iter().position(|p| p == id).and_then(|k| at[k]);
    let self_deleted: Vec<Vec<(u32, u32)>> =
        hint.inserts.iter().map(|i| hint.self_deleted(i)).collect();
    let found: u64 = pieces.iter().map(|&(_, n)| u64::from(n)).sum::<u64>()
        + self_deleted
            .iter()
            .flatten()
            .map(|&(a, b)| u64::from(b - a))
            .sum::<u64>();
    if found != hint.deleted16 {
        return Err(Miss::Deletes);
    }
    pieces.sort_unstable();
    let mut deleted: Pieces = Vec::with_capacity(pieces.len());
    for (p, n) in pieces {
        match deleted.last_mut() {
            Some((q, m)) if *q + u64::from(*m) == p => *m += n,
            _ => deleted.push((p, n)),
        }
    }
    let Some(gaps) = place_inserts(hint, map.len16(), old_of) else {
        return Err(Miss::Insert(deleted));
    };
    // Each gap's text and IDs, less what the update deleted of its own inserts.
    let mut inserts = Vec::with_capacity(gaps.len());
    for (at, parts) in gaps {
        let (mut text, mut runs) = (String::new(), Runs::new());
        for part in parts {
            let ins = &hint.inserts[part.ins];
            let mut cut = part.from16;
            let mut kept = Vec::new();
            for &(a, b) in &self_deleted[part.ins] {
                let (a, b) = (
                    a.clamp(part.from16, part.to16),
                    b.clamp(part.from16, part.to16),
                );
                if a > cut {
                    kept.push((cut, a));
                }
                cut = cut.max(b);
            }
            if part.to16 > cut {
                kept.push((cut, part.to16));
            }
            for (a, b) in kept {
                text.push_str(slice16(&ins.text, a, b).ok_or(Miss::Deletes)?);
                let clock = ins.first.clock + a;
                match runs.last_mut() {
                    Some((c, k, n)) if *c == ins.first.client && *k + *n == clock => *n += b - a,
                    _ => runs.push((ins.first.client, clock, b - a)),
                }
            }
        }
        if !text.is_empty() {
            inserts.push((at, text, Some(runs)));
        }
    }
    in_old_offsets(&deleted, inserts, hint.before16).ok_or(Miss::Deletes)
}

/// The hint's inserts placed one by one, as the pieces in each gap of the old text (keyed by
/// the old offset they go before), in order; `None` if one's origins are not next to each
/// other when it comes, or an origin is not known.
fn place_inserts(
    hint: &Hint,
    len16: u64,
    old_of: impl Fn(&ID) -> Option<u64>,
) -> Option<Vec<(u64, Vec<Piece>)>> {
    let mut gaps: Vec<(u64, Vec<Piece>)> = Vec::new();
    let new_of = |gaps: &[(u64, Vec<Piece>)], id: &ID| -> Option<(usize, usize, u32)> {
        for (g, (_, parts)) in gaps.iter().enumerate() {
            for (pi, part) in parts.iter().enumerate() {
                let ins = &hint.inserts[part.ins];
                let start = ins.first.clock.checked_add(part.from16)?;
                let end = ins.first.clock.checked_add(part.to16)?;
                if ins.first.client == id.client && start <= id.clock && id.clock < end {
                    return Some((g, pi, id.clock - ins.first.clock));
                }
            }
        }
        None
    };
    let gap_at = |gaps: &[(u64, Vec<Piece>)], at: u64| gaps.iter().position(|(q, _)| *q == at);
    for (k, ins) in hint.inserts.iter().enumerate() {
        // Where it goes (a gap and an index among its pieces) and what must follow it.
        let (g, index, next) = match ins.origin.as_ref().map(|o| (o, new_of(&gaps, o))) {
            Some((_, Some((g, pi, unit)))) => {
                let part = gaps[g].1[pi];
                if unit + 1 < part.to16 {
                    // Inside an insert placed before: split it there.
                    let head = Piece {
                        to16: unit + 1,
                        ..part
                    };
                    let tail = Piece {
                        from16: unit + 1,
                        ..part
                    };
                    gaps[g].1[pi] = head;
                    gaps[g].1.insert(pi + 1, tail);
                    let next = Point::New {
                        ins: part.ins,
                        unit: unit + 1,
                    };
                    (g, pi + 1, next)
                } else {
                    let next = match gaps[g].1.get(pi + 1) {
                        Some(p) => Point::New {
                            ins: p.ins,
                            unit: p.from16,
                        },
                        None => Point::Old(gaps[g].0),
                    };
                    (g, pi + 1, next)
                }
            }
            Some((o, None)) => {
                let at = old_of(o)?.checked_add(1)?;
                gap_index(&mut gaps, at, gap_at)
            }
            None => gap_index(&mut gaps, 0, gap_at),
        };
        let follows = match (next, ins.right.as_ref()) {
            (Point::Old(q), None) => q == len16,
            (Point::Old(q), Some(r)) => {
                q < len16 && new_of(&gaps, r).is_none() && old_of(r) == Some(q)
            }
            (Point::New { ins: i, unit }, Some(r)) => {
                let first = hint.inserts[i].first;
                *r == ID::new(first.client, first.clock.checked_add(unit)?)
            }
            (Point::New { .. }, None) => false,
        };
        if !follows {
            return None;
        }
        gaps[g].1.insert(
            index,
            Piece {
                ins: k,
                from16: 0,
                to16: ins.len16,
            },
        );
    }
    gaps.sort_unstable_by_key(|(at, _)| *at);
    Some(gaps)
}

/// The gap before old offset `at` (made if new), index 0 in it, and what follows that place.
fn gap_index(
    gaps: &mut Vec<(u64, Vec<Piece>)>,
    at: u64,
    gap_at: impl Fn(&[(u64, Vec<Piece>)], u64) -> Option<usize>,
) -> (usize, usize, Point) {
    let g = gap_at(gaps, at).unwrap_or_else(|| {
        gaps.push((at, Vec::new()));
        gaps.len() - 1
    });
    let next = match gaps[g].1.first() {
        Some(p) => Point::New {
            ins: p.ins,
            unit: p.from16,
        },
        None => Point::Old(at),
    };
    (g, 0, next)
}

/// UTF-16 units `from..to` of `s`, if both ends fall between characters.
fn slice16(s: &str, from: u32, to: u32) -> Option<&str> {
    let (mut u, mut a, mut b) = (0u32, None, None);
    for (i, c) in s.char_indices() {
        if u == from {
            a = Some(i);
        }
        if u == to {
            b = Some(i);
        }
        u += c.len_utf16() as u32;
    }
    if u == from {
        a = Some(s.len());
    }
    if u == to {
        b = Some(s.len());
    }
    s.get(a?..b?)
}

/// The change as ops, from the deleted pieces and the inserts `(offset, text, IDs)`, sorted by
/// offset, all in the text before.
fn in_old_offsets(
    deleted: &[(u64, u32)],
    inserts: Vec<(u64, String, Option<Runs>)>,
    before16: u32,
) -> Option<Vec<Op>> {
    fn retain(ops: &mut Vec<Op>, cursor: &mut u64, to: u64) -> Option<()> {
        if to < *cursor {
            return None;
        }
        if to > *cursor {
            ops.push(Op::Retain(u32::try_from(to - *cursor).ok()?));
        }
        *cursor = to;
        Some(())
    }
    // Pieces split at the inserts' offsets, so that each falls between two.
    let mut pieces = Vec::with_capacity(deleted.len() + inserts.len());
    for &(p, n) in deleted {
        let end = p + u64::from(n);
        let mut from = p;
        for (at, _, _) in &inserts {
            if from < *at && *at < end {
                pieces.push((from, *at));
                from = *at;
            }
        }
        pieces.push((from, end));
    }
    let mut ops = Vec::new();
    let mut cursor = 0u64;
    let mut pending = inserts.into_iter().peekable();
    for (p, end) in pieces {
        if end > u64::from(before16) {
            return None;
        }
        while let Some((at, s, ids)) = pending.next_if(|(at, _, _)| *at <= p) {
            retain(&mut ops, &mut cursor, at)?;
            ops.push(Op::Insert(s, ids));
        }
        retain(&mut ops, &mut cursor, p)?;
        ops.push(Op::Delete(u32::try_from(end - p).ok()?));
        cursor = end;
    }
    for (at, s, ids) in pending {
        if at > u64::from(before16) {
            return None;
        }
        retain(&mut ops, &mut cursor, at)?;
        ops.push(Op::Insert(s, ids));
    }
    Some(ops)
}

/// The change as ops, from the new offsets of the deleted units and of the inserted run
/// `(offset, len16, text)`, in a text that was `before16` long (see the module's notes).
fn arrange(
    mut deleted: Vec<u32>,
    insert: Option<(u32, u32, &str, Option<Runs>)>,
    before16: u32,
) -> Option<Vec<Op>> {
    deleted.sort_unstable();
    let (at, len16) = insert.as_ref().map_or((u64::MAX, 0), |(at, n, _, _)| {
        (u64::from(*at), u64::from(*n))
    });
    // Old positions, ascending: those left of the insert, then those right of it.
    let mut old = Vec::with_capacity(deleted.len());
    for (j, &q) in deleted.iter().enumerate() {
        let q = u64::from(q);
        let p = if q > at {
            // Right of the run, so past all of it.
            if q < at + len16 {
                return None;
            }
            q - len16 + j as u64
        } else {
            q + j as u64
        };
        old.push(p);
    }
    if old.last().is_some_and(|&p| p >= u64::from(before16)) {
        return None;
    }
    let left = deleted.partition_point(|&q| u64::from(q) <= at);
    let mut ops = Vec::new();
    let mut cursor = 0u64;
    let runs = |ops: &mut Vec<Op>, cursor: &mut u64, ps: &[u64]| -> Option<()> {
        let mut i = 0;
        while i < ps.len() {
            let start = ps[i];
            let mut end = start + 1;
            i += 1;
            while i < ps.len() && ps[i] == end {
                end += 1;
                i += 1;
            }
            if start > *cursor {
                ops.push(Op::Retain(u32::try_from(start - *cursor).ok()?));
            }
            ops.push(Op::Delete(u32::try_from(end - start).ok()?));
            *cursor = end;
        }
        Some(())
    };
    runs(&mut ops, &mut cursor, &old[..left])?;
    if let Some((_, _, s, ids)) = insert {
        // In the old text the run goes after what survived left of it and what was deleted there.
        let old_at = at + left as u64;
        if old_at > u64::from(before16) || old_at < cursor {
            return None;
        }
        if old_at > cursor {
            ops.push(Op::Retain(u32::try_from(old_at - cursor).ok()?));
        }
        ops.push(Op::Insert(s.to_string(), ids));
        cursor = old_at;
    }
    runs(&mut ops, &mut cursor, &old[left..])?;
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(old: &[char], ops: &[Op]) -> Vec<char> {
        let (mut out, mut at) = (Vec::new(), 0usize);
        for op in ops {
            match op {
                Op::Retain(n) => {
                    out.extend_from_slice(&old[at..at + *n as usize]);
                    at += *n as usize;
                }
                Op::Delete(n) => at += *n as usize,
                Op::Insert(s, _) => out.extend(s.chars()),
            }
        }
        out.extend_from_slice(&old[at..]);
        out
    }

    proptest! {
        /// Any set of deleted characters and any place of the insert among them: the ops from the
        /// new offsets turn the old text into the new one.
        #[test]
        fn arranged_ops_make_the_new_text(
            len in 0usize..40,
            deleted in proptest::collection::vec(any::<bool>(), 40),
            gap in any::<proptest::sample::Index>(),
            among in any::<proptest::sample::Index>(),
            insert in proptest::option::of("[x-z]{1,4}"),
        ) {
            let old: Vec<char> = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            // The document after the update: old characters (deleted ones as tombstones) with the
            // run at `gap` (a gap between visible characters), `among` the tombstones there.
            let mut seq: Vec<(char, bool)> = old.iter().zip(&deleted).map(|(&c, &d)| (c, d)).collect();
            let visible_gaps: Vec<usize> = (0..=seq.len())
                .filter(|&i| i == 0 || !seq[i - 1].1)
                .collect();
            let mut insert_at = None;
            if let Some(run) = &insert {
                let g = visible_gaps[gap.index(visible_gaps.len())];
                let tombs = seq[g..].iter().take_while(|(_, d)| *d).count();
                let at = g + among.index(tombs + 1);
                for (k, c) in run.chars().enumerate() {
                    seq.insert(at + k, (c, false));
                }
                insert_at = Some(at);
            }
            let new: Vec<char> = seq.iter().filter(|(_, d)| !d).map(|(c, _)| *c).collect();
            let visible_before = |i: usize| seq[..i].iter().filter(|(_, d)| !d).count() as u32;
            let qs: Vec<u32> = (0..seq.len())
                .filter(|&i| seq[i].1)
                .map(visible_before)
                .collect();
            let ins = match (&insert, insert_at) {
                (Some(run), Some(at)) => Some((visible_before(at), run.chars().count() as u32, run.as_str(), None)),
                _ => None,
            };
            let ops = arrange(qs, ins, len as u32).expect("a real change is always placed");
            prop_assert_eq!(apply(&old, &ops), new);
        }
    }

    proptest! {
        /// Deleted units and an insert's place in the text before: the ops make the text after.
        #[test]
        fn ops_in_old_offsets_make_the_new_text(
            len in 0usize..40,
            deleted in proptest::collection::vec(any::<bool>(), 40),
            at in any::<proptest::sample::Index>(),
            insert in proptest::option::of("[x-z]{1,4}"),
        ) {
            let old: Vec<char> = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let mut pieces: Vec<(u64, u32)> = Vec::new();
            for i in (0..len).filter(|&i| deleted[i]) {
                match pieces.last_mut() {
                    Some((p, n)) if *p + u64::from(*n) == i as u64 => *n += 1,
                    _ => pieces.push((i as u64, 1)),
                }
            }
            let at = at.index(len + 1);
            let mut new: Vec<char> = Vec::new();
            for (i, &c) in old.iter().enumerate() {
                if i == at && let Some(run) = &insert {
                    new.extend(run.chars());
                }
                if !deleted[i] {
                    new.push(c);
                }
            }
            if at == len && let Some(run) = &insert {
                new.extend(run.chars());
            }
            let ins = insert.iter().map(|s| (at as u64, s.clone(), None)).collect();
            let ops = in_old_offsets(&pieces, ins, len as u32).expect("placed");
            prop_assert_eq!(apply(&old, &ops), new);
        }
    }

    #[test]
    fn impossible_offsets_are_refused() {
        // A deleted unit inside the inserted run, or past the old text.
        assert_eq!(arrange(vec![3], Some((2, 4, "wxyz", None)), 10), None);
        assert_eq!(arrange(vec![10], None, 10), None);
        assert_eq!(arrange(vec![], Some((11, 1, "x", None)), 10), None);
        assert_eq!(in_old_offsets(&[(8, 3)], vec![], 10), None);
        assert_eq!(in_old_offsets(&[], vec![(11, "x".into(), None)], 10), None);
        assert_eq!(in_old_offsets(&[(2, 2), (3, 1)], vec![], 10), None);
    }
}
