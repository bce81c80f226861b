//! The run ledger: one JSON line per finished run (succeeded, empty, failed or reconciled),
//! appended durably. Readers skip a torn last line. `status` and `history` read it.

use super::fsio::append_line;
use crate::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One ledger line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Run sequence number (None when the run failed before `process` assigned one).
    pub run_seq: Option<u64>,
    /// `succeeded`, `empty`, `failed`, `reconciled`, `reset` or `backfill` (one loaded window).
    pub status: String,
    /// Temporal workflow id.
    pub workflow_id: String,
    /// Temporal run id.
    pub run_id: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Inclusive window lower bound, displayed.
    pub window_low: Option<String>,
    /// Window upper bound, displayed.
    pub window_high: Option<String>,
    /// Rows read.
    pub rows_extracted: u64,
    /// Rows removed by dedup.
    pub rows_deduplicated: u64,
    /// Late rows.
    pub rows_late: u64,
    /// Rows sent to quarantine.
    pub rows_quarantined: u64,
    /// Rows inserted into the target.
    pub rows_inserted: u64,
    /// Rows updated in the target.
    pub rows_updated: u64,
    /// Watermark before.
    pub watermark_before: Option<String>,
    /// Watermark after.
    pub watermark_after: Option<String>,
    /// Target version of the commit.
    pub target_version: Option<i64>,
    /// Per-activity milliseconds (process, stage, promote, update_watermark).
    pub durations_ms: std::collections::BTreeMap<String, u64>,
    /// Failing phase and message (for a reset: what the operator asked for).
    pub error: Option<String>,
    /// Rows in the batch bound for the target (after dedup and transform).
    #[serde(default)]
    pub rows_batch: u64,
    /// Watermark lag behind the clock when the run finished (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// Whole run, workflow start to ledger line (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<u64>,
    /// What an operator did (a reset's target and options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Rows deleted from the target (change events).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_deleted: u64,
    /// Change-event runs: what the run read (events, tombstones, bad events, dead-letter file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<tidemark_workflows::payloads::CdcStats>,
    /// Alerts that fired when the run finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    /// What the schema contract did: columns added or widened in the table, columns written
    /// as null, columns ignored (with counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<tidemark_workflows::payloads::SchemaChange>,
    /// The audit checks' results (`[[checks]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<tidemark_workflows::payloads::CheckResult>,
}

/// One firing alert, as a ledger line records it (the rules that raise them are in
/// `crate::monitor`, which reads the ledger; the record lives here so the ledger never
/// imports its reader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `lag`, `empty_runs`, `spike`, `sla`, `schema_change` or `check`.
    pub rule: String,
    /// What tripped it, with the numbers.
    pub message: String,
}

impl Alert {
    /// An alert of `rule`.
    pub fn fired(rule: &str, message: String) -> Self {
        Alert {
            rule: rule.to_string(),
            message,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Appends an entry.
pub fn append(path: &Path, entry: &LedgerEntry) -> Result<()> {
    let line = serde_json::to_string(entry).expect("ledger entry serialises");
    append_line(path, &line)
}

/// Reads every readable entry, oldest first.
pub fn read_all(path: &Path) -> Result<Vec<LedgerEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(format!("read {}", path.display()), e)),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The entry of run `run_seq` that committed it, if any.
pub fn committed_entry(path: &Path, run_seq: u64) -> Result<Option<LedgerEntry>> {
    Ok(read_all(path)?
        .into_iter()
        .find(|e| e.run_seq == Some(run_seq) && e.status != "failed" && e.status != "reset"))
}

/// Whether the ledger already records run `run_seq` as committed (succeeded/empty/reconciled).
pub fn has_committed(path: &Path, run_seq: u64) -> Result<bool> {
    Ok(read_all(path)?
        .iter()
        .any(|e| e.run_seq == Some(run_seq) && e.status != "failed" && e.status != "reset"))
}
