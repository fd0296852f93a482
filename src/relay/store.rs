//! Rooms on disk (`--data-dir`): one directory per room holding
//!
//! - `room.json`: the room id and the SHA-256 hashes of its two tokens (never the tokens);
//! - `snapshot.ydoc`: the whole document as one update, written atomically at compaction;
//! - `updates.log`: every update accepted since that snapshot, appended *before* it is
//!   broadcast, as records `[len: u32 LE][crc32: u32 LE][update bytes]`.
//!
//! A `write()` that returned is in the page cache and survives `kill -9`; the log is fsynced
//! when compacted and at shutdown. On load, a damaged or truncated log tail (a crash mid-record,
//! a bad disk) is detected by length and checksum: the intact prefix is kept, the rest is cut
//! off and reported. One unreadable room never stops the relay from starting.
//!
//! Why files and not an embedded database: the access pattern is exactly "append small
//! records, occasionally replace everything with one snapshot", per room, which a file does
//! with one `write()` per update and no extra dependency or write amplification; rooms are
//! independent, so a corrupt room cannot take others down.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fsutil::write_atomic;

/// Larger records than this are corruption, not updates.
const MAX_RECORD: usize = 1 << 30;

/// A token as stored: hex SHA-256. Tokens are 128-bit random, so a plain hash suffices.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room: String,
    pub write_hash: String,
    pub view_hash: String,
}

/// An open room log: appends go straight to the file.
#[derive(Debug)]
pub struct RoomLog {
    dir: PathBuf,
    file: File,
    /// Bytes in the log (for deciding when to compact).
    pub len: u64,
}

impl RoomLog {
    /// Appends one update record (before the update is broadcast).
    pub fn append(&mut self, update: &[u8]) -> std::io::Result<()> {
        let mut record = Vec::with_capacity(update.len() + 8);
        record.extend_from_slice(&(update.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(update).to_le_bytes());
        record.extend_from_slice(update);
        self.file.write_all(&record)?;
        self.len += record.len() as u64;
        Ok(())
    }

    /// Replaces snapshot + log with one snapshot of `state` (the whole document).
    pub fn compact(&mut self, state: &[u8]) -> std::io::Result<()> {
        // Order matters for crash safety: the new snapshot is complete before the log is cut;
        // a crash in between replays updates the snapshot already has, which is harmless.
        self.file.sync_data()?;
        write_atomic(&self.dir.join("snapshot.ydoc"), state)?;
        self.file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.dir.join("updates.log"))?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// A room read back from disk.
pub struct LoadedRoom {
    pub record: RoomRecord,
    /// The snapshot (if any) followed by the logged updates, in order.
    pub updates: Vec<Vec<u8>>,
    pub log: RoomLog,
    /// Bytes cut off a damaged log tail (0 when intact).
    pub dropped: u64,
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

    /// Makes a new room's directory (its record written atomically) and opens its log.
    pub fn create(&self, record: &RoomRecord) -> anyhow::Result<RoomLog> {
        let dir = self.dir.join(&record.room);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join("room.json"), &serde_json::to_vec_pretty(record)?)
            .with_context(|| format!("saving room {}", record.room))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("updates.log"))?;
        Ok(RoomLog { dir, file, len: 0 })
    }

    /// One room by id, if it is on disk (the id must already be validated: it names a directory).
    pub fn load(&self, room: &str) -> Option<anyhow::Result<LoadedRoom>> {
        let dir = self.dir.join(room);
        dir.join("room.json").exists().then(|| load_room(&dir))
    }

    /// Every room on disk. Rooms that cannot be read are reported and skipped.
    pub fn load_all(&self) -> anyhow::Result<Vec<LoadedRoom>> {
        let mut rooms = Vec::new();
        let entries =
            fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            match load_room(&path) {
                Ok(room) => {
                    if room.dropped > 0 {
                        tracing::warn!(
                            "room {}: dropped {} bytes of a damaged log tail; kept {} intact updates",
                            room.record.room,
                            room.dropped,
                            room.updates.len()
                        );
                        eprintln!(
                            "pairedit: room {}: dropped {} bytes of a damaged log tail (kept the intact prefix)",
                            room.record.room, room.dropped
                        );
                    }
                    rooms.push(room);
                }
                Err(e) => {
                    tracing::warn!("skipping unreadable room {}: {e:#}", path.display());
                    eprintln!(
                        "pairedit: skipping unreadable room {}: {e:#}",
                        path.display()
                    );
                }
            }
        }
        Ok(rooms)
    }
}

fn load_room(dir: &Path) -> anyhow::Result<LoadedRoom> {
    let record: RoomRecord = serde_json::from_slice(&fs::read(dir.join("room.json"))?)
        .context("room.json is not valid")?;
    let mut updates = Vec::new();
    match fs::read(dir.join("snapshot.ydoc")) {
        Ok(snapshot) => updates.push(snapshot),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("reading snapshot.ydoc"),
    }
    let log_path = dir.join("updates.log");
    let mut bytes = Vec::new();
    match File::open(&log_path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("reading updates.log"),
    }
    let (records, intact) = parse_log(&bytes);
    updates.extend(records);
    let dropped = (bytes.len() - intact) as u64;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    if dropped > 0 {
        // Cut the damaged tail so new appends follow the intact prefix.
        file.set_len(intact as u64)?;
        file.sync_all()?;
    }
    Ok(LoadedRoom {
        record,
        updates,
        log: RoomLog {
            dir: dir.to_path_buf(),
            file,
            len: intact as u64,
        },
        dropped,
    })
}

/// Reads records until the end or the first damaged one; returns them and the intact length.
pub fn parse_log(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        if len > MAX_RECORD || bytes.len() - at - 8 < len {
            break;
        }
        let body = &bytes[at + 8..at + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        records.push(body.to_vec());
        at += 8 + len;
    }
    (records, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RoomRecord {
        RoomRecord {
            room: "r1".into(),
            write_hash: hash_token("w_x"),
            view_hash: hash_token("v_x"),
        }
    }

    #[test]
    fn a_truncated_or_corrupt_tail_keeps_the_intact_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let mut log = store.create(&record()).unwrap();
        for i in 0..5u8 {
            log.append(&[i; 10]).unwrap();
        }
        drop(log);
        let path = dir.path().join("r1/updates.log");
        let full = fs::read(&path).unwrap();
        // Cut the last record in half, as a crash mid-write would.
        fs::write(&path, &full[..full.len() - 5]).unwrap();
        let rooms = store.load_all().unwrap();
        assert_eq!(
            rooms[0].updates,
            (0..4u8).map(|i| vec![i; 10]).collect::<Vec<_>>()
        );
        assert_eq!(rooms[0].dropped, 13);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            4 * 18,
            "the damaged tail was cut off"
        );
        // Flip a byte inside record 2: records 2.. are dropped, 0 and 1 kept.
        let mut bytes = fs::read(&path).unwrap();
        bytes[2 * 18 + 8] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let rooms = store.load_all().unwrap();
        assert_eq!(rooms[0].updates.len(), 2);
        // Appending after recovery continues a valid log.
        let mut log = store.load_all().unwrap().pop().unwrap().log;
        log.append(b"after").unwrap();
        drop(log);
        let rooms = store.load_all().unwrap();
        assert_eq!(rooms[0].updates.last().unwrap(), b"after");
        assert_eq!(rooms[0].dropped, 0);
    }

    #[test]
    fn compaction_replaces_the_log_with_a_snapshot_and_tokens_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let mut log = store.create(&record()).unwrap();
        log.append(b"one").unwrap();
        log.compact(b"state").unwrap();
        log.append(b"two").unwrap();
        drop(log);
        let rooms = store.load_all().unwrap();
        assert_eq!(rooms[0].updates, vec![b"state".to_vec(), b"two".to_vec()]);
        let json = fs::read_to_string(dir.path().join("r1/room.json")).unwrap();
        assert!(!json.contains("w_x") && json.contains(&hash_token("w_x")));
        // An unreadable room is skipped, not fatal.
        fs::create_dir(dir.path().join("junk")).unwrap();
        fs::write(dir.path().join("junk/room.json"), "{not json").unwrap();
        assert_eq!(store.load_all().unwrap().len(), 1);
    }
}
