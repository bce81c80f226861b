//! The local-file state store: `state_dir/<pipeline>/` on a POSIX file system, written with
//! the crash-safe primitives of `fsio` (atomic replace through a fsync'd temp file and a
//! fsync'd rename, durable append). The power-cut model in `powercut.rs` proves each fsync.
//!
//! Layout: `watermark.json`, `ledger.jsonl`, `runs/<run_seq:08>/` (batch files and the
//! watermark document the run publishes), `dead_letter/run-<run_seq:08>.jsonl`,
//! `backfills/<first>--<last>.json`.

use super::fsio;
use super::ledger::{self, LedgerEntry};
use super::store::StateStore;
use super::watermark::{self, Advance, Watermark};
use crate::error::{EngineError, Result};
use std::path::{Path, PathBuf};

/// A pipeline's state in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// `state_dir/<pipeline>`.
    root: PathBuf,
}

impl LocalStore {
    /// The store of pipeline `name` under `state_dir`.
    pub fn at(state_dir: &str, name: &str) -> Self {
        LocalStore {
            root: PathBuf::from(state_dir).join(name),
        }
    }

    /// `state_dir/<pipeline>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The watermark document.
    pub fn watermark_path(&self) -> PathBuf {
        self.root.join("watermark.json")
    }

    /// The append-only run ledger.
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.jsonl")
    }

    /// The directory of run `run_seq`'s files.
    pub fn run_dir(&self, run_seq: u64) -> PathBuf {
        self.runs_dir().join(format!("{run_seq:08}"))
    }

    fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    fn backfills_dir(&self) -> PathBuf {
        self.root.join("backfills")
    }
}

impl StateStore for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn exists(&self) -> bool {
        self.root.exists()
    }

    fn read_watermark(&self) -> Result<Option<Watermark>> {
        watermark::read(&self.watermark_path())
    }

    fn advance_watermark(&self, next: &Watermark) -> Result<Advance> {
        watermark::advance(&self.watermark_path(), next)
    }

    fn reset_watermark(&self, wm: &Watermark) -> Result<()> {
        fsio::write_atomic(&self.watermark_path(), wm.to_json().as_bytes())
    }

    fn append_ledger(&self, entry: &LedgerEntry) -> Result<()> {
        ledger::append(&self.ledger_path(), entry)
    }

    fn read_ledger(&self) -> Result<Vec<LedgerEntry>> {
        ledger::read_all(&self.ledger_path())
    }

    fn scratch_path(&self, run_seq: u64, name: &str) -> Result<PathBuf> {
        // Written in place: the batch writer replaces the file atomically and durably.
        Ok(self.run_dir(run_seq).join(name))
    }

    fn adopt_run_file(&self, _run_seq: u64, _name: &str, local: &Path) -> Result<String> {
        Ok(local.to_string_lossy().into_owned())
    }

    fn write_run_file(&self, run_seq: u64, name: &str, bytes: &[u8]) -> Result<String> {
        let path = self.run_dir(run_seq).join(name);
        fsio::write_atomic(&path, bytes)?;
        Ok(path.to_string_lossy().into_owned())
    }

    fn run_file_location(&self, run_seq: u64, name: &str) -> String {
        self.run_dir(run_seq)
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    fn read_run_file(&self, location: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(location) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EngineError::io(format!("read {location}"), e)),
        }
    }

    fn remove_run(&self, run_seq: u64) -> Result<()> {
        fsio::remove_dir_if_exists(&self.run_dir(run_seq))
    }

    fn clear_runs_before(&self, run_seq: u64) -> Result<()> {
        fsio::remove_entries_before(&self.runs_dir(), &self.run_dir(run_seq))
    }

    fn write_dead_letter(&self, run_seq: u64, bytes: &[u8]) -> Result<String> {
        let path = self
            .root
            .join("dead_letter")
            .join(format!("run-{run_seq:08}.jsonl"));
        fsio::write_atomic(&path, bytes)?;
        Ok(path.to_string_lossy().into_owned())
    }

    fn write_backfill_manifest(&self, name: &str, bytes: &[u8]) -> Result<()> {
        fsio::write_atomic(&self.backfills_dir().join(format!("{name}.json")), bytes)
    }

    fn read_backfill_manifests(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let Ok(rd) = std::fs::read_dir(self.backfills_dir()) else {
            return Ok(Vec::new());
        };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            let bytes = std::fs::read(&p)
                .map_err(|e| EngineError::io(format!("read {}", p.display()), e))?;
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            out.push((stem.into_owned(), bytes));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_workflows::cursor::CursorType;

    #[test]
    fn run_files_are_cleared_for_older_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::at(&dir.path().to_string_lossy(), "p");
        for seq in [1, 2, 3] {
            s.write_run_file(seq, "f", b"x").unwrap();
        }
        s.clear_runs_before(3).unwrap();
        assert!(!s.run_dir(1).exists() && !s.run_dir(2).exists());
        let loc = s.write_run_file(3, "g", b"y").unwrap();
        assert_eq!(s.read_run_file(&loc).unwrap().as_deref(), Some(&b"y"[..]));
        s.remove_run(3).unwrap();
        assert_eq!(s.read_run_file(&loc).unwrap(), None);
    }

    #[test]
    fn the_watermark_goes_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::at(&dir.path().to_string_lossy(), "p");
        assert!(!s.exists());
        let w = Watermark::sample(1, 10, CursorType::Integer);
        assert_eq!(s.advance_watermark(&w).unwrap(), Advance::Written);
        assert_eq!(s.advance_watermark(&w).unwrap(), Advance::AlreadyCurrent);
        s.reset_watermark(&Watermark::sample(1, 5, CursorType::Integer))
            .unwrap();
        assert_eq!(s.read_watermark().unwrap().unwrap().value, Some(5));
        s.write_backfill_manifest("a--b", b"{}").unwrap();
        assert_eq!(
            s.read_backfill_manifests().unwrap(),
            vec![("a--b".to_string(), b"{}".to_vec())]
        );
    }
}
