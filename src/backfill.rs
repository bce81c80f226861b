//! Backfills: the windows of a range, the `backfill_plan` and `record_backfill` activities,
//! and the coverage report `status` prints.
//!
//! A backfill window `[low, high)` is loaded by an ordinary run of the pseudo-pipeline
//! `<pipeline>@bf-<label>` (see `tidemark_workflows::backfill`): its state lives in
//! `state_dir/<pipeline>@bf-<label>/`, its commit carries its own token, so the window is
//! published once and the live watermark is never touched. The plan writes the requested
//! windows to `state_dir/<pipeline>/backfills/<first>--<last>.json`; each loaded window adds a
//! `backfill` line to the pipeline's ledger. `status` compares the two and reports gaps.

use crate::cursor::{format_cursor, parse_cursor, parse_duration_micros};
use crate::error::{EngineError, Result};
use crate::run_steps::reconcile;
use crate::state::ledger::LedgerEntry;
use crate::state::{self, StateStore};
use serde::{Deserialize, Serialize};
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::{BackfillWindow, RunSummary};
use tidemark_workflows::spec::PipelineSpec;

/// Most windows one backfill may have.
pub const MAX_WINDOWS: usize = 10_000;

fn label_part(v: i64, t: CursorType) -> String {
    match t {
        CursorType::Integer => v.to_string(),
        CursorType::Timestamp => chrono::DateTime::<chrono::Utc>::from_timestamp_micros(v)
            .map(|d| d.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|| v.to_string()),
    }
}

/// Cuts `[from, to)` into windows of `step` (a duration for timestamp cursors, an integer for
/// integer cursors); the last window ends at `to`.
pub fn windows(
    cursor_type: CursorType,
    from: &str,
    to: &str,
    step: &str,
) -> Result<Vec<BackfillWindow>> {
    let parse = |what: &str, text: &str| {
        parse_cursor(text, cursor_type).ok_or_else(|| {
            EngineError::Spec(format!(
                "--{what} {text:?} is not a {} cursor value",
                cursor_type.as_str()
            ))
        })
    };
    let (low, high) = (parse("from", from)?, parse("to", to)?);
    if low >= high {
        return Err(EngineError::Spec(format!(
            "--from {from} is not before --to {to}"
        )));
    }
    let step_units = match cursor_type {
        CursorType::Timestamp => parse_duration_micros(step),
        CursorType::Integer => step.trim().parse::<i64>().ok(),
    }
    .filter(|s| *s > 0)
    .ok_or_else(|| {
        EngineError::Spec(format!(
            "--step {step:?} is not a positive {} (e.g. {})",
            match cursor_type {
                CursorType::Timestamp => "duration",
                CursorType::Integer => "integer",
            },
            match cursor_type {
                CursorType::Timestamp => "1d, 6h",
                CursorType::Integer => "100000",
            }
        ))
    })?;
    let count = (high - low - 1) / step_units + 1;
    if count as usize > MAX_WINDOWS {
        return Err(EngineError::Spec(format!(
            "{count} windows: more than {MAX_WINDOWS}; use a larger --step"
        )));
    }
    let mut out = Vec::new();
    let mut a = low;
    while a < high {
        let b = a.saturating_add(step_units).min(high);
        out.push(BackfillWindow {
            low: a,
            high: b,
            low_text: format_cursor(a, cursor_type),
            high_text: format_cursor(b, cursor_type),
            label: format!(
                "{}-{}",
                label_part(a, cursor_type),
                label_part(b, cursor_type)
            ),
        });
        a = b;
    }
    Ok(out)
}

/// The requested windows of one backfill, as `status` reads them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Windows requested.
    pub windows: Vec<BackfillWindow>,
}

fn window_spec(spec: &PipelineSpec, w: &BackfillWindow) -> PipelineSpec {
    let mut s = spec.clone();
    s.name = w.pipeline_name(&spec.name);
    s.source.initial = Some(w.low_text.clone());
    s
}

/// `backfill_plan`: writes the manifest and says, per window, whether it is already loaded
/// (its pseudo-pipeline's store, reconciled with the target, holds a run).
pub async fn plan(spec: PipelineSpec, windows: Vec<BackfillWindow>) -> Result<Vec<bool>> {
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        let name = format!(
            "{}--{}",
            first.label.split('-').next().unwrap_or(""),
            last.label.rsplit('-').next().unwrap_or("")
        );
        let manifest = Manifest {
            windows: windows.clone(),
        };
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        state::open(&spec)?.write_backfill_manifest(&name, text.as_bytes())?;
    }
    let mut covered = Vec::with_capacity(windows.len());
    for w in &windows {
        let store = reconcile(&window_spec(&spec, w)).await?;
        covered.push(store.is_some_and(|s| s.run_seq >= 1));
    }
    Ok(covered)
}

fn note_of(w: &BackfillWindow) -> String {
    format!("backfill window {}", w.label)
}

/// `record_backfill`: one `backfill` ledger line per loaded window (a retry adds none).
pub async fn record(
    spec: PipelineSpec,
    windows: Vec<BackfillWindow>,
    summary: Option<RunSummary>,
) -> Result<()> {
    let state = state::open(&spec)?;
    let existing = state.read_ledger()?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for w in &windows {
        let note = note_of(w);
        if existing
            .iter()
            .any(|e| e.status == "backfill" && e.note.as_deref() == Some(note.as_str()))
        {
            continue;
        }
        let p = summary.as_ref().map(|s| &s.progress);
        state.append_ledger(&LedgerEntry {
            run_seq: None,
            status: "backfill".into(),
            workflow_id: tidemark_workflows::run_workflow_id(&w.pipeline_name(&spec.name)),
            started_at: now.clone(),
            finished_at: now.clone(),
            window_low: Some(w.low_text.clone()),
            window_high: Some(w.high_text.clone()),
            rows_extracted: p.map_or(0, |p| p.rows_extracted),
            rows_deduplicated: p.map_or(0, |p| p.rows_deduplicated),
            rows_late: p.map_or(0, |p| p.rows_late),
            rows_batch: p.map_or(0, |p| p.rows_batch),
            rows_inserted: p.map_or(0, |p| p.rows_promoted),
            target_version: p.and_then(|p| p.target_version),
            run_ms: summary.as_ref().map(|s| s.duration_ms),
            note: Some(note),
            ..Default::default()
        })?;
    }
    Ok(())
}

/// Coverage of one backfill, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// `<first>--<last>`.
    pub backfill: String,
    /// Windows requested.
    pub windows: usize,
    /// Windows loaded.
    pub covered: usize,
    /// Windows not loaded (`[low, high)`).
    pub gaps: Vec<String>,
}

/// Every backfill of the pipeline whose state is `state`, with its gaps (unreadable
/// manifests are skipped).
pub fn coverage(state: &dyn StateStore, entries: &[LedgerEntry]) -> Vec<Coverage> {
    let manifests = state.read_backfill_manifests().unwrap_or_default();
    let loaded: std::collections::HashSet<&str> = entries
        .iter()
        .filter(|e| e.status == "backfill")
        .filter_map(|e| e.note.as_deref())
        .collect();
    manifests
        .iter()
        .filter_map(|(name, bytes)| {
            let m: Manifest = serde_json::from_slice(bytes).ok()?;
            let gaps: Vec<String> = m
                .windows
                .iter()
                .filter(|w| !loaded.contains(note_of(w).as_str()))
                .map(|w| format!("[{}, {})", w.low_text, w.high_text))
                .collect();
            Some(Coverage {
                backfill: name.clone(),
                windows: m.windows.len(),
                covered: m.windows.len() - gaps.len(),
                gaps,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_cut_into_windows_and_the_last_ends_at_to() {
        let w = windows(
            CursorType::Timestamp,
            "2026-01-01",
            "2026-01-03T12:00:00Z",
            "1d",
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].label, "20260101T000000Z-20260102T000000Z");
        assert_eq!(w[2].high_text, "2026-01-03T12:00:00Z");
        assert_eq!(
            w[1].pipeline_name("orders"),
            "orders@bf-20260102T000000Z-20260103T000000Z"
        );
        let ints = windows(CursorType::Integer, "0", "25", "10").unwrap();
        let bounds: Vec<(i64, i64)> = ints.iter().map(|w| (w.low, w.high)).collect();
        assert_eq!(bounds, [(0, 10), (10, 20), (20, 25)]);
        assert!(windows(CursorType::Integer, "5", "5", "1").is_err());
        assert!(windows(CursorType::Timestamp, "2026-01-01", "2026-01-02", "soon").is_err());
    }
}
