//! Files written so a crash never leaves a half-written one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ropey::Rope;

/// The directory `path` is in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename over it, fsync the
/// directory. An existing file's permissions (and owner, where allowed) are kept. A symbolic
/// link at `path` is replaced, never written through: this is for the files pairedit keeps for
/// itself (a planted link must not aim its writes elsewhere); a save of the user's file goes
/// through [`save_checked`], which writes through links.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_chunks(path, [bytes])
}

/// [`write_atomic`] for text held in pieces, such as a rope's chunks (a snapshot of a rope is
/// written without first being copied into one string).
pub fn write_atomic_chunks<'a>(
    path: &Path,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<()> {
    write_atomic_with(path, chunks, Replace::Any)
}

/// Whether an atomic write may replace a file that is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Whatever is there is replaced.
    Any,
    /// Only if nothing is there: the write fails with `AlreadyExists` if a file appeared (made
    /// by someone else) before it could land. The file is put in place by a hard link, which
    /// never replaces; where links are not supported, by a rename after a look.
    Nothing,
}

/// The file a write of `path` should replace: the one at the end of its symbolic links (an
/// editor writes through a link, as vim does, and never replaces the link with a file).
fn write_target(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    // A loop of links ends here too (the kernel gives up at 40 as well).
    for _ in 0..40 {
        match fs::read_link(&p) {
            Ok(to) if to.is_absolute() => p = to,
            Ok(to) => p = dir_of(&p).join(to),
            Err(_) => break,
        }
    }
    p
}

/// Numbers the temp files: one name per write, as two writes of one file in flight (a slow
/// disk, a recovery copy still being written when the next one starts) must not share one.
static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes the temp file a write of `path` goes through: a new name beside it, made by us (never
/// a file or a link that was there: a link planted at a guessable name would aim the write,
/// and the owner and mode set on it, at another file). Readable by us alone until it is
/// given `path`'s mode, when `path` is there; else made as any new file is (umask applies).
fn create_temp(path: &Path, existing: bool) -> std::io::Result<(fs::File, PathBuf)> {
    let dir = dir_of(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tries = 0;
    loop {
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.pairedit-{}-{n}.tmp", std::process::id()));
        let mut open = fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            open.mode(if existing { 0o600 } else { 0o666 });
        }
        match open.open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            // Something has that name (left by a crash, or put there): the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Gives `f` the owner and group of `meta` where we may (root editing someone's file), else
/// at least its group where we are in it (a shared group keeps its access), as vim does;
/// elsewhere the new file is ours, as any editor's atomic save leaves it.
#[cfg(unix)]
fn keep_owner(f: &fs::File, meta: &fs::Metadata) {
    use std::os::unix::fs::MetadataExt as _;
    if std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid())).is_err() {
        let _ = std::os::unix::fs::fchown(f, None, Some(meta.gid()));
    }
}

/// [`write_atomic_chunks`], replacing what is there only as `replace` allows.
pub fn write_atomic_with<'a>(
    path: &Path,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    replace: Replace,
) -> std::io::Result<()> {
    let dir = dir_of(path);
    // The file that is there, not what a link there points to (which is replaced).
    let meta = fs::symlink_metadata(path)
        .ok()
        .filter(fs::Metadata::is_file);
    let (f, tmp) = create_temp(path, meta.is_some())?;
    let result = (|| {
        // Whole megabytes at a time: a rope's chunks are about a kilobyte each.
        let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
        for chunk in chunks {
            f.write_all(chunk)?;
        }
        let f = f
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        if let Some(meta) = &meta {
            // Before the mode: a change of owner clears set-user-ID bits.
            #[cfg(unix)]
            keep_owner(&f, meta);
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        match replace {
            Replace::Any => fs::rename(&tmp, path),
            Replace::Nothing => put_if_absent(&tmp, path),
        }
    })();
    // After a link the temp name is left over too (the file lives on under `path`).
    if result.is_err() || replace == Replace::Nothing {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Gives the written temp file `path`'s name, unless something has that name already.
fn put_if_absent(tmp: &Path, path: &Path) -> std::io::Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        // No hard links here (some network and FAT file systems): look, then rename.
        Err(_) if fs::symlink_metadata(path).is_ok() => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file is there already",
        )),
        Err(_) => fs::rename(tmp, path),
    }
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
    #[error("{path} is not a regular file (a directory, a pipe or a device); pairedit edits files")]
    NotAFile { path: String },
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
    let (mut file, shown) = open_text(path)?;
    let mut bytes = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
    if let Err(source) = std::io::Read::read_to_end(&mut file, &mut bytes) {
        return Err(ReadFail::Io(source).at(shown));
    }
    if bytes[..bytes.len().min(BINARY_SNIFF)].contains(&0) {
        return Err(ReadFail::Binary.at(shown));
    }
    String::from_utf8(bytes).map_err(|e| ReadFail::NotUtf8(e.utf8_error().valid_up_to()).at(shown))
}

/// Where a NUL byte marks a file as binary: in its first 64 KiB (as git looks, in 8 KiB).
const BINARY_SNIFF: usize = 64 * 1024;

/// [`load_text`] straight into a rope, a piece at a time: the same checks and the same text,
/// without the file's bytes in one buffer first. For a big file that buffer is most of the
/// time to its first frame (100 MB: 0.16 s read and built from one `String`, 0.09 s this
/// way): its fresh pages are faulted in, written and read again by the rope.
pub fn load_rope(path: &Path) -> Result<Rope, LoadError> {
    let (file, shown) = open_text(path)?;
    read_rope(file, 64 * 1024).map_err(|e| e.at(shown))
}

/// Opens a file to read as text, and its name as errors show it.
fn open_text(path: &Path) -> Result<(fs::File, String), LoadError> {
    let shown = path.display().to_string();
    // A pipe would be read until its writer ends (forever, for a FIFO nobody writes).
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(LoadError::NotAFile { path: shown });
    }
    match fs::File::open(path) {
        Ok(file) => Ok((file, shown)),
        Err(source) => Err(ReadFail::Io(source).at(shown)),
    }
}

#[derive(Debug)]
enum ReadFail {
    Io(std::io::Error),
    Binary,
    /// The offset of the first byte that is not UTF-8.
    NotUtf8(usize),
}

impl ReadFail {
    /// The error for the file `path` (as shown).
    fn at(self, path: String) -> LoadError {
        match self {
            ReadFail::Io(source) => LoadError::Io { path, source },
            ReadFail::Binary => LoadError::Binary { path },
            ReadFail::NotUtf8(offset) => LoadError::NotUtf8 { path, offset },
        }
    }
}

/// Reads UTF-8 text into a rope `chunk` bytes at a time; a character cut by a read is carried
/// over to the next.
fn read_rope(mut from: impl std::io::Read, chunk: usize) -> Result<Rope, ReadFail> {
    let mut built = ropey::RopeBuilder::new();
    // A cut character is at most 3 bytes; the next read goes after it.
    let mut buf = vec![0u8; chunk + 3];
    // Bytes carried over at the start of `buf`, and bytes before them taken as text.
    let (mut carry, mut taken) = (0usize, 0usize);
    loop {
        let n = match from.read(&mut buf[carry..]) {
            Ok(0) if carry > 0 => return Err(ReadFail::NotUtf8(taken)),
            Ok(0) => return Ok(built.finish()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadFail::Io(e)),
        };
        let filled = carry + n;
        // (The bytes carried over are part of a character: none is a NUL.)
        if buf[..BINARY_SNIFF.saturating_sub(taken).min(filled)].contains(&0) {
            return Err(ReadFail::Binary);
        }
        let text = match std::str::from_utf8(&buf[..filled]) {
            Ok(text) => text,
            // Cut at the end: what is before it is text; the rest waits for the next read.
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default()
            }
            Err(e) => return Err(ReadFail::NotUtf8(taken + e.valid_up_to())),
        };
        let used = text.len();
        built.append(text);
        buf.copy_within(used..filled, 0);
        (carry, taken) = (filled - used, taken + used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rope read a piece at a time is the text read at once, whatever the pieces cut (a
    /// character, a CRLF), and fails where it does, at the same offset.
    #[test]
    fn a_rope_read_in_pieces_is_the_text_read_at_once() {
        let texts: [&[u8]; 9] = [
            b"",
            b"a\r\nb\r\n\r\n\rc\n",
            "日本語 e\u{301} 🦀\t\u{feff}x\r\n🦀🦀".as_bytes(),
            b"ok \xff\xfe",
            b"ab\xe6\x97",
            b"ab\xe6\x97x",
            b"\xf0\x9f\xa6",
            b"text\0after",
            b"\xe6\x97\xa5\xe6",
        ];
        for bytes in texts {
            for chunk in [1, 2, 3, 4, 5, 7, 64] {
                let read = read_rope(bytes, chunk);
                match (std::str::from_utf8(bytes), read) {
                    (_, Err(ReadFail::Binary)) => assert!(bytes.contains(&0)),
                    (Ok(text), Ok(rope)) => {
                        assert!(!text.contains('\0'));
                        assert_eq!(rope, text, "{chunk}-byte pieces");
                        let whole = Rope::from_str(text);
                        assert_eq!(rope.len_lines(), whole.len_lines(), "{text:?} by {chunk}");
                        for line in 0..whole.len_lines() {
                            assert_eq!(rope.line(line), whole.line(line));
                        }
                    }
                    (Err(e), Err(ReadFail::NotUtf8(at))) => {
                        assert_eq!(at, e.valid_up_to(), "{bytes:?} by {chunk}")
                    }
                    (want, got) => panic!("{bytes:?} by {chunk}: {want:?} but {got:?}"),
                }
            }
        }
        // A NUL past the first 64 KiB is text (as in `load_text`); one inside them is not.
        let mut late = vec![b'a'; BINARY_SNIFF];
        late.extend_from_slice(b"\0z");
        assert!(read_rope(&late[..], 4096).is_ok());
        late[BINARY_SNIFF - 1] = 0;
        assert!(matches!(read_rope(&late[..], 4096), Err(ReadFail::Binary)));
    }

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

    #[cfg(unix)]
    #[test]
    fn atomic_write_keeps_the_owner_where_it_may() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("theirs.txt");
        fs::write(&p, "old").unwrap();
        // Only root may give a file away (and so keep another user's ownership).
        if std::os::unix::fs::chown(&p, Some(4321), Some(4321)).is_err() {
            eprintln!("skipped: not root, a file cannot be given to another user here");
            return;
        }
        write_atomic(&p, b"new").unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4321));
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn links_planted_at_a_temp_name_or_a_kept_file_are_never_written_through() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let p = dir.path().join("f.txt");
        fs::write(&p, "old").unwrap();
        // Links at the temp names this process uses next (other tests may take some).
        let next = WRITES.load(std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        for n in next..next + 20 {
            let name = format!(".f.txt.pairedit-{pid}-{n}.tmp");
            symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A link where pairedit keeps a file of its own (a recovery copy) is replaced.
        let kept = dir.path().join(".f.txt.pairedit-recovery");
        symlink(&victim, &kept).unwrap();
        write_atomic(&kept, b"recovered").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&kept).unwrap().is_file());
        assert_eq!(fs::read(&kept).unwrap(), b"recovered");
        // And where the edit lock lives: editing goes on unguarded, the file is untouched.
        symlink(&victim, lock_path(&p)).unwrap();
        assert!(lock_for_editing(&p).unwrap().is_none());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
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
        assert!(
            load_text(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        #[cfg(unix)]
        {
            let fifo = dir.path().join("pipe");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                assert!(matches!(load_text(&fifo), Err(LoadError::NotAFile { .. })));
            }
        }
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
/// `expect` is `None` for a file that was not there: then the save fails if someone has made
/// one meanwhile (vim's E13), up to the moment it lands. Returns the new stamp.
pub fn save_checked(
    path: &Path,
    text: &ropey::Rope,
    expect: Option<Stamp>,
    force: bool,
) -> Result<Stamp, SaveError> {
    let changed = || SaveError::ChangedOnDisk(path.display().to_string());
    let replace = match expect {
        _ if force => Replace::Any,
        Some(expect) if stamp(path) != Some(expect) => return Err(changed()),
        Some(_) => Replace::Any,
        None => Replace::Nothing,
    };
    // Through symbolic links: the file a link points to is replaced, the link stays.
    let target = write_target(path);
    match write_atomic_with(&target, text.chunks().map(str::as_bytes), replace) {
        Ok(()) => {}
        Err(e) if replace == Replace::Nothing && e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(changed());
        }
        Err(e) => return Err(SaveError::Io(format!("{}: {e}", path.display()))),
    }
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

    #[test]
    fn a_new_file_is_created_only_if_nobody_made_one_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new.txt");
        let s = save_checked(&p, &"first\n".into(), None, false).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "first\n");
        assert_eq!(stamp(&p), Some(s));
        // Only the file itself is left: no temp name.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let q = dir.path().join("raced.txt");
        fs::write(&q, "theirs").unwrap();
        assert_eq!(
            save_checked(&q, &"ours".into(), None, false),
            Err(SaveError::ChangedOnDisk(q.display().to_string()))
        );
        assert_eq!(fs::read_to_string(&q).unwrap(), "theirs");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temp left");
        save_checked(&q, &"ours".into(), None, true).unwrap();
        assert_eq!(fs::read_to_string(&q).unwrap(), "ours");

        // The no-replace write itself, as the last step of a save that lost the race.
        let r = dir.path().join("r.txt");
        fs::write(&r, "theirs").unwrap();
        let e = write_atomic_with(&r, [&b"ours"[..]], Replace::Nothing).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&r).unwrap(), "theirs");
    }

    #[test]
    fn a_file_is_claimed_by_one_editor_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        let first = lock_for_editing(&p).unwrap().expect("a lock here");
        let err = lock_for_editing(&p).unwrap_err().to_string();
        assert!(
            err.contains(&format!("(process {})", std::process::id())),
            "{err}"
        );
        // Another file is free.
        assert!(
            lock_for_editing(&dir.path().join("g.txt"))
                .unwrap()
                .is_some()
        );
        drop(first);
        assert!(!lock_path(&p).exists(), "the lock file goes with the lock");
        let again = lock_for_editing(&p).unwrap();
        assert!(again.is_some(), "free again");
        // A lock file that is no longer ours (removed, and another editor's made there) is
        // left to its owner.
        fs::remove_file(lock_path(&p)).unwrap();
        let other = lock_for_editing(&p).unwrap();
        assert!(other.is_some());
        drop(again);
        assert!(lock_path(&p).exists(), "the other editor's lock file stays");
        assert!(lock_for_editing(&p).is_err(), "and still holds the file");
        drop(other);
        assert!(!lock_path(&p).exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_save_writes_through_symbolic_links_and_keeps_them() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("dotfiles");
        fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("vimrc");
        fs::write(&real, "old").unwrap();
        // A relative link, then a link to that link.
        let link = dir.path().join(".vimrc");
        symlink("dotfiles/vimrc", &link).unwrap();
        let link2 = dir.path().join("rc");
        symlink(&link, &link2).unwrap();
        let loaded = stamp(&link2);
        save_checked(&link2, &"new\r\n".into(), loaded, false).unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new\r\n");
        for l in [&link, &link2] {
            assert!(fs::symlink_metadata(l).unwrap().file_type().is_symlink());
        }
        assert_eq!(fs::read_dir(&real_dir).unwrap().count(), 1, "no temp left");
        // A link to a file not there yet: the save makes the file it names.
        let dangling = dir.path().join("later");
        symlink("dotfiles/later.txt", &dangling).unwrap();
        save_checked(&dangling, &"made".into(), None, false).unwrap();
        assert_eq!(fs::read(real_dir.join("later.txt")).unwrap(), b"made");
        assert!(
            fs::symlink_metadata(&dangling)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

/// A claim on editing one file, held while the editor runs: a second `pairedit` on the same
/// file would share its recovery copy (and offer the first one's live changes as a crashed
/// session's). An advisory lock (`flock`) on `.NAME.pairedit-lock` beside the file, which the
/// system drops when the process ends however it ends; the file itself is removed on drop.
#[derive(Debug)]
pub struct EditLock {
    file: fs::File,
    path: PathBuf,
}

/// Why a file could not be claimed for editing.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{file} is open in another pairedit{}: quit that one first, or join its room (its join codes: F2 there)",
        pid.map(|p| format!(" (process {p})")).unwrap_or_default()
    )]
    Held { file: String, pid: Option<u32> },
}

/// Where the lock for editing `path` lives.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.pairedit-lock"))
}

/// Claims `path` for editing. `Ok(None)` where no lock can be made (a directory we may not
/// write in, a file system without locks): editing goes on unguarded, as before.
pub fn lock_for_editing(path: &Path) -> Result<Option<EditLock>, LockError> {
    let lock = lock_path(&write_target(path));
    // A few times: the holder may end (and remove the file) between our open and our lock.
    for _ in 0..5 {
        let mut open = fs::OpenOptions::new();
        open.read(true).write(true).create(true).truncate(false);
        // Never through a link put there (root would write its pid into the file it names).
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            open.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        }
        let Ok(mut file) = open.open(&lock) else {
            return Ok(None);
        };
        match file.try_lock() {
            // Locked, but the file we hold was removed by the one who held it as it ended,
            // and the next editor would make and lock a new one: lock that one instead.
            Ok(()) if !is_at(&file, &lock) => continue,
            Ok(()) => {
                // Who holds it, for the message a second one gives.
                let _ = file.set_len(0);
                let _ = write!(file, "{}", std::process::id());
                return Ok(Some(EditLock { file, path: lock }));
            }
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&lock)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(LockError::Held {
                    file: path.display().to_string(),
                    pid,
                });
            }
            Err(fs::TryLockError::Error(_)) => return Ok(None),
        }
    }
    Ok(None)
}

/// Whether the open `file` is the one at `path` (not one removed from there since).
fn is_at(file: &fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        match (file.metadata(), fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl Drop for EditLock {
    fn drop(&mut self) {
        // Removed while still held, and only if it is still ours: a newcomer either finds it
        // held or makes a new one (and sees ours gone if it opened it before: see
        // `lock_for_editing`).
        if is_at(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
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
