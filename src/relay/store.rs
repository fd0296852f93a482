//! Room snapshots on disk (`--data-dir`): one `ROOM.json` (tokens) and one `ROOM.ydoc` (the
//! encoded document) per room, each written atomically. The persistence issue replaces this with
//! an append log; the seam (load at start, flush at shutdown) stays.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room: String,
    pub write_token: String,
    pub view_token: String,
}

pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn open(dir: &Path) -> anyhow::Result<FileStore> {
        fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn save(&self, record: &RoomRecord, state: &[u8]) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(record)?;
        write_atomic(&self.dir.join(format!("{}.ydoc", record.room)), state)
            .with_context(|| format!("saving room {}", record.room))?;
        write_atomic(&self.dir.join(format!("{}.json", record.room)), &json)
            .with_context(|| format!("saving room {}", record.room))?;
        Ok(())
    }

    /// Every room on disk; a room that cannot be read is reported and skipped, never fatal.
    pub fn load_all(&self) -> anyhow::Result<Vec<(RoomRecord, Vec<u8>)>> {
        let mut rooms = Vec::new();
        let entries =
            fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let loaded = (|| -> anyhow::Result<(RoomRecord, Vec<u8>)> {
                let record: RoomRecord = serde_json::from_slice(&fs::read(&path)?)?;
                let state = fs::read(self.dir.join(format!("{}.ydoc", record.room)))?;
                Ok((record, state))
            })();
            match loaded {
                Ok(room) => rooms.push(room),
                Err(e) => tracing::warn!("skipping unreadable room {}: {e:#}", path.display()),
            }
        }
        Ok(rooms)
    }
}
