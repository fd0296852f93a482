//! Where a peer's edit landed in the text, found from the characters it names instead of from
//! yrs' delta.
//!
//! yrs' `TextEvent::delta` walks every item of the text and asks the transaction, for each, whether
//! it was added or deleted in it: two lookups per item, whatever the update changed. For the
//! update one keystroke or one flush makes (one insert and a few deleted characters, which
//! [`typing::read_edit`] reads), the change follows from where those characters are now. yrs
//! answers that for one ID with a walk to the left of it that only sums lengths
//! (`StickyIndex::get_offset`): cheaper per item, and only over the items before it.
//!
//! How the offsets give the change: after the update, a deleted character's offset counts the
//! visible characters left of it, and so does the inserted run's. Sort the deleted ones; the
//! `j`-th had, in the old text, its new offset plus the `j` deleted before it, less the inserted
//! run if that is left of it. Deleted characters with the same offset as the insert lie left of
//! it (were the insert left, they would count it). Which way a tie goes does not change the text.
//!
//! Whether each named character was visible before is not asked one by one: the text's length
//! must have dropped by exactly as many units as the update deletes, net of its insert. With
//! nothing held back before or after, the transaction made exactly this update's changes, so
//! no unit can have been missing from that count.

use yrs::block::{ClientID, ID};
use yrs::branch::BranchPtr;
use yrs::{Assoc, IndexScope, ReadTxn, StickyIndex, Text, TextRef};

use super::idmap::IdMap;
use super::typing::ReadEdit;

/// A change to the text in the doc's (UTF-16) units, as the mirror applies it in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Retain(u32),
    Delete(u32),
    Insert(String),
}

/// Each ID placed is a walk over the items left of it; the delta is one walk over all items,
/// with more work per item. Beyond two walks the delta was as cheap (measured on the traces).
const MAX_WALKS: u64 = 2;

/// Delete ranges an update may have for this to place it (each is matched against every run of
/// the [`IdMap`]).
const MAX_RANGES: usize = 16;

/// What an update will do to the text, read from it before it is applied.
#[derive(Debug)]
pub(super) struct Hint {
    /// The text's length before the update.
    before16: u32,
    /// The first inserted character's ID, the run's length, its text.
    insert: Option<(ID, u32, String)>,
    /// The insert's left and right origins.
    origins: Option<(ID, Option<ID>)>,
    /// `(client, clock, len)` ranges the update deletes.
    deletes: Vec<(ClientID, u32, u32)>,
    deleted16: u64,
}

impl Hint {
    /// `None` for an update this cannot place: too many deleted ranges, or a delete of its own
    /// insert.
    pub(super) fn new(read: &ReadEdit, before16: u32) -> Option<Hint> {
        let deleted16: u64 = read.deletes.iter().map(|&(_, _, n)| u64::from(n)).sum();
        if read.deletes.len() > MAX_RANGES {
            return None;
        }
        let insert = read
            .insert
            .as_ref()
            .map(|i| (i.first, i.len16, i.text.to_string()));
        if let Some((first, len16, _)) = &insert {
            let (start, end) = (
                u64::from(first.clock),
                u64::from(first.clock) + u64::from(*len16),
            );
            let overlaps = read.deletes.iter().any(|&(c, clock, n)| {
                c == first.client
                    && u64::from(clock) < end
                    && start < u64::from(clock) + u64::from(n)
            });
            if overlaps {
                return None;
            }
        }
        Some(Hint {
            before16,
            insert,
            origins: read.insert.as_ref().map(|i| (i.origin, i.right)),
            deletes: read.deletes.clone(),
            deleted16,
        })
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
    let inserted16 = hint.insert.as_ref().map_or(0, |i| i.1);
    let after16 = text.len(txn);
    if u64::from(hint.before16) + u64::from(inserted16) != u64::from(after16) + hint.deleted16 {
        return None;
    }
    let branch = BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(text));
    let offset = |id: ID| -> Option<u32> {
        let at = StickyIndex::new(IndexScope::Relative(id), Assoc::After).get_offset(txn)?;
        (at.branch == branch).then_some(at.index)
    };
    if let Some((deleted, at)) = ids
        .filter(|m| m.len16() == u64::from(hint.before16))
        .and_then(|m| from_map(m, hint))
    {
        // The insert's place: from the map, or the one walk left.
        let insert = match (&hint.insert, at) {
            (Some((_, _, s)), Some(at)) => Some((at, s.as_str())),
            (Some((first, _, s)), None) => {
                // Its new offset counts what survived left of it; add back what was deleted there.
                let mut at = u64::from(offset(*first)?);
                for &(p, n) in &deleted {
                    if p < at {
                        at += u64::from(n);
                    } else {
                        break;
                    }
                }
                Some((at, s.as_str()))
            }
            (None, _) => None,
        };
        return in_old_offsets(&deleted, insert, hint.before16);
    }
    if hint.deleted16 + u64::from(hint.insert.is_some()) > MAX_WALKS {
        return None;
    }
    let insert = match &hint.insert {
        Some((first, len16, s)) => Some((offset(*first)?, *len16, s.as_str())),
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

/// Deleted units as `(offset, len)` pieces in the text before the update, sorted.
type Pieces = Vec<(u64, u32)>;

/// Where the map puts the update's deleted units before it (pieces `(offset, len)`, sorted and
/// merged) and, if it can tell, the offset the insert went to: right after its left origin
/// when that and its right origin are visible and next to each other (then nothing visible can
/// be between them, whatever tombstones are). `None` unless every deleted unit is in the map.
fn from_map(map: &IdMap, hint: &Hint) -> Option<(Pieces, Option<u64>)> {
    let points: Vec<ID> = hint
        .origins
        .iter()
        .flat_map(|(o, r)| std::iter::once(*o).chain(*r))
        .collect();
    let (mut pieces, at) = map.find(&hint.deletes, &points);
    let found: u64 = pieces.iter().map(|&(_, n)| u64::from(n)).sum();
    if found != hint.deleted16 {
        return None;
    }
    pieces.sort_unstable();
    let mut merged: Vec<(u64, u32)> = Vec::with_capacity(pieces.len());
    for (p, n) in pieces {
        match merged.last_mut() {
            Some((q, m)) if *q + u64::from(*m) == p => *m += n,
            _ => merged.push((p, n)),
        }
    }
    let insert_at = match (hint.origins, at.as_slice()) {
        (Some((_, Some(_))), [Some(o), Some(r)]) if *o + 1 == *r => Some(*r),
        (Some((_, None)), [Some(o)]) if *o + 1 == map.len16() => Some(*o + 1),
        _ => None,
    };
    Some((merged, insert_at))
}

/// The change as ops, from the deleted pieces and the insert's offset, all in the text before.
fn in_old_offsets(
    deleted: &[(u64, u32)],
    insert: Option<(u64, &str)>,
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
    // Pieces split at the insert's offset, so that it falls between two.
    let mut pieces = Vec::with_capacity(deleted.len() + 1);
    for &(p, n) in deleted {
        let end = p + u64::from(n);
        match insert {
            Some((at, _)) if p < at && at < end => pieces.extend([(p, at), (at, end)]),
            _ => pieces.push((p, end)),
        }
    }
    let mut ops = Vec::new();
    let mut cursor = 0u64;
    let mut pending = insert;
    for (p, end) in pieces {
        if end > u64::from(before16) {
            return None;
        }
        if let Some((at, s)) = pending.take_if(|(at, _)| *at <= p) {
            retain(&mut ops, &mut cursor, at)?;
            ops.push(Op::Insert(s.to_string()));
        }
        retain(&mut ops, &mut cursor, p)?;
        ops.push(Op::Delete(u32::try_from(end - p).ok()?));
        cursor = end;
    }
    if let Some((at, s)) = pending {
        if at > u64::from(before16) {
            return None;
        }
        retain(&mut ops, &mut cursor, at)?;
        ops.push(Op::Insert(s.to_string()));
    }
    Some(ops)
}

/// The change as ops, from the new offsets of the deleted units and of the inserted run
/// `(offset, len16, text)`, in a text that was `before16` long (see the module's notes).
fn arrange(
    mut deleted: Vec<u32>,
    insert: Option<(u32, u32, &str)>,
    before16: u32,
) -> Option<Vec<Op>> {
    deleted.sort_unstable();
    let (at, len16) = insert.map_or((u64::MAX, 0), |(at, n, _)| (u64::from(at), u64::from(n)));
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
    if let Some((_, _, s)) = insert {
        // In the old text the run goes after what survived left of it and what was deleted there.
        let old_at = at + left as u64;
        if old_at > u64::from(before16) || old_at < cursor {
            return None;
        }
        if old_at > cursor {
            ops.push(Op::Retain(u32::try_from(old_at - cursor).ok()?));
        }
        ops.push(Op::Insert(s.to_string()));
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
                Op::Insert(s) => out.extend(s.chars()),
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
                (Some(run), Some(at)) => Some((visible_before(at), run.chars().count() as u32, run.as_str())),
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
            let ins = insert.as_deref().map(|s| (at as u64, s));
            let ops = in_old_offsets(&pieces, ins, len as u32).expect("placed");
            prop_assert_eq!(apply(&old, &ops), new);
        }
    }

    #[test]
    fn impossible_offsets_are_refused() {
        // A deleted unit inside the inserted run, or past the old text.
        assert_eq!(arrange(vec![3], Some((2, 4, "wxyz")), 10), None);
        assert_eq!(arrange(vec![10], None, 10), None);
        assert_eq!(arrange(vec![], Some((11, 1, "x")), 10), None);
        assert_eq!(in_old_offsets(&[(8, 3)], None, 10), None);
        assert_eq!(in_old_offsets(&[], Some((11, "x")), 10), None);
        assert_eq!(in_old_offsets(&[(2, 2), (3, 1)], None, 10), None);
    }
}
