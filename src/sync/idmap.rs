//! The IDs of the text's visible characters, in order: what lets a local delete go into yrs by
//! ID instead of by index (a walk of yrs' block list from the start in yrs 0.28).
//!
//! Only visible characters are kept, as runs of consecutive clocks of one client; tombstones
//! are not, so this cannot place an insert (yrs puts one after the deleted items at its index),
//! only name what a delete removes. Runs sit in chunks of about [`CHUNK`], each knowing its
//! length, so finding an offset reads the chunk lengths and then one chunk.
//!
//! It is only as good as its upkeep: every change to the text must reach it with the IDs it
//! inserted, or [`super::SharedDoc`] drops it (and rebuilds it from yrs when deletes want it).

use yrs::block::{ClientID, ID};

/// Runs per chunk before it splits in two.
const CHUNK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    client: ClientID,
    clock: u32,
    /// UTF-16 units, one clock each.
    len: u32,
}

#[derive(Debug, Default)]
struct Chunk {
    runs: Vec<Run>,
    len: u64,
}

#[derive(Debug, Default)]
pub(super) struct IdMap {
    chunks: Vec<Chunk>,
    len: u64,
}

impl IdMap {
    /// The map of an empty text.
    pub(super) fn new() -> IdMap {
        IdMap::default()
    }

    /// The map of a text whose visible characters are `runs` `(client, clock, len16)`, in order.
    pub(super) fn from_runs(runs: impl IntoIterator<Item = (ClientID, u32, u32)>) -> IdMap {
        let mut map = IdMap::new();
        for (client, clock, len) in runs {
            let at = map.len;
            map.insert(at, client, clock, len);
        }
        map
    }

    /// Length in UTF-16 units.
    pub(super) fn len16(&self) -> u64 {
        self.len
    }

    /// The chunk holding offset `at` and `at`'s offset in it; at a boundary, the chunk that ends
    /// there. `None` past the end.
    fn locate(&self, at: u64) -> Option<(usize, u64)> {
        if at > self.len {
            return None;
        }
        let mut before = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            if at <= before + c.len {
                return Some((i, at - before));
            }
            before += c.len;
        }
        None
    }

    /// The IDs of the `len` units at `at`, as `(client, clock, len)` ranges in text order.
    pub(super) fn ids(&self, at: u64, len: u64) -> Option<Vec<(ClientID, u32, u32)>> {
        if at.checked_add(len)? > self.len {
            return None;
        }
        let mut out = Vec::new();
        let mut skip = at;
        let mut left = len;
        for chunk in &self.chunks {
            if left == 0 {
                break;
            }
            // Whole chunks before `at` are passed by their length alone.
            if skip >= chunk.len {
                skip -= chunk.len;
                continue;
            }
            for run in &chunk.runs {
                if left == 0 {
                    break;
                }
                let n = u64::from(run.len);
                if skip >= n {
                    skip -= n;
                    continue;
                }
                let take = (n - skip).min(left);
                out.push((
                    run.client,
                    run.clock + u32::try_from(skip).ok()?,
                    u32::try_from(take).ok()?,
                ));
                skip = 0;
                left -= take;
            }
        }
        (left == 0).then_some(out)
    }

    /// Where the units `ranges` (`(client, clock, len)`) and the single units `points` are, in
    /// one pass over the runs: the positions and lengths of the pieces of `ranges` found, in
    /// text order, and each point's position. Units not in the map (deleted, or never seen) are
    /// simply not found.
    pub(super) fn find(
        &self,
        ranges: &[(ClientID, u32, u32)],
        points: &[ID],
    ) -> (Vec<(u64, u32)>, Vec<Option<u64>>) {
        let mut found = Vec::new();
        let mut at_point = vec![None; points.len()];
        let mut at = 0u64;
        for run in self.chunks.iter().flat_map(|c| &c.runs) {
            let (start, end) = (
                u64::from(run.clock),
                u64::from(run.clock) + u64::from(run.len),
            );
            for &(client, clock, len) in ranges {
                let (from, to) = (u64::from(clock), u64::from(clock) + u64::from(len));
                if client == run.client && from < end && start < to {
                    let lo = from.max(start);
                    found.push((at + lo - start, (to.min(end) - lo) as u32));
                }
            }
            for (p, slot) in points.iter().zip(&mut at_point) {
                let k = u64::from(p.clock);
                if p.client == run.client && start <= k && k < end {
                    *slot = Some(at + k - start);
                }
            }
            at += u64::from(run.len);
        }
        (found, at_point)
    }

    /// Removes the `len` units at `at`.
    pub(super) fn remove(&mut self, at: u64, len: u64) -> Option<()> {
        if at.checked_add(len)? > self.len {
            return None;
        }
        let mut skip = at;
        let mut left = len;
        for chunk in &mut self.chunks {
            if left == 0 {
                break;
            }
            if skip >= chunk.len {
                skip -= chunk.len;
                continue;
            }
            let mut kept = Vec::with_capacity(chunk.runs.len() + 1);
            for run in chunk.runs.drain(..) {
                let n = u64::from(run.len);
                if left == 0 || skip >= n {
                    skip = skip.saturating_sub(n);
                    kept.push(run);
                    continue;
                }
                // The run loses [skip, skip + cut).
                let cut = (n - skip).min(left);
                if skip > 0 {
                    kept.push(Run {
                        len: skip as u32,
                        ..run
                    });
                }
                let rest = n - skip - cut;
                if rest > 0 {
                    kept.push(Run {
                        client: run.client,
                        clock: run.clock + (skip + cut) as u32,
                        len: rest as u32,
                    });
                }
                chunk.len -= cut;
                left -= cut;
                skip = 0;
            }
            chunk.runs = kept;
        }
        self.chunks.retain(|c| !c.runs.is_empty());
        self.len -= len;
        Some(())
    }

    /// Inserts the run `client`, clocks `clock..clock + len`, at `at`.
    pub(super) fn insert(&mut self, at: u64, client: ClientID, clock: u32, len: u32) -> Option<()> {
        if len == 0 {
            return Some(());
        }
        clock.checked_add(len)?;
        let new = Run { client, clock, len };
        if self.chunks.is_empty() && at == 0 {
            self.chunks.push(Chunk::default());
        }
        let (ci, mut off) = self.locate(at)?;
        let chunk = &mut self.chunks[ci];
        let mut i = 0;
        while i < chunk.runs.len() && off >= u64::from(chunk.runs[i].len) {
            off -= u64::from(chunk.runs[i].len);
            i += 1;
        }
        if off > 0 {
            // Inside run i: split it around the new one.
            let run = chunk.runs[i];
            let head = off as u32;
            chunk.runs[i].len = head;
            chunk.runs.insert(
                i + 1,
                Run {
                    client: run.client,
                    clock: run.clock + head,
                    len: run.len - head,
                },
            );
            i += 1;
        }
        // Typing on extends the run before.
        match i.checked_sub(1).map(|p| &mut chunk.runs[p]) {
            Some(prev)
                if prev.client == client && prev.clock.checked_add(prev.len) == Some(clock) =>
            {
                prev.len += len;
            }
            _ => chunk.runs.insert(i, new),
        }
        chunk.len += u64::from(len);
        self.len += u64::from(len);
        if chunk.runs.len() > 2 * CHUNK {
            let tail: Vec<Run> = chunk.runs.split_off(CHUNK);
            let tail_len: u64 = tail.iter().map(|r| u64::from(r.len)).sum();
            chunk.len -= tail_len;
            self.chunks.insert(
                ci + 1,
                Chunk {
                    runs: tail,
                    len: tail_len,
                },
            );
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: one ID per unit.
    fn expand(ranges: &[(ClientID, u32, u32)]) -> Vec<(u64, u32)> {
        ranges
            .iter()
            .flat_map(|&(c, clock, n)| (clock..clock + n).map(move |k| (c.get(), k)))
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { frac: f64, client: u64, len: u32 },
        Remove { frac: f64, len: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0.0..=1.0f64, 1..4u64, 1..6u32).prop_map(|(frac, client, len)| Op::Insert { frac, client, len }),
            2 => (0.0..=1.0f64, 0..12u64).prop_map(|(frac, len)| Op::Remove { frac, len }),
        ]
    }

    proptest! {
        /// Against a vector of one ID per unit, through enough edits to split chunks.
        #[test]
        fn the_map_names_what_a_list_of_ids_would(ops in prop::collection::vec(op(), 1..400)) {
            let mut map = IdMap::new();
            let mut model: Vec<(u64, u32)> = Vec::new();
            let mut clocks = [0u32; 4];
            for op in ops {
                match op {
                    Op::Insert { frac, client, len } => {
                        let at = (frac * model.len() as f64) as usize;
                        let clock = clocks[client as usize];
                        clocks[client as usize] += len;
                        map.insert(at as u64, ClientID::new(client), clock, len).unwrap();
                        for k in 0..len {
                            model.insert(at + k as usize, (client, clock + k));
                        }
                    }
                    Op::Remove { frac, len } => {
                        let at = (frac * model.len() as f64) as usize;
                        let len = (len as usize).min(model.len() - at);
                        let ids = map.ids(at as u64, len as u64).unwrap();
                        prop_assert_eq!(expand(&ids), model[at..at + len].to_vec());
                        // And back: where those IDs are, and a point at each end.
                        let ends: Vec<ID> = [at.checked_sub(1), Some(at + len)]
                            .iter()
                            .flatten()
                            .filter(|&&i| i < model.len())
                            .map(|&i| ID::new(ClientID::new(model[i].0), model[i].1))
                            .collect();
                        let (pieces, points) = map.find(&ids, &ends);
                        let mut units: Vec<u64> = pieces
                            .iter()
                            .flat_map(|&(p, n)| p..p + u64::from(n))
                            .collect();
                        units.sort_unstable();
                        prop_assert_eq!(units, (at as u64..(at + len) as u64).collect::<Vec<_>>());
                        for (id, p) in ends.iter().zip(points) {
                            let i = model.iter().position(|&(c, k)| c == id.client.get() && k == id.clock);
                            prop_assert_eq!(p, i.map(|i| i as u64));
                        }
                        map.remove(at as u64, len as u64).unwrap();
                        model.drain(at..at + len);
                    }
                }
                prop_assert_eq!(map.len16(), model.len() as u64);
            }
            let all = map.ids(0, model.len() as u64).unwrap();
            prop_assert_eq!(expand(&all), model.clone());
            prop_assert!(map.ids(0, model.len() as u64 + 1).is_none());
            prop_assert!(map.remove(model.len() as u64, 1).is_none());
            prop_assert!(map.insert(model.len() as u64 + 1, ClientID::new(1), 999, 1).is_none());
        }
    }
}
