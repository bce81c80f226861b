//! `tidemark reset`: the full-reprocessing path, and the only way a watermark moves backwards.
//!
//! A reset (1) reconciles the store with the target, so the plan starts from what is
//! committed, (2) optionally empties the target, (3) replaces the watermark document with one
//! at the requested value (or none: `--epoch`), keeping the run number, so run numbering and
//! the target's idempotency tokens go on, and clearing the event-time mark and append mode's
//! boundary set, and (4) records a `reset` line in the ledger. The next run reads from the new
//! watermark (minus the lookback) and, in merge mode, rewrites what it reads once.
//!
//! The caller (the CLI) checks that no run is active before applying: runs of one pipeline
//! never overlap, and a reset is not a run.

use crate::cursor::{format_cursor, format_opt, parse_cursor};
use crate::error::{EngineError, Result};
use crate::run_steps::reconcile;
use crate::state;
use crate::state::ledger::LedgerEntry;
use crate::state::watermark::Watermark;
use crate::target;
use serde::Serialize;
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::spec::{PipelineSpec, WriteMode};

/// Where the watermark goes.
#[derive(Debug, Clone)]
pub enum ResetTo {
    /// A cursor value (`2026-01-01T00:00:00Z`, `2026-01-01`, or an integer).
    Value(String),
    /// No watermark: the next run reads from `initial` (or the beginning).
    Epoch,
}

/// What a reset will do (printed before it does it).
#[derive(Debug, Clone, Serialize)]
pub struct ResetPlan {
    /// Pipeline.
    pub pipeline: String,
    /// Watermark now.
    pub watermark_before: Option<String>,
    /// Watermark after the reset (None: from the start).
    pub watermark_after: Option<String>,
    /// Where the next run starts reading (after the lookback).
    pub next_run_reads_from: String,
    /// The run number the store keeps (the next run is this + 1).
    pub run_seq: u64,
    /// Whether the target is emptied first.
    pub truncate_target: bool,
    /// The target, displayed.
    pub target: String,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    #[serde(skip)]
    new_value: Option<i64>,
    #[serde(skip)]
    value_type: CursorType,
    #[serde(skip)]
    events_seen: u64,
    #[serde(skip)]
    cdc_order: Option<String>,
}

/// Reconciles, then works out the plan. Refuses a plan that would duplicate rows (append
/// mode without `--truncate-target`) or move the watermark forwards.
pub async fn plan(spec: &PipelineSpec, to: &ResetTo, truncate_target: bool) -> Result<ResetPlan> {
    let current = reconcile(spec).await?;
    let target_name = target::open(spec)?.describe();
    let value_type = current
        .as_ref()
        .map(|w| w.value_type)
        .or(spec.source.cursor_type)
        .unwrap_or(CursorType::Timestamp);
    let new_value = match to {
        ResetTo::Epoch => None,
        ResetTo::Value(text) => Some(parse_cursor(text, value_type).ok_or_else(|| {
            EngineError::Spec(format!(
                "--to {text:?} is not a {} cursor value (e.g. {})",
                match value_type {
                    CursorType::Timestamp => "timestamp",
                    CursorType::Integer => "integer",
                },
                match value_type {
                    CursorType::Timestamp => "2026-01-01T00:00:00Z or 2026-01-01",
                    CursorType::Integer => "1000",
                }
            ))
        })?),
    };
    if spec.source.kind.is_cdc() && new_value.is_some() {
        return Err(EngineError::Spec(format!(
            "{} applies change events by position: it resets to the start of its stream only (--epoch); events replay idempotently",
            spec.name
        )));
    }
    let old_value = current.as_ref().and_then(|w| w.value);
    if let (Some(new), Some(old)) = (new_value, old_value)
        && new > old
    {
        return Err(EngineError::Spec(format!(
            "--to {} is ahead of the watermark {}: a reset only moves it backwards (skipping data forwards would lose rows)",
            format_cursor(new, value_type),
            format_cursor(old, value_type)
        )));
    }
    if spec.target.mode == WriteMode::Append && !truncate_target {
        return Err(EngineError::Spec(format!(
            "{} is loaded in append mode: re-reading the window would append its rows a second time; pass --truncate-target to reload everything from {}",
            spec.name,
            new_value.map_or("the start".into(), |v| format_cursor(v, value_type))
        )));
    }
    let mut warnings = Vec::new();
    if truncate_target {
        warnings.push(format!(
            "{target_name} will be emptied; readers see an empty target until the next run commits"
        ));
        if new_value.is_some() {
            warnings.push(
                "with --to and --truncate-target, rows below the new watermark (minus lookback) are not reloaded"
                    .into(),
            );
        }
    }
    if spec.late.quarantine_path.is_some() {
        warnings.push("the quarantine table is left as it is".into());
    }
    let reads_from = match (new_value, spec.source.lookback.in_units_of(value_type)) {
        _ if spec.source.kind.is_cdc() => "the first event of the stream".into(),
        (Some(v), Some(lb)) => format_cursor(v.saturating_sub(lb), value_type),
        (Some(v), None) => format_cursor(v, value_type),
        (None, _) => spec
            .source
            .initial
            .clone()
            .unwrap_or_else(|| "the first row of the source".into()),
    };
    Ok(ResetPlan {
        pipeline: spec.name.clone(),
        watermark_before: old_value.map(|v| format_cursor(v, value_type)),
        watermark_after: new_value.map(|v| format_cursor(v, value_type)),
        next_run_reads_from: reads_from,
        run_seq: current.as_ref().map_or(0, |w| w.run_seq),
        truncate_target,
        target: target_name,
        warnings,
        new_value,
        value_type,
        events_seen: current.as_ref().map_or(0, |w| w.events_seen),
        cdc_order: current.as_ref().and_then(|w| w.cdc_order.clone()),
    })
}

/// Applies a plan: empties the target when asked, writes the watermark, records the reset.
pub async fn apply(spec: &PipelineSpec, plan: &ResetPlan) -> Result<()> {
    let state = state::open(spec)?;
    let current = state.read_watermark()?;
    if current.as_ref().map_or(0, |w| w.run_seq) != plan.run_seq {
        return Err(EngineError::Watermark(format!(
            "{} committed a run while the reset was being planned; plan again",
            spec.name
        )));
    }
    let mut target_version = current.as_ref().and_then(|w| w.target_version);
    if plan.truncate_target
        && let Some(v) = target::open(spec)?.truncate().await?
    {
        target_version = Some(v);
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let wm = Watermark {
        pipeline: spec.name.clone(),
        value: plan.new_value,
        value_type: plan.value_type,
        updated_at: now.clone(),
        row_count: 0,
        run_seq: plan.run_seq,
        target_version,
        event_time_high: None,
        boundary_hashes: Vec::new(),
        // A change-event pipeline replays its stream from the start; arrival positions keep
        // counting up, so replayed changes still order after what the target holds.
        positions: Default::default(),
        events_seen: plan.events_seen,
        cdc_order: plan.cdc_order.clone(),
    };
    state.reset_watermark(&wm)?;
    state.append_ledger(&LedgerEntry {
        run_seq: Some(plan.run_seq),
        status: "reset".into(),
        started_at: now.clone(),
        finished_at: now,
        watermark_before: plan.watermark_before.clone(),
        watermark_after: Some(format_opt(plan.new_value, Some(plan.value_type)))
            .filter(|_| plan.new_value.is_some()),
        target_version,
        note: Some(format!(
            "reset to {}{}",
            plan.watermark_after.as_deref().unwrap_or("the start"),
            if plan.truncate_target {
                ", target truncated"
            } else {
                ""
            }
        )),
        ..Default::default()
    })?;
    tracing::warn!(
        pipeline = %spec.name,
        from = ?plan.watermark_before,
        to = ?plan.watermark_after,
        truncate = plan.truncate_target,
        "watermark reset"
    );
    Ok(())
}
