//! The row pipeline shared by every row source (Parquet files, PostgreSQL query): from the
//! window a source extracted to the run's batch files and manifest — null cursors, the
//! scheduled run's upper bound, boundary rows already loaded, dedup per key, late rows, the
//! SQL transform, the batch and quarantine files and the watermark document the run publishes.
//!
//! Window = `[watermark − lookback, high]`, lower bound inclusive (rows tied at the watermark
//! value that arrive later are not lost; the key-based MERGE makes the re-read idempotent).
//! In append mode the rows already loaded at the watermark value are skipped by identity.

use super::frame::{row_hashes, visible_columns};
use super::transform::apply_sql;
use super::{
    CURSOR_COL, Extracted, FILE_COL, ROW_COL, RunContext, schema_of, write_next_watermark,
};
use crate::error::{EngineError, Result};
use crate::state::watermark::Watermark;
use polars::prelude::*;
use std::collections::HashSet;
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::ProcessManifest;
use tidemark_workflows::spec::{LatePolicy, OnNullCursor, PipelineSpec, WriteMode};

/// Turns a row source's window into the run's batch files and manifest.
pub fn finish(run: &RunContext<'_>, extracted: Extracted) -> Result<ProcessManifest> {
    let RunContext {
        spec,
        store,
        run_seq,
        as_of_us,
        until,
        ..
    } = *run;
    let src = &spec.source;
    let Extracted {
        mut df,
        cursor_type,
        window_low,
        files_total,
        files_skipped,
        origins,
        column_origins,
        batch_from,
        schema_resolution,
        cut,
    } = extracted;
    let watermark_before = store.and_then(|w| w.value);

    // Null cursors.
    let mut rows_null_cursor = 0;
    if df.height() > 0 {
        let nulls = df.column(CURSOR_COL)?.null_count() as u64;
        if nulls > 0 {
            match src.on_null_cursor {
                OnNullCursor::Error => {
                    let file = first_file_with_null(&df, CURSOR_COL, &origins)?;
                    return Err(EngineError::NullCursor {
                        column: src.cursor.clone(),
                        count: nulls,
                        file,
                    });
                }
                OnNullCursor::Exclude => {
                    rows_null_cursor = nulls;
                    let mask = df.column(CURSOR_COL)?.is_not_null();
                    df = df.filter(&mask)?;
                }
            }
        }
    }
    // A scheduled run's window ends at its action time (timestamp cursors only).
    let mut rows_after_as_of = 0;
    if let Some(as_of) = as_of_us
        && cursor_type == CursorType::Timestamp
        && df.height() > 0
    {
        let keep = df.column(CURSOR_COL)?.i64()?.lt_eq(as_of);
        let before = df.height();
        df = df.filter(&keep)?;
        rows_after_as_of = (before - df.height()) as u64;
    }
    if let Some(end) = until
        && df.height() > 0
    {
        let keep = df.column(CURSOR_COL)?.i64()?.lt(end);
        let before = df.height();
        df = df.filter(&keep)?;
        rows_after_as_of += (before - df.height()) as u64;
    }
    let rows_extracted = df.height() as u64;
    let window_high = max_i64(&df, CURSOR_COL)?;
    let watermark_after = match (watermark_before, window_high) {
        (Some(b), Some(h)) => Some(b.max(h)),
        (b, h) => b.or(h),
    };

    // Skip the rows already loaded at the watermark value: required in append mode (they
    // would be appended twice), an optimisation in merge mode (re-reading identical rows is
    // a no-op MERGE, but skipping them lets a run with nothing new skip stage and promote).
    let identity = boundary_identity(spec, &df);
    let mut rows_boundary_skipped = 0;
    if let (Some(identity), Some(w), Some(store)) = (&identity, watermark_before, store)
        && !store.boundary_hashes.is_empty()
        && df.height() > 0
    {
        let known: HashSet<&str> = store.boundary_hashes.iter().map(|s| s.as_str()).collect();
        let at_mark = df.column(CURSOR_COL)?.i64()?.equal(w);
        let rows_at_mark: Vec<usize> = at_mark
            .iter()
            .enumerate()
            .filter_map(|(i, at)| (at == Some(true)).then_some(i))
            .collect();
        if !rows_at_mark.is_empty() {
            let idx = IdxCa::from_vec(
                "idx".into(),
                rows_at_mark.iter().map(|&i| i as IdxSize).collect(),
            );
            let hashes = row_hashes(&df.take(&idx)?, identity)?;
            let mut keep = vec![true; df.height()];
            for (&i, h) in rows_at_mark.iter().zip(&hashes) {
                keep[i] = !known.contains(h.as_str());
            }
            let keep = BooleanChunked::from_slice("keep".into(), &keep);
            let before = df.height();
            df = df.filter(&keep)?;
            rows_boundary_skipped = (before - df.height()) as u64;
        }
    }

    // Boundary set of the watermark this run publishes.
    let mut boundary_hashes = Vec::new();
    if let (Some(identity), Some(after)) = (&identity, watermark_after) {
        if watermark_before == Some(after)
            && let Some(store) = store
        {
            boundary_hashes.extend(store.boundary_hashes.iter().cloned());
        }
        if df.height() > 0 {
            let mask = df.column(CURSOR_COL)?.i64()?.equal(after);
            let at = df.filter(&mask)?;
            boundary_hashes.extend(row_hashes(&at, identity)?);
        }
        boundary_hashes.sort();
        boundary_hashes.dedup();
        // In merge mode the set only saves work: past a bound it is dropped rather than
        // carried in every watermark document (a date cursor can tie thousands of rows).
        if spec.target.mode == WriteMode::Merge && boundary_hashes.len() > MERGE_BOUNDARY_MAX {
            boundary_hashes.clear();
        }
    }

    // A null key never matches in MERGE (`NULL = NULL` is not true), so every re-read would
    // insert the row again: refuse it, naming the column and a file.
    if spec.target.mode == WriteMode::Merge {
        for k in &spec.target.key {
            let nulls = df.column(k)?.null_count();
            if nulls > 0 {
                let file = first_file_with_null(&df, k, &origins)?;
                return Err(EngineError::Schema(format!(
                    "key column `{k}` is null in {nulls} row(s) (first in {}); merge needs a key on every row",
                    file
                )));
            }
        }
    }

    // Dedup: one row per key, greatest cursor; ties to the later file, then the later row.
    let mut rows_deduplicated = 0;
    if !spec.target.key.is_empty() && df.height() > 0 {
        let before = df.height();
        df = df
            .lazy()
            .sort(
                [CURSOR_COL, FILE_COL, ROW_COL],
                SortMultipleOptions::default(),
            )
            .unique_stable_generic(
                Some(spec.target.key.iter().map(|k| col(k.as_str())).collect()),
                UniqueKeepStrategy::Last,
            )
            .collect()?;
        rows_deduplicated = (before - df.height()) as u64;
    }

    // Late rows: event time below the previous run's event-time high mark.
    let prev_event_high = store.and_then(|w| w.event_time_high);
    let mut event_time_high = prev_event_high;
    let mut rows_late = 0;
    let mut late_df: Option<DataFrame> = None;
    if let Some(et) = &src.event_time
        && df.height() > 0
    {
        let et_us = df
            .column(et)?
            .as_materialized_series()
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .map_err(|e| EngineError::Schema(format!("event_time `{et}` is not a timestamp: {e}")))?
            .cast(&DataType::Int64)?;
        let et_us = et_us.i64()?;
        if let Some(m) = et_us.max() {
            event_time_high = Some(event_time_high.map_or(m, |p| p.max(m)));
        }
        // Late = arrived since the last run (cursor past the previous watermark: the ingest
        // time) with an event time below the previous event-time high mark. Rows re-read
        // through the lookback were judged when they first arrived.
        if let (Some(prev), Some(before)) = (prev_event_high, watermark_before) {
            let arrived = df.column(CURSOR_COL)?.i64()?.gt(before);
            let late_mask = &et_us.lt(prev) & &arrived;
            rows_late = late_mask.sum().unwrap_or(0) as u64;
            if rows_late > 0 && spec.late.policy == LatePolicy::Quarantine {
                late_df = Some(df.filter(&late_mask)?);
                df = df.filter(&!&late_mask)?;
            }
        }
    }
    let rows_quarantined = late_df.as_ref().map_or(0, |d| d.height() as u64);

    // Transform (over visible columns only).
    let mut batch = drop_hidden(df)?;
    if let Some(t) = &spec.transform
        && batch.height() > 0
    {
        batch = apply_sql(batch, &t.sql)?;
        for k in spec.target.key.iter() {
            if batch.column(k).is_err() {
                return Err(EngineError::Transform(format!(
                    "the transform's output lacks key column `{k}`; keep it in the SELECT list"
                )));
            }
        }
        if spec.target.mode == WriteMode::Merge && batch.column(&src.cursor).is_err() {
            return Err(EngineError::Transform(format!(
                "the transform's output lacks cursor column `{}`, which merge needs to keep the newest version",
                src.cursor
            )));
        }
    }
    let schema = schema_of(&batch, &column_origins, &batch_from);

    // Write the batch files.
    let rows_batch = batch.height() as u64;
    let batch_file = if rows_batch > 0 {
        // Grouped as the target asks (a partitioned Delta table copies whole partitions),
        // when the batch has every such column (a transform may drop one).
        let present = run.group_by.iter().all(|c| batch.column(c).is_ok());
        let group_by = if present { run.group_by } else { &[] };
        Some(run.write_batch_clustered(&mut batch, "batch.parquet", group_by)?)
    } else {
        None
    };
    let quarantine = match late_df {
        Some(d) if d.height() > 0 => {
            let mut d = drop_hidden(d)?;
            Some(run.write_batch(&mut d, "quarantine.parquet")?)
        }
        _ => None,
    };

    // The watermark this run publishes, written now so promote can embed it.
    let next = Watermark {
        pipeline: spec.name.clone(),
        value: watermark_after,
        value_type: cursor_type,
        updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        row_count: rows_batch,
        run_seq,
        target_version: None,
        event_time_high,
        boundary_hashes,
        positions: Default::default(),
        events_seen: 0,
        cdc_order: None,
    };
    let next_watermark_path = write_next_watermark(run, &next)?;
    if let Some(c) = &cut {
        if c.over_by_lookback {
            tracing::warn!(
                pipeline = %spec.name,
                run_seq,
                rows = rows_extracted,
                max_batch_rows = src.max_batch_rows,
                "the rows the lookback re-reads fill the batch budget alone: the batch holds them plus the budget's rows past the watermark (raise max_batch_rows or shorten source.lookback)"
            );
        }
        match c.oversized {
            Some(v) => tracing::warn!(
                pipeline = %spec.name,
                run_seq,
                value = %crate::cursor::format_cursor(v, cursor_type),
                rows = rows_extracted,
                max_batch_rows = src.max_batch_rows,
                "one cursor value holds more rows than the batch budget: read whole in one batch (rows tied at a value are never split)"
            ),
            None => tracing::info!(
                pipeline = %spec.name,
                run_seq,
                cut = %crate::cursor::format_cursor(c.high, cursor_type),
                rows_remaining = c.rows_remaining,
                "the window is bigger than a batch: cut"
            ),
        }
    }

    Ok(ProcessManifest {
        run_seq,
        cursor_type,
        watermark_before,
        window_low,
        window_high,
        watermark_after,
        files_total,
        files_skipped,
        rows_extracted,
        rows_null_cursor,
        rows_boundary_skipped,
        rows_deduplicated,
        rows_late,
        rows_after_as_of,
        rows_quarantined,
        rows_batch,
        batch: batch_file,
        quarantine,
        schema,
        next_watermark_path,
        duration_ms: run.started.elapsed().as_millis() as u64,
        attempt: 0,
        cdc: None,
        schema_resolution,
        more: cut.is_some(),
        rows_remaining_estimate: cut.map(|c| c.rows_remaining),
        oversized_value: cut
            .and_then(|c| c.oversized)
            .map(|v| crate::cursor::format_cursor(v, cursor_type)),
    })
}

/// Rows tied at the watermark a merge-mode watermark document remembers at most.
pub const MERGE_BOUNDARY_MAX: usize = 1024;

/// The columns that identify a row already loaded at the watermark value: append mode, the
/// key (every column without one); merge mode, every column (a re-read row is skipped only
/// when nothing in it changed). None: the mode keeps no boundary set.
fn boundary_identity(spec: &PipelineSpec, df: &DataFrame) -> Option<Vec<String>> {
    match spec.target.mode {
        WriteMode::Append if !spec.target.key.is_empty() => Some(spec.target.key.clone()),
        WriteMode::Append | WriteMode::Merge => Some(visible_columns(df)),
        _ => None,
    }
}

/// The path of the first source file holding a null in `column` (for error messages).
fn first_file_with_null(df: &DataFrame, column: &str, origins: &[String]) -> Result<String> {
    let mask = df.column(column)?.is_null();
    let first = df
        .filter(&mask)?
        .column(FILE_COL)?
        .u32()?
        .get(0)
        .unwrap_or(0);
    Ok(origins.get(first as usize).cloned().unwrap_or_default())
}

fn drop_hidden(df: DataFrame) -> Result<DataFrame> {
    let keep = visible_columns(&df);
    if df.width() == 0 {
        return Ok(df);
    }
    Ok(df.select(keep.iter().map(|c| c.as_str()))?)
}

fn max_i64(df: &DataFrame, column: &str) -> Result<Option<i64>> {
    if df.height() == 0 {
        return Ok(None);
    }
    Ok(df.column(column)?.i64()?.max())
}
