//! Whether a peer's update cuts the text inside a surrogate pair where no event says so.
//!
//! yrs, like Yjs, cuts an item wherever an update names a unit inside it: after a new item's
//! left origin, before its right origin. A cut between the two UTF-16 halves of an astral
//! character (an emoji) turns each half into U+FFFD, in place, with no delta for it: the text's
//! length stays the same and the mirror, which still holds the emoji, would differ from the
//! Y.Text in content. No honest client names such a unit (a JS client can, by index), but a
//! buggy or hostile one can, and the new item may even land somewhere else.
//!
//! Deletes cut too, but the mirror sees those: a delete ends inside a pair in the delta itself.
//! Cuts inside the update's own inserts are in the delta as well (it reads the items' content
//! after the update). What is left is each origin that is a visible unit of the old text: its
//! cut point, read before the update is applied, must fall between two characters of the rope.

use ropey::Rope;
use yrs::block::ID;
use yrs::branch::BranchPtr;
use yrs::{Assoc, IndexScope, ReadTxn, StateVector, StickyIndex, TextRef};

use super::idmap::IdMap;
use super::typing::ReadUpdate;

/// Inserts an update may have for its cut points to be checked one by one; beyond, or for an
/// update that is not only string inserts and deletes, the mirror is compared whole instead.
const MAX_CHECKED: usize = 64;

/// What the check found, before the update is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cuts {
    /// No cut can fall inside a pair of the old text.
    Clear,
    /// One does: the mirror must be rebuilt after the update.
    Inside,
    /// Not known from the update alone: compare the mirror with the Y.Text after it.
    Unknown,
}

/// Checks the cuts `read` (the update, if [`super::typing::read_update`] could read it) makes in
/// the text before it is applied. `rope` is the mirror, `sv` the doc's state vector, `map` the
/// [`IdMap`] when it is in step with the text (it answers without a walk), `held_back` whether
/// the doc holds updates waiting for missing ones (those may integrate now, unread).
pub(super) fn check<T: ReadTxn>(
    rope: &Rope,
    read: Option<&ReadUpdate>,
    held_back: bool,
    sv: &StateVector,
    map: Option<&IdMap>,
    txn: &T,
    text: &TextRef,
) -> Cuts {
    // Only astral characters take two units.
    if rope.len_chars() == rope.len_utf16_cu() {
        return Cuts::Clear;
    }
    let Some(read) = read.filter(|r| !held_back && r.inserts.len() <= MAX_CHECKED) else {
        return Cuts::Unknown;
    };
    // `(unit, true)`: the cut after a left origin; `(unit, false)`: before a right origin. A
    // unit the doc does not have yet is not in the old text.
    let cuts: Vec<(ID, bool)> = read
        .inserts
        .iter()
        .flat_map(|i| {
            i.origin
                .map(|o| (o, true))
                .into_iter()
                .chain(i.right.map(|r| (r, false)))
        })
        .filter(|(id, _)| id.clock < sv.get(&id.client))
        .collect();
    if cuts.is_empty() {
        return Cuts::Clear;
    }
    let len16 = rope.len_utf16_cu();
    let offsets: Vec<Option<usize>> = match map.filter(|m| m.len16() == len16 as u64) {
        // The map holds every visible unit: one it does not have was deleted, and cutting a
        // deleted item changes nothing visible.
        Some(map) => {
            let points: Vec<ID> = cuts.iter().map(|&(id, _)| id).collect();
            let (_, at) = map.find(&[], &points);
            at.iter()
                .zip(&cuts)
                .map(|(at, &(_, after))| {
                    at.and_then(|p| usize::try_from(p).ok())
                        .map(|p| p + usize::from(after))
                })
                .collect()
        }
        // A walk each: a visible unit's offset, plus one with `Assoc::Before` (yrs counts the
        // unit itself then); a deleted one gives where the next visible character starts.
        None => {
            let branch = BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(text));
            cuts.iter()
                .map(|&(id, after)| {
                    let assoc = if after { Assoc::Before } else { Assoc::After };
                    let at = StickyIndex::new(IndexScope::Relative(id), assoc).get_offset(txn)?;
                    (at.branch == branch).then_some(at.index as usize)
                })
                .collect()
        }
    };
    let between_chars =
        |x: usize| x <= len16 && rope.char_to_utf16_cu(rope.utf16_cu_to_char(x)) == x;
    if offsets.into_iter().flatten().all(between_chars) {
        Cuts::Clear
    } else {
        Cuts::Inside
    }
}
