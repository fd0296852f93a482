//! Collects local updates between flush ticks and yields one merged update per tick.

/// Local yrs updates waiting for the next flush.
///
/// The timing lives with the caller (the client's flush ticker); this type only decides *what*
/// a flush sends: nothing when nothing changed, else exactly one update.
#[derive(Debug, Default)]
pub struct Batcher {
    pending: Vec<Vec<u8>>,
}

impl Batcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues one update (as produced by a committed local transaction).
    pub fn push(&mut self, update: Vec<u8>) {
        self.pending.push(update);
    }

    /// Number of updates waiting (one per local transaction since the last flush).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes everything queued and merges it into one lib0 v1 update, or `None` when idle.
    pub fn flush(&mut self) -> Result<Option<Vec<u8>>, yrs::encoding::read::Error> {
        match self.pending.len() {
            0 => Ok(None),
            1 => Ok(self.pending.pop()),
            _ => {
                let merged = yrs::merge_updates_v1(self.pending.iter().map(Vec::as_slice))?;
                self.pending.clear();
                Ok(Some(merged))
            }
        }
    }
}
