//! Files written so a crash never leaves a half-written one.

use std::fs;
use std::io::Write as _;
use std::path::Path;

/// The directory `path` is in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename over it, fsync the
/// directory. An existing file's permissions are kept.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_chunks(path, [bytes])
}

/// [`write_atomic`] for text held in pieces, such as a rope's chunks (a snapshot of a rope is
/// written without first being copied into one string).
pub fn write_atomic_chunks<'a>(
    path: &Path,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<()> {
    let dir = dir_of(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // One name per write: two writes of one file in flight (a slow disk, a recovery copy
    // still being written when the next one starts) must not share a temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.pairedit-{}-{n}.tmp", std::process::id()));
    let result = (|| {
        // Whole megabytes at a time: a rope's chunks are about a kilobyte each.
        let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
        for chunk in chunks {
            f.write_all(chunk)?;
        }
        let f = f
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        if let Ok(meta) = fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Why a file cannot be edited as text, if it cannot.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The reason is the error's source (shown after it, as `{:#}` prints a chain).
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} looks like a binary file (it contains NUL bytes); pairedit edits text only")]
    Binary { path: String },
    #[error(
        "{path} is not valid UTF-8 (first bad byte at offset {offset}); pairedit edits UTF-8 text only"
    )]
    NotUtf8 { path: String, offset: usize },
}

/// A file to edit that is not there yet but can be: its directory exists. Saving creates it.
pub fn is_new_file(path: &Path, err: &LoadError) -> bool {
    let LoadError::Io { source, .. } = err else {
        return false;
    };
    source.kind() == std::io::ErrorKind::NotFound && dir_of(path).is_dir()
}

/// Reads a text file for editing: refuses binary files and invalid UTF-8, keeps everything else
/// byte for byte (CRLF, tabs, a missing final newline).
pub fn load_text(path: &Path) -> Result<String, LoadError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).map_err(|source| LoadError::Io {
        path: shown.clone(),
        source,
    })?;
    if bytes[..bytes.len().min(64 * 1024)].contains(&0) {
        return Err(LoadError::Binary { path: shown });
    }
    String::from_utf8(bytes).map_err(|e| LoadError::NotUtf8 {
        path: shown,
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_permissions_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.sh");
        fs::write(&p, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o751)).unwrap();
        }
        write_atomic(&p, b"new\r\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new\r\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o751
            );
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn binary_and_invalid_utf8_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("a.bin");
        fs::write(&bin, b"ab\0cd").unwrap();
        assert!(load_text(&bin).unwrap_err().to_string().contains("binary"));
        let bad = dir.path().join("b.txt");
        fs::write(&bad, b"ok \xff\xfe").unwrap();
        assert!(
            load_text(&bad)
                .unwrap_err()
                .to_string()
                .contains("offset 3")
        );
        let good = dir.path().join("c.txt");
        fs::write(&good, "x\r\n\ty 日本 e\u{301}").unwrap();
        assert_eq!(load_text(&good).unwrap(), "x\r\n\ty 日本 e\u{301}");
        assert!(
            load_text(&dir.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }
}

/// What a file looked like when we last read or wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub modified: Option<std::time::SystemTime>,
    pub len: u64,
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    #[error("{0} changed on disk since it was loaded")]
    ChangedOnDisk(String),
    #[error("{0}")]
    Io(String),
}

/// Saves `text` (a rope: a snapshot taken in constant time, written from its chunks) atomically,
/// unless the file changed on disk since `expect` (someone else wrote it) and `force` is off.
/// Returns the new stamp.
pub fn save_checked(
    path: &Path,
    text: &ropey::Rope,
    expect: Option<Stamp>,
    force: bool,
) -> Result<Stamp, SaveError> {
    if !force
        && let Some(expect) = expect
        && stamp(path) != Some(expect)
    {
        return Err(SaveError::ChangedOnDisk(path.display().to_string()));
    }
    write_atomic_chunks(path, text.chunks().map(str::as_bytes))
        .map_err(|e| SaveError::Io(format!("{}: {e}", path.display())))?;
    stamp(path).ok_or_else(|| SaveError::Io(format!("{}: written but unreadable", path.display())))
}

#[cfg(test)]
mod save_tests {
    use super::*;

    #[test]
    fn a_file_changed_on_disk_is_not_clobbered_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        fs::write(&p, "v1").unwrap();
        let loaded = stamp(&p);
        let s2 = save_checked(&p, &"ours".into(), loaded, false).unwrap();
        fs::write(&p, "someone else's longer text").unwrap();
        assert_eq!(
            save_checked(&p, &"ours again".into(), Some(s2), false),
            Err(SaveError::ChangedOnDisk(p.display().to_string()))
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "someone else's longer text"
        );
        save_checked(&p, &"ours again".into(), Some(s2), true).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "ours again");
    }
}

/// Where unsaved changes to `path` are kept while the editor runs: `.NAME.pairedit-recovery`
/// beside it. A clean save or a deliberate discard removes it; a crash leaves it.
pub fn recovery_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.pairedit-recovery"))
}
