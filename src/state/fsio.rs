//! Crash-safe file primitives: atomic replace (temp file, write, fsync, rename, fsync the
//! directory), durable append, and checksums.
//!
//! A power cut leaves either the old or the new content of a file replaced with
//! [`write_atomic`], never a torn one: the data is fsync'd before the rename makes it visible,
//! and the directory is fsync'd so the rename itself survives.

use crate::error::{EngineError, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A file-system operation of the crash-safe primitives, as recorded for the power-cut model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    /// A new, empty file.
    Create(PathBuf),
    /// The file's content replaced (not yet durable).
    Write(PathBuf, Vec<u8>),
    /// Bytes appended (not yet durable).
    Append(PathBuf, Vec<u8>),
    /// fsync of a file: its content is durable.
    Fsync(PathBuf),
    /// rename(2) (not yet durable).
    Rename(PathBuf, PathBuf),
    /// fsync of a directory: its entries are durable.
    FsyncDir(PathBuf),
}

thread_local! {
    static RECORDER: std::cell::RefCell<Option<Vec<FsOp>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns the operations the primitives of this module performed on this
/// thread meanwhile (they are performed for real too).
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<FsOp>) {
    RECORDER.with(|r| *r.borrow_mut() = Some(Vec::new()));
    let out = f();
    let ops = RECORDER.with(|r| r.borrow_mut().take()).unwrap_or_default();
    (out, ops)
}

fn note(op: impl FnOnce() -> FsOp) {
    RECORDER.with(|r| {
        if let Some(ops) = r.borrow_mut().as_mut() {
            ops.push(op());
        }
    });
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_at(path, bytes, None)
}

/// [`write_atomic`] with a chaos crash point between the durable temp write and the rename.
pub fn write_atomic_at(path: &Path, bytes: &[u8], crash_point: Option<&'static str>) -> Result<()> {
    let dir = parent(path)?;
    fs::create_dir_all(dir).map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    let tmp = temp_name(path);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        note(|| FsOp::Create(tmp.clone()));
        f.write_all(bytes)?;
        note(|| FsOp::Write(tmp.clone(), bytes.to_vec()));
        f.sync_all()?;
        note(|| FsOp::Fsync(tmp.clone()));
        Ok(())
    };
    write().map_err(|e| EngineError::io(format!("write {}", tmp.display()), e))?;
    if let Some(name) = crash_point {
        crate::crash::point(name);
    }
    rename_durable(&tmp, path)?;
    remove_stale_temps(path);
    Ok(())
}

/// Removes temp files of `path` left by writers that died between their temp write and
/// their rename (temp names carry the writer's pid, so nobody else reuses them).
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Renames `from` to `to` and fsyncs the destination directory.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        EngineError::io(format!("rename {} to {}", from.display(), to.display()), e)
    })?;
    note(|| FsOp::Rename(from.to_path_buf(), to.to_path_buf()));
    sync_dir(parent(to)?)
}

/// Fsyncs a directory, so renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EngineError::io(format!("fsync directory {}", dir.display()), e))?;
    note(|| FsOp::FsyncDir(dir.to_path_buf()));
    Ok(())
}

/// Appends one line durably (write, fsync). A torn last line is ignored by readers.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let dir = parent(path)?;
    fs::create_dir_all(dir).map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    if !existed {
        note(|| FsOp::Create(path.to_path_buf()));
    }
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let io = |e| EngineError::io(format!("append to {}", path.display()), e);
    f.write_all(buf.as_bytes()).map_err(io)?;
    note(|| FsOp::Append(path.to_path_buf(), buf.clone().into_bytes()));
    f.sync_all().map_err(io)?;
    note(|| FsOp::Fsync(path.to_path_buf()));
    if !existed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Copies `from` to `to` durably, through a temp file and a rename; returns the bytes copied.
/// `crash_point` names the chaos crash point between the temp copy and the rename.
pub fn copy_durable(from: &Path, to: &Path, crash_point: Option<&'static str>) -> Result<u64> {
    let dir = parent(to)?;
    fs::create_dir_all(dir).map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    let tmp = temp_name(to);
    let copy = || -> std::io::Result<u64> {
        let n = fs::copy(from, &tmp)?;
        File::open(&tmp)?.sync_all()?;
        Ok(n)
    };
    let n = copy()
        .map_err(|e| EngineError::io(format!("copy {} to {}", from.display(), tmp.display()), e))?;
    if let Some(name) = crash_point {
        crate::crash::point(name);
    }
    rename_durable(&tmp, to)?;
    remove_stale_temps(to);
    Ok(n)
}

/// [`copy_durable`] of an immutable file (one only ever replaced whole, by rename): a hard
/// link when both paths are on one file system (no byte copied), else a copy. Either way the
/// destination appears atomically and durably.
pub fn link_or_copy_durable(
    from: &Path,
    to: &Path,
    crash_point: Option<&'static str>,
) -> Result<u64> {
    let dir = parent(to)?;
    fs::create_dir_all(dir).map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    let tmp = temp_name(to);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(from, &tmp).is_err() {
        return copy_durable(from, to, crash_point);
    }
    let n = File::open(&tmp)
        .and_then(|f| {
            f.sync_all()?;
            Ok(f.metadata()?.len())
        })
        .map_err(|e| EngineError::io(format!("link {} to {}", from.display(), tmp.display()), e))?;
    if let Some(name) = crash_point {
        crate::crash::point(name);
    }
    rename_durable(&tmp, to)?;
    remove_stale_temps(to);
    Ok(n)
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        File::open(path).map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| EngineError::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Removes the entries of `dir` whose names sort before `current`'s name (directories named by
/// zero-padded run_seq, so name order is run order).
pub fn remove_entries_before(dir: &Path, current: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let current = current.file_name().unwrap_or_default();
    for e in entries.flatten() {
        if e.file_name().as_os_str() < current {
            remove_dir_if_exists(&e.path())?;
        }
    }
    Ok(())
}

/// Removes a directory tree if it exists.
pub fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(format!("remove {}", dir.display()), e)),
    }
}

fn parent(path: &Path) -> Result<&Path> {
    path.parent().ok_or_else(|| {
        EngineError::io(
            format!("{} has no parent directory", path.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

fn temp_name(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_replace_clears_temp_files_of_dead_writers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.json");
        fs::write(dir.path().join(".w.json.tmp-999999"), b"torn").unwrap();
        write_atomic(&p, b"new").unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("w.json")]);
    }

    #[test]
    fn append_adds_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.jsonl");
        append_line(&p, "a").unwrap();
        append_line(&p, "b").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "a\nb\n");
    }
}
