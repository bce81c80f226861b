//! Batch building shared by every source: the run's context, what a row source extracts,
//! the window's lower bound and cursor-type checks, the hidden columns, and writing the
//! batch files and the watermark document a run publishes. Sources use this module; it never
//! imports a source (`crate::source` dispatches), so there is no import circle.

pub mod arrow_hint;
pub mod cut;
pub mod frame;
pub mod rows;
pub mod transform;

use crate::cursor::parse_cursor;
use crate::error::{EngineError, Result};
use crate::state::StateStore;
use crate::state::fsio;
use crate::state::watermark::Watermark;
use frame::write_parquet_durable;
use polars::prelude::*;
use std::time::Instant;
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::{BatchFile, ColumnInfo, ProcessManifest};
use tidemark_workflows::spec::PipelineSpec;

/// Hidden column: the file ordinal of a row.
pub const FILE_COL: &str = "__tm_file";
/// Hidden column: the row index within its file.
pub const ROW_COL: &str = "__tm_row";
/// Hidden column: the cursor as i64 (µs for timestamps).
pub const CURSOR_COL: &str = "__tm_cursor";

/// Everything a source needs to build run `run_seq`'s batch.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    /// The pipeline.
    pub spec: &'a PipelineSpec,
    /// The reconciled watermark (None on the first run).
    pub store: Option<&'a Watermark>,
    /// Where the run's files go.
    pub state: &'a dyn StateStore,
    /// The run.
    pub run_seq: u64,
    /// A scheduled run's action time (µs): timestamp-cursor rows past it wait for the next run.
    pub as_of_us: Option<i64>,
    /// A backfill window's exclusive end, in cursor units.
    pub until: Option<i64>,
    /// When `process` started (for the manifest's duration).
    pub started: Instant,
    /// The columns the target wants the batch file grouped by (`Target::batch_groups`).
    pub group_by: &'a [String],
}

/// How far a run's batch may reach: the window's end and the batch budget.
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    /// A scheduled run's action time (µs; timestamp cursors only).
    pub as_of_us: Option<i64>,
    /// A backfill window's exclusive end (cursor units).
    pub until: Option<i64>,
    /// `[source] max_batch_rows`.
    pub max_rows: u64,
    /// `[source] max_batch_bytes`.
    pub max_bytes: u64,
}

impl Reach {
    /// The window's inclusive upper bound for a cursor of type `t` (None: open).
    pub fn upper(&self, t: CursorType) -> Option<i64> {
        let as_of = self.as_of_us.filter(|_| t == CursorType::Timestamp);
        let until = self.until.map(|u| u.saturating_sub(1));
        match (as_of, until) {
            (Some(a), Some(u)) => Some(a.min(u)),
            (a, u) => a.or(u),
        }
    }
}

impl RunContext<'_> {
    /// How far this run's batch may reach.
    pub fn reach(&self) -> Reach {
        Reach {
            as_of_us: self.as_of_us,
            until: self.until,
            max_rows: self.spec.source.max_batch_rows,
            max_bytes: self.spec.source.max_batch_bytes,
        }
    }

    /// Writes the run's batch file `name` durably and hands it to the state store (in place
    /// on local disk; uploaded whole to an object store); describes it for the manifest.
    pub fn write_batch(&self, df: &mut DataFrame, name: &str) -> Result<BatchFile> {
        self.write_batch_clustered(df, name, &[])
    }

    /// [`Self::write_batch`], the rows grouped by `cluster_by`'s values, no row group holding
    /// two groups (a partitioned Delta table's batch: see `target::delta::copy`).
    pub fn write_batch_clustered(
        &self,
        df: &mut DataFrame,
        name: &str,
        cluster_by: &[String],
    ) -> Result<BatchFile> {
        let local = self.state.scratch_path(self.run_seq, name)?;
        write_parquet_durable(df, &local, cluster_by)?;
        let sha256 = fsio::sha256_file(&local)?;
        let path = self.state.adopt_run_file(self.run_seq, name, &local)?;
        Ok(BatchFile {
            path,
            rows: df.height() as u64,
            sha256,
        })
    }
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
    /// Where each column first appeared (files of the window), for schema errors.
    pub column_origins: Vec<(String, String)>,
    /// The input in words, for schema errors (`the files of the window`, `the query`).
    pub batch_from: String,
    /// How the inputs' schemas were unified under the contract, when they differed.
    pub schema_resolution: Option<tidemark_workflows::payloads::SchemaChange>,
    /// Where the batch ends, when the window was bigger than the budget (rows above it wait
    /// for the next batch).
    pub cut: Option<cut::Cut>,
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

/// The columns of a batch, their types and null counts, for the manifest; `origins` say
/// where columns first appeared (else `from`).
pub fn schema_of(df: &DataFrame, origins: &[(String, String)], from: &str) -> Vec<ColumnInfo> {
    df.columns()
        .iter()
        .map(|c| {
            let name = c.name().to_string();
            let origin = origins
                .iter()
                .find(|(n, _)| *n == name)
                .map_or_else(|| from.to_string(), |(_, o)| o.clone());
            ColumnInfo {
                dtype: c.dtype().to_string(),
                nulls: c.null_count() as u64,
                origin: Some(origin),
                name,
            }
        })
        .collect()
}

/// Writes the watermark document run `run` publishes (promote embeds it in the commit,
/// update_watermark installs it); returns where it went, for the manifest.
pub fn write_next_watermark(run: &RunContext<'_>, next: &Watermark) -> Result<String> {
    run.state.write_run_file(
        run.run_seq,
        "watermark.next.json",
        next.to_json().as_bytes(),
    )
}

/// Reads the watermark document a run's `process` wrote.
pub fn read_next_watermark(
    state: &dyn StateStore,
    manifest: &ProcessManifest,
) -> Result<Watermark> {
    let path = &manifest.next_watermark_path;
    let missing = || {
        EngineError::Integrity(format!(
            "{path} is missing: the run directory was removed before the run finished"
        ))
    };
    let bytes = state.read_run_file(path)?.ok_or_else(missing)?;
    let text = String::from_utf8_lossy(&bytes);
    Watermark::from_json(&text)
        .map_err(|e| EngineError::Watermark(format!("{path} is unreadable: {e}")))
}
