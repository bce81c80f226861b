//! The state store: the one interface through which the run steps, reset, backfill and the CLI
//! reach a pipeline's own durable state — the watermark document, the run ledger, the per-run
//! files `process` hands to `stage`/`promote`, dead-letter files and backfill manifests.
//!
//! Nothing outside `state/` names a state path or calls `fsio` for state: the object-store
//! backend (`remote.rs`) is a second implementation of [`StateStore`], not a rewrite of the
//! steps.
//! Staging stays with the target (it belongs to the table's location); this store does not own
//! it.
//!
//! The contract every implementation keeps:
//! * `advance_watermark` replaces the document only with a later run's, never moves the value
//!   backwards, and a reader sees the old or the new document, never a torn one;
//! * `append_ledger` is durable when it returns, and a torn last entry is invisible to readers;
//! * `write_run_file` is atomic: a reader of the run file sees a whole file or none;
//! * nothing in a run's files is removed before the run ends (`remove_run`), except by a later
//!   run's `clear_runs_before` (runs of one pipeline never overlap).

use super::ledger::LedgerEntry;
use super::watermark::{Advance, Watermark};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// A pipeline's durable state.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Where the state lives, for messages (`state_dir/<pipeline>`).
    fn location(&self) -> String;

    /// Whether the pipeline has any state yet (a run, a reset or a backfill happened).
    fn exists(&self) -> bool;

    /// The stored watermark, `None` if the pipeline never committed.
    fn read_watermark(&self) -> Result<Option<Watermark>>;

    /// Installs `next` if it belongs to a later run than the stored document; refuses a value
    /// below the stored one (only [`StateStore::reset_watermark`] moves it backwards).
    fn advance_watermark(&self, next: &Watermark) -> Result<Advance>;

    /// Replaces the watermark document unconditionally: the reset path, which the CLI runs
    /// only while no run is active.
    fn reset_watermark(&self, wm: &Watermark) -> Result<()>;

    /// Appends one entry to the run ledger, durably.
    fn append_ledger(&self, entry: &LedgerEntry) -> Result<()>;

    /// Every readable ledger entry, oldest first.
    fn read_ledger(&self) -> Result<Vec<LedgerEntry>>;

    /// The ledger entry that records run `run_seq` as committed (succeeded, empty or
    /// reconciled), if any.
    fn committed_entry(&self, run_seq: u64) -> Result<Option<LedgerEntry>> {
        Ok(self
            .read_ledger()?
            .into_iter()
            .find(|e| e.run_seq == Some(run_seq) && e.status != "failed" && e.status != "reset"))
    }

    /// The ledger's committed entries of the (up to `limit`) runs before `before`, oldest
    /// first: what the alert rules look back on. An object store answers it without listing.
    fn recent_committed(&self, before: u64, limit: usize) -> Result<Vec<LedgerEntry>> {
        let all: Vec<LedgerEntry> = self
            .read_ledger()?
            .into_iter()
            .filter(|e| {
                e.run_seq.is_some_and(|s| s < before)
                    && matches!(e.status.as_str(), "succeeded" | "empty" | "reconciled")
            })
            .collect();
        let skip = all.len().saturating_sub(limit);
        Ok(all.into_iter().skip(skip).collect())
    }

    /// A local path where `process` writes run `run_seq`'s batch file `name` (Polars writes
    /// it there durably), before [`StateStore::adopt_run_file`] makes it the run's.
    fn scratch_path(&self, run_seq: u64, name: &str) -> Result<PathBuf>;

    /// Makes the file written at `local` (from [`StateStore::scratch_path`]) run `run_seq`'s
    /// file `name`, whole or not at all; returns its location for the manifest.
    fn adopt_run_file(&self, run_seq: u64, name: &str, local: &Path) -> Result<String>;

    /// Writes one of run `run_seq`'s small files atomically; returns where it went.
    fn write_run_file(&self, run_seq: u64, name: &str, bytes: &[u8]) -> Result<String>;

    /// Reads a run file written by [`StateStore::write_run_file`], `None` when it is gone
    /// (the run ended and was cleaned up).
    fn read_run_file(&self, location: &str) -> Result<Option<Vec<u8>>>;

    /// Where run `run_seq`'s file `name` is (what [`StateStore::write_run_file`] returns),
    /// whether or not it exists.
    fn run_file_location(&self, run_seq: u64, name: &str) -> String;

    /// Removes run `run_seq`'s files (the run ended).
    fn remove_run(&self, run_seq: u64) -> Result<()>;

    /// Removes the files of runs before `run_seq`: debris of runs that died, or of zombie
    /// attempts that woke after their run ended. The current run's files are left alone.
    fn clear_runs_before(&self, run_seq: u64) -> Result<()>;

    /// Writes run `run_seq`'s dead-letter file (malformed change events); returns where it went.
    fn write_dead_letter(&self, run_seq: u64, bytes: &[u8]) -> Result<String>;

    /// Writes (replaces) a backfill manifest named `name`.
    fn write_backfill_manifest(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Every backfill manifest, as (name without extension, bytes), sorted by name.
    fn read_backfill_manifests(&self) -> Result<Vec<(String, Vec<u8>)>>;
}
