//! The object-store state store: `state_dir/<pipeline>/` under an `s3://`, `gs://` or `az://`
//! URL, laid out so that no operation appends, renames or lists a growing prefix:
//!
//! * `watermark.json` — replaced by one PUT, conditional on the ETag it was read with
//!   (create-only for the first), so a zombie attempt whose read is stale is refused and
//!   re-checks against what won; the rule itself is the local store's
//!   ([`watermark::check_advance`]).
//! * `ledger/<run_seq:012>.json` — the entry that records run `run_seq` as committed, written
//!   create-only: two attempts of one run record it once, and finding it is one GET.
//!   Every other entry (failed, reset, backfill) gets a key of its own,
//!   `ledger/<run_seq|none>-<status>-<ms>-<nonce>.json`; only `history`, `status` and the
//!   backfill report list the prefix.
//! * `runs/<run_seq:08>/<name>` — the batch files and the watermark document a run publishes
//!   (process writes them in a private scratch directory, then uploads each whole).
//! * `dead_letter/run-<run_seq:08>.jsonl`, `backfills/<name>.json`.

use super::ledger::LedgerEntry;
use super::store::StateStore;
use super::watermark::{self, Advance, Watermark};
use crate::error::{EngineError, Result};
use crate::storage::{PutOutcome, Remote};
use object_store::PutMode;
use std::path::{Path, PathBuf};

/// Conditional watermark writes re-read and retry this often before giving up (each refusal
/// means another writer changed the document in between; runs of one pipeline never overlap,
/// so more than one or two is a sign of something else writing there).
const WATERMARK_RACES: usize = 8;

/// A pipeline's state under an object-store prefix.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    /// `state_dir/<pipeline>`.
    root: Remote,
}

/// Whether a ledger status records a run as committed (the entry kept at the run's own key).
fn records_commit(status: &str) -> bool {
    matches!(status, "succeeded" | "empty" | "reconciled")
}

/// A value that tells apart two entries written in the same millisecond (by two attempts).
fn nonce() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

impl RemoteStore {
    /// The store of pipeline `name` under the state prefix `base`.
    pub fn at(base: &Remote, name: &str) -> Self {
        RemoteStore {
            root: base.child(name),
        }
    }

    fn run_key(run_seq: u64, name: &str) -> String {
        format!("runs/{run_seq:08}/{name}")
    }

    fn committed_key(run_seq: u64) -> String {
        format!("ledger/{run_seq:012}.json")
    }

    /// The key of a run file named by its URL, if it is under this store.
    fn key_of(&self, location: &str) -> Option<String> {
        let base = self.root.url_of("");
        location
            .strip_prefix(&base)
            .map(|k| k.trim_start_matches('/').to_string())
    }

    fn parse_watermark(&self, bytes: &[u8]) -> Result<Watermark> {
        Watermark::from_json(&String::from_utf8_lossy(bytes)).map_err(|e| {
            EngineError::Watermark(format!(
                "{} is unreadable: {e}",
                self.root.url_of("watermark.json")
            ))
        })
    }
}

impl StateStore for RemoteStore {
    fn location(&self) -> String {
        self.root.url_of("")
    }

    fn exists(&self) -> bool {
        // Every run, reset or backfill leaves a ledger entry or a watermark.
        self.root.exists("watermark.json").unwrap_or(false)
            || self.root.list("ledger").is_ok_and(|l| !l.is_empty())
    }

    fn read_watermark(&self) -> Result<Option<Watermark>> {
        match self.root.get("watermark.json")? {
            Some((bytes, _)) => self.parse_watermark(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn advance_watermark(&self, next: &Watermark) -> Result<Advance> {
        let body = next.to_json();
        for _ in 0..WATERMARK_RACES {
            let (current, mode) = match self.root.get("watermark.json")? {
                Some((bytes, etag)) => (Some(self.parse_watermark(&bytes)?), Remote::if_etag(etag)),
                None => (None, PutMode::Create),
            };
            if watermark::check_advance(current.as_ref(), next)? == Advance::AlreadyCurrent {
                return Ok(Advance::AlreadyCurrent);
            }
            crate::crash::point("watermark_temp_written");
            match self.root.put("watermark.json", body.as_bytes(), mode)? {
                PutOutcome::Written(_) => return Ok(Advance::Written),
                PutOutcome::Refused => {
                    tracing::warn!(
                        pipeline = %next.pipeline,
                        run_seq = next.run_seq,
                        "watermark changed while it was being advanced; checking again"
                    );
                }
            }
        }
        Err(EngineError::Watermark(format!(
            "{} kept changing while run {} advanced it: is another writer using this state_dir?",
            self.root.url_of("watermark.json"),
            next.run_seq
        )))
    }

    fn reset_watermark(&self, wm: &Watermark) -> Result<()> {
        self.root
            .put_overwrite("watermark.json", wm.to_json().as_bytes())
    }

    fn append_ledger(&self, entry: &LedgerEntry) -> Result<()> {
        let body = serde_json::to_vec(entry).expect("ledger entry serialises");
        match entry.run_seq {
            Some(seq) if records_commit(&entry.status) => {
                // Create-only: a second attempt of the same run finds the first one's entry.
                self.root
                    .put(&Self::committed_key(seq), &body, PutMode::Create)?;
            }
            seq => {
                let seq = seq.map_or("none".to_string(), |s| format!("{s:012}"));
                let key = format!(
                    "ledger/{seq}-{}-{}-{:08x}.json",
                    entry.status,
                    chrono::Utc::now().timestamp_millis(),
                    nonce()
                );
                self.root.put(&key, &body, PutMode::Create)?;
            }
        }
        Ok(())
    }

    fn read_ledger(&self) -> Result<Vec<LedgerEntry>> {
        let mut entries = Vec::new();
        for key in self.root.list("ledger")? {
            if let Some((bytes, _)) = self.root.get(&key)?
                && let Ok(e) = serde_json::from_slice::<LedgerEntry>(&bytes)
            {
                entries.push(e);
            }
        }
        // Keys are per run, not per moment: order by when each run finished.
        entries.sort_by(|a, b| a.finished_at.cmp(&b.finished_at));
        Ok(entries)
    }

    fn committed_entry(&self, run_seq: u64) -> Result<Option<LedgerEntry>> {
        Ok(self
            .root
            .get(&Self::committed_key(run_seq))?
            .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok()))
    }

    fn recent_committed(&self, before: u64, limit: usize) -> Result<Vec<LedgerEntry>> {
        // One GET per earlier run, newest first, no listing.
        let mut out = Vec::new();
        for seq in (1..before).rev().take(limit) {
            if let Some(e) = self.committed_entry(seq)? {
                out.push(e);
            }
        }
        out.reverse();
        Ok(out)
    }

    fn scratch_path(&self, _run_seq: u64, name: &str) -> Result<PathBuf> {
        let dir = crate::storage::scratch_dir()?;
        // Kept until `adopt_run_file` uploads the file and removes it.
        Ok(dir.keep().join(name))
    }

    fn adopt_run_file(&self, run_seq: u64, name: &str, local: &Path) -> Result<String> {
        let key = Self::run_key(run_seq, name);
        self.root.upload(&key, local, None)?;
        if let Some(dir) = local.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(self.root.url_of(&key))
    }

    fn write_run_file(&self, run_seq: u64, name: &str, bytes: &[u8]) -> Result<String> {
        let key = Self::run_key(run_seq, name);
        self.root.put_overwrite(&key, bytes)?;
        Ok(self.root.url_of(&key))
    }

    fn run_file_location(&self, run_seq: u64, name: &str) -> String {
        self.root.url_of(&Self::run_key(run_seq, name))
    }

    fn read_run_file(&self, location: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key_of(location).ok_or_else(|| {
            EngineError::Integrity(format!(
                "{location} is not under this pipeline's state ({})",
                self.location()
            ))
        })?;
        Ok(self.root.get(&key)?.map(|(b, _)| b))
    }

    fn remove_run(&self, run_seq: u64) -> Result<()> {
        self.root.delete_prefix(&format!("runs/{run_seq:08}"))
    }

    fn clear_runs_before(&self, run_seq: u64) -> Result<()> {
        // `runs/` holds only the directories of runs that have not been cleaned up: the current
        // one and the debris of runs that died, so this listing stays small.
        let current = format!("{run_seq:08}");
        for dir in self.root.list_dirs("runs")? {
            if dir < current {
                self.root.delete_prefix(&format!("runs/{dir}"))?;
            }
        }
        Ok(())
    }

    fn write_dead_letter(&self, run_seq: u64, bytes: &[u8]) -> Result<String> {
        let key = format!("dead_letter/run-{run_seq:08}.jsonl");
        self.root.put_overwrite(&key, bytes)?;
        Ok(self.root.url_of(&key))
    }

    fn write_backfill_manifest(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.root
            .put_overwrite(&format!("backfills/{name}.json"), bytes)
    }

    fn read_backfill_manifests(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for key in self.root.list("backfills")? {
            let Some(stem) = key
                .strip_prefix("backfills/")
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            if let Some((bytes, _)) = self.root.get(&key)? {
                out.push((stem.to_string(), bytes));
            }
        }
        Ok(out)
    }
}
