//! `process`: reconcile the store with the target, assign the run's sequence number and
//! window, then extract, dedup, route late rows, transform, and write the batch files.
//!
//! Window = `[watermark − lookback, high]`, lower bound inclusive (rows tied at the watermark
//! value that arrive later are not lost; the key-based MERGE makes the re-read idempotent).
//! In append mode the rows already loaded at the watermark value are skipped by identity.

use super::frame::{row_hashes, visible_columns, write_parquet_durable};
use super::transform::apply_sql;
use crate::cursor::parse_cursor;
use crate::error::{EngineError, Result};
use crate::source::parquet::{self as pq, CURSOR_COL, FILE_COL, ROW_COL};
use crate::state::watermark::{self, Watermark};
use crate::state::{PipelineDirs, fsio};
use polars::prelude::*;
use std::collections::HashSet;
use std::time::Instant;
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::{BatchFile, ColumnInfo, ProcessManifest};
use tidemark_workflows::spec::{LatePolicy, OnNullCursor, PipelineSpec, SourceKind, WriteMode};

/// Builds the run's batch from the source. `store` is the reconciled watermark (None on the
/// first run). Blocking: call from a blocking thread.
pub fn build_batch(spec: &PipelineSpec, store: Option<&Watermark>) -> Result<ProcessManifest> {
    build_batch_as_of(spec, store, None, None)
}

/// [`build_batch`] with an upper bound: rows of a timestamp cursor later than `as_of_us` (a
/// scheduled run's action time, microseconds) stay in the source for the next run.
/// `until` (cursor units, exclusive) ends the window of a backfill window's run.
pub fn build_batch_as_of(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    as_of_us: Option<i64>,
    until: Option<i64>,
) -> Result<ProcessManifest> {
    let started = Instant::now();
    let dirs = PipelineDirs::of(spec);
    let run_seq = store.map_or(0, |w| w.run_seq) + 1;
    let run_dir = dirs.run_dir(run_seq);
    // Runs of a pipeline never overlap, so directories of earlier runs are debris (of a run
    // that died, or of a zombie attempt that woke after its run ended): clear them. The
    // current run's directory is left alone: a zombie attempt of this same run may be
    // writing into it, and every file in it is replaced atomically.
    clear_older_runs(&dirs.root.join("runs"), &dirs.run_dir(run_seq))?;
    if let (Some(first), Some(current)) = (
        crate::target::staging_dir(spec, 0),
        crate::target::staging_dir(spec, run_seq),
    ) {
        clear_older_runs(&first.with_file_name(""), &current)?;
    }
    let src = &spec.source;
    let Extracted {
        mut df,
        cursor_type,
        window_low,
        files_total,
        files_skipped,
        origins,
    } = match src.kind {
        SourceKind::Parquet => extract_parquet(spec, store)?,
        SourceKind::Postgres => crate::source::postgres::extract_blocking(spec, store)?,
        SourceKind::DebeziumJsonl | SourceKind::KafkaDebezium => {
            return crate::cdc::build_batch(spec, store, run_seq, &run_dir, started);
        }
    };
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
    let schema: Vec<ColumnInfo> = batch
        .schema()
        .iter()
        .map(|(n, t)| ColumnInfo {
            name: n.to_string(),
            dtype: t.to_string(),
        })
        .collect();

    // Write the batch files.
    let rows_batch = batch.height() as u64;
    let batch_file = if rows_batch > 0 {
        Some(write_batch(&mut batch, &run_dir.join("batch.parquet"))?)
    } else {
        None
    };
    let quarantine = match late_df {
        Some(d) if d.height() > 0 => {
            let mut d = drop_hidden(d)?;
            Some(write_batch(&mut d, &run_dir.join("quarantine.parquet"))?)
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
    let next_path = run_dir.join("watermark.next.json");
    fsio::write_atomic(&next_path, next.to_json().as_bytes())?;

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
        next_watermark_path: next_path.to_string_lossy().into_owned(),
        duration_ms: started.elapsed().as_millis() as u64,
        attempt: 0,
        cdc: None,
    })
}

/// What a source yields for one run: the window's rows with the hidden columns
/// (`__tm_file`: index into `origins`, `__tm_row`, `__tm_cursor` as i64), and the window.
pub struct Extracted {
    /// Rows of the window.
    pub df: DataFrame,
    /// The cursor's type.
    pub cursor_type: CursorType,
    /// Inclusive lower bound (None: everything).
    pub window_low: Option<i64>,
    /// Source files seen (0 for a database).
    pub files_total: u64,
    /// Files skipped by their statistics.
    pub files_skipped: u64,
    /// What each `__tm_file` value names, for messages.
    pub origins: Vec<String>,
}

/// The cursor type a run uses: the source's, which must match a declared one and the stored
/// watermark's. `found_in` names where the source's type was read.
pub fn check_cursor_type(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    found: CursorType,
    found_in: &str,
) -> Result<CursorType> {
    let src = &spec.source;
    if let Some(declared) = src.cursor_type
        && declared != found
    {
        return Err(EngineError::Schema(format!(
            "cursor `{}` is declared {} but {found_in} stores it as {}",
            src.cursor,
            declared.as_str(),
            found.as_str()
        )));
    }
    if let Some(w) = store
        && w.value.is_some()
        && w.value_type != found
    {
        return Err(EngineError::Schema(format!(
            "cursor `{}` is now {} but the stored watermark is {}; reset the pipeline to change the cursor type",
            src.cursor,
            found.as_str(),
            w.value_type.as_str()
        )));
    }
    Ok(found)
}

/// The window's inclusive lower bound: watermark − lookback, or `initial` on the first run.
pub fn window_low(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    cursor_type: CursorType,
) -> Result<Option<i64>> {
    let src = &spec.source;
    let lookback = src.lookback.in_units_of(cursor_type).ok_or_else(|| {
        EngineError::Spec(format!(
            "{}: `source.lookback` does not fit the {} cursor `{}`",
            spec.spec_path,
            cursor_type.as_str(),
            src.cursor
        ))
    })?;
    Ok(match store.and_then(|w| w.value) {
        Some(w) => Some(w.saturating_sub(lookback)),
        None => match &src.initial {
            Some(text) => Some(parse_cursor(text, cursor_type).ok_or_else(|| {
                EngineError::Spec(format!(
                    "{}: `source.initial` {text:?} is not a valid {} for cursor `{}`",
                    spec.spec_path,
                    cursor_type.as_str(),
                    src.cursor
                ))
            })?),
            None => None,
        },
    })
}

/// Extracts the window from Parquet files: footer statistics skip whole files, the window
/// predicate is pushed into the scan.
fn extract_parquet(spec: &PipelineSpec, store: Option<&Watermark>) -> Result<Extracted> {
    let src = &spec.source;
    // Files and their footers.
    let paths = pq::list_files(&src.path)?;
    let mut files = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        files.push(pq::inspect(p, i as u32, &src.cursor)?);
    }

    // Cursor type: declared or inferred from the newest file, and it must match the stored one.
    let newest = files.last().expect("list_files returns at least one file");
    let cursor_type = check_cursor_type(
        spec,
        store,
        newest.cursor.cursor_type(),
        &newest.path.display().to_string(),
    )?;
    let window_low = window_low(spec, store, cursor_type)?;

    // Extract.
    let live: Vec<_> = files
        .iter()
        .filter(|f| match (window_low, f.cursor_max) {
            (Some(low), Some(max)) => max >= low,
            _ => true,
        })
        .cloned()
        .collect();
    let files_skipped = (files.len() - live.len()) as u64;
    // Drift matters among the files this run reads (and against the target, at promote):
    // an old file that the window excludes does not wedge the pipeline forever.
    pq::check_same_schema(&live)?;
    if let Some(first) = live.first() {
        for k in spec.target.key.iter().chain(src.event_time.iter()) {
            if !first.columns.iter().any(|(n, _)| n == k) {
                return Err(EngineError::Schema(format!(
                    "column `{k}` named in the spec is missing from {}",
                    first.path.display()
                )));
            }
        }
    }
    let df = if live.is_empty() {
        DataFrame::empty()
    } else {
        pq::scan_window(&live, &src.cursor, window_low)?
            .collect()
            .map_err(|e| corrupt_or_polars(e, &live))?
    };

    Ok(Extracted {
        df,
        cursor_type,
        window_low,
        files_total: files.len() as u64,
        files_skipped,
        origins: files.iter().map(|f| f.path.display().to_string()).collect(),
    })
}

/// Rows tied at the watermark a merge-mode watermark document remembers at most.
const MERGE_BOUNDARY_MAX: usize = 1024;

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

/// Reads the watermark document a run's `process` wrote.
pub fn read_next_watermark(manifest: &ProcessManifest) -> Result<Watermark> {
    let path = std::path::Path::new(&manifest.next_watermark_path);
    watermark::read(path)?.ok_or_else(|| {
        EngineError::Integrity(format!(
            "{} is missing: the run directory was removed before the run finished",
            path.display()
        ))
    })
}

/// Removes the entries of `dir` that sort before `current` (run directories are named by
/// zero-padded run_seq, so name order is run order).
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

fn clear_older_runs(dir: &std::path::Path, current: &std::path::Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let current = current.file_name().unwrap_or_default();
    for e in entries.flatten() {
        if e.file_name().as_os_str() < current {
            fsio::remove_dir_if_exists(&e.path())?;
        }
    }
    Ok(())
}

pub(crate) fn write_batch(df: &mut DataFrame, path: &std::path::Path) -> Result<BatchFile> {
    write_parquet_durable(df, path)?;
    Ok(BatchFile {
        path: path.to_string_lossy().into_owned(),
        rows: df.height() as u64,
        sha256: fsio::sha256_file(path)?,
    })
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

fn corrupt_or_polars(e: PolarsError, files: &[pq::SourceFile]) -> EngineError {
    let text = e.to_string();
    let file = files
        .iter()
        .find(|f| text.contains(&*f.path.to_string_lossy()))
        .or_else(|| (files.len() == 1).then(|| &files[0]));
    match (&e, file) {
        (PolarsError::ComputeError(_) | PolarsError::IO { .. }, Some(f)) => {
            EngineError::CorruptInput {
                path: f.path.clone(),
                reason: text,
            }
        }
        _ => EngineError::Polars(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::watermark::Watermark;
    use tidemark_workflows::cursor::CursorType;

    fn spec_for(dir: &std::path::Path, extra: &str) -> PipelineSpec {
        let text = format!(
            "name = \"t\"\n[source]\nkind = \"parquet\"\npath = \"in\"\ncursor = \"c\"\n{extra}\n[target]\nkind = \"delta\"\npath = \"lake\"\nkey = [\"id\"]\n"
        );
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        crate::spec::load(&path).unwrap()
    }

    fn write(dir: &std::path::Path, name: &str, mut df: DataFrame) {
        std::fs::create_dir_all(dir.join("in")).unwrap();
        let f = std::fs::File::create(dir.join("in").join(name)).unwrap();
        ParquetWriter::new(f).finish(&mut df).unwrap();
    }

    /// The store after run 1 committed `value`.
    fn store(value: i64, t: CursorType) -> Watermark {
        Watermark::sample(1, value, t)
    }

    fn frame(ids: &[i64], cursor: Series) -> DataFrame {
        DataFrame::new_infer_height(vec![
            Column::new("id".into(), ids.to_vec()),
            cursor.with_name("c".into()).into(),
        ])
        .unwrap()
    }

    #[test]
    fn nanosecond_and_naive_timestamps_window_in_microseconds() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Series::new(
            "c".into(),
            vec![1_000_000_000i64, 2_000_000_000, 3_000_000_500],
        )
        .cast(&DataType::Datetime(TimeUnit::Nanoseconds, None))
        .unwrap();
        write(dir.path(), "a.parquet", frame(&[1, 2, 3], ns));
        let spec = spec_for(dir.path(), "");
        // Watermark at 2 s: the window starts there (inclusive), rows 2 and 3 are read.
        let m = build_batch(&spec, Some(&store(2_000_000, CursorType::Timestamp))).unwrap();
        assert_eq!(m.cursor_type, CursorType::Timestamp);
        assert_eq!(m.rows_extracted, 2);
        assert_eq!(
            m.window_high,
            Some(3_000_000),
            "3.0000005 s rounds down to whole microseconds"
        );
    }

    /// Merge mode remembers the rows tied at the watermark so a re-read of them is skipped,
    /// but only up to a bound (a date cursor can tie a whole day of rows).
    #[test]
    fn merge_mode_keeps_a_bounded_boundary_set() {
        let dir = tempfile::tempdir().unwrap();
        let ties = |n: usize| Series::new("c".into(), vec![7i64; n]);
        let ids: Vec<i64> = (0..3).collect();
        write(dir.path(), "a.parquet", frame(&ids, ties(3)));
        let spec = spec_for(dir.path(), "");
        let m = build_batch(&spec, None).unwrap();
        assert_eq!(read_next_watermark(&m).unwrap().boundary_hashes.len(), 3);

        let many: Vec<i64> = (0..(MERGE_BOUNDARY_MAX as i64 + 1)).collect();
        write(dir.path(), "a.parquet", frame(&many, ties(many.len())));
        let m = build_batch(&spec, None).unwrap();
        assert!(read_next_watermark(&m).unwrap().boundary_hashes.is_empty());
    }

    #[test]
    fn date_cursors_are_days_in_microseconds() {
        let dir = tempfile::tempdir().unwrap();
        let days = Series::new("c".into(), vec![20_000i32, 20_001, 20_002])
            .cast(&DataType::Date)
            .unwrap();
        write(dir.path(), "a.parquet", frame(&[1, 2, 3], days));
        let spec = spec_for(dir.path(), "lookback = \"1d\"");
        let day_us = 86_400_000_000i64;
        let m = build_batch(&spec, Some(&store(20_002 * day_us, CursorType::Timestamp))).unwrap();
        assert_eq!(m.window_low, Some(20_001 * day_us));
        assert_eq!(m.rows_extracted, 2);
        assert_eq!(m.window_high, Some(20_002 * day_us));
    }

    #[test]
    fn a_file_below_the_window_is_skipped_from_its_statistics() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.parquet",
            frame(&[1, 2], Series::new("c".into(), vec![1i64, 2])),
        );
        write(
            dir.path(),
            "b.parquet",
            frame(&[3], Series::new("c".into(), vec![10i64])),
        );
        let spec = spec_for(dir.path(), "");
        let m = build_batch(&spec, Some(&store(5, CursorType::Integer))).unwrap();
        assert_eq!((m.files_total, m.files_skipped), (2, 1));
        assert_eq!(m.rows_extracted, 1);
    }

    #[test]
    fn drift_only_matters_among_the_files_a_run_reads() {
        let dir = tempfile::tempdir().unwrap();
        // An old file without the `extra` column lies below the window.
        write(
            dir.path(),
            "a.parquet",
            frame(&[1], Series::new("c".into(), vec![1i64])),
        );
        let mut b = frame(&[2], Series::new("c".into(), vec![10i64]));
        b.with_column(Column::new("extra".into(), vec![true]))
            .unwrap();
        write(dir.path(), "b.parquet", b.clone());
        let spec = spec_for(dir.path(), "");
        let m = build_batch(&spec, Some(&store(5, CursorType::Integer))).unwrap();
        assert_eq!(m.rows_extracted, 1);
        // Read together (no watermark yet), they are drift.
        let err = build_batch(&spec, None).unwrap_err();
        assert!(err.to_string().contains("schema drift"), "{err}");
    }

    #[test]
    fn a_null_key_is_refused_in_merge_mode() {
        let dir = tempfile::tempdir().unwrap();
        let df = DataFrame::new_infer_height(vec![
            Column::new("id".into(), vec![Some(1i64), None]),
            Column::new("c".into(), vec![1i64, 2]),
        ])
        .unwrap();
        write(dir.path(), "a.parquet", df);
        let err = build_batch(&spec_for(dir.path(), ""), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("key column `id` is null in 1 row(s)")
                && !err.is_retryable(),
            "{err}"
        );
    }

    #[test]
    fn a_declared_cursor_type_that_contradicts_the_files_is_a_schema_error() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.parquet",
            frame(&[1], Series::new("c".into(), vec![1i64])),
        );
        let spec = spec_for(dir.path(), "cursor_type = \"timestamp\"");
        let err = build_batch(&spec, None).unwrap_err();
        assert!(
            matches!(err, EngineError::Schema(_)) && !err.is_retryable(),
            "{err}"
        );
    }

    #[test]
    fn a_string_cursor_is_refused_with_its_type() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.parquet",
            frame(&[1], Series::new("c".into(), vec!["x"])),
        );
        let err = build_batch(&spec_for(dir.path(), ""), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be a timestamp, a date or an integer"),
            "{err}"
        );
    }

    #[test]
    fn common_column_types_load_small_ints_decimals_and_strings() {
        use deltalake::arrow::array::{
            ArrayRef, Decimal128Array, Int16Array, Int64Array, StringArray,
        };
        use deltalake::arrow::record_batch::RecordBatch;
        use deltalake::parquet::arrow::ArrowWriter;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("c", Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef),
            ("code", Arc::new(Int16Array::from(vec![7, 8])) as ArrayRef),
            (
                "price",
                Arc::new(
                    Decimal128Array::from(vec![1234, 5678])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
        ])
        .unwrap();
        let file = std::fs::File::create(dir.path().join("in/a.parquet")).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let m = build_batch(&spec_for(dir.path(), ""), None).unwrap();
        assert_eq!(m.rows_batch, 2);
        let names: Vec<&str> = m.schema.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["id", "c", "code", "price", "name"]);
        let types: Vec<&str> = m.schema.iter().map(|c| c.dtype.as_str()).collect();
        assert_eq!(
            types,
            vec!["i64", "i64", "i16", "decimal[10,2]", "str"],
            "types are preserved"
        );
    }
}
