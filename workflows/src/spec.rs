//! The resolved pipeline spec: what the TOML file said, validated, with paths made absolute.
//!
//! It is embedded in every run's workflow input, so the history records exactly what ran.
//! Parsing and validation of the TOML lives in `tidemark::spec`; this module holds only the
//! serialisable result.

use crate::cursor::{CursorType, Lookback};
use serde::{Deserialize, Serialize};

/// A validated pipeline spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    /// Unique pipeline name, `[A-Za-z0-9_-]+`.
    pub name: String,
    /// Absolute path of the spec file this was read from.
    pub spec_path: String,
    /// Absolute state directory: watermark store, run ledger, per-run batches.
    pub state_dir: String,
    /// Where rows come from.
    pub source: SourceSpec,
    /// Optional Polars SQL over the extracted batch, named `batch`.
    pub transform: Option<TransformSpec>,
    /// Where rows go.
    pub target: TargetSpec,
    /// Late-arrival handling (needs `source.event_time`).
    pub late: LateSpec,
}

/// The `[source]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Source kind; only `parquet` so far.
    pub kind: SourceKind,
    /// Absolute directory of `*.parquet` files, or an absolute glob.
    pub path: String,
    /// The watermark column.
    pub cursor: String,
    /// Declared cursor type; inferred from the schema when `None`.
    pub cursor_type: Option<CursorType>,
    /// Re-read window for late data.
    pub lookback: Lookback,
    /// Lower bound of the first run, as written (resolved against the cursor type at run time).
    pub initial: Option<String>,
    /// What to do with rows whose cursor is null.
    pub on_null_cursor: OnNullCursor,
    /// Optional event-time column, distinct from the cursor, used to count late rows.
    pub event_time: Option<String>,
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A directory or glob of Parquet files.
    Parquet,
}

/// `on_null_cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNullCursor {
    /// Fail the run, non-retryably, naming the file.
    Error,
    /// Drop such rows, counting them.
    Exclude,
}

/// The `[transform]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformSpec {
    /// Polars SQL; the extracted batch is the table `batch`.
    pub sql: String,
}

/// The `[target]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// Target kind.
    pub kind: TargetKind,
    /// Absolute path of the Delta table or Parquet dataset.
    pub path: String,
    /// Write mode.
    pub mode: WriteMode,
    /// Key columns (required for merge; identify boundary rows in append).
    pub key: Vec<String>,
    /// Partition columns of a table tidemark creates.
    pub partition_by: Vec<String>,
}

/// Target kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A Delta Lake table on the local file system.
    Delta,
    /// A hive-partitioned Parquet dataset on the local file system.
    Parquet,
}

/// Target write modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Upsert on `key`; a matched row is updated only by a version whose cursor is >= its own.
    Merge,
    /// Insert every row; boundary rows already loaded are skipped by key.
    Append,
    /// Replace each partition present in the batch with the batch's rows for it.
    PartitionOverwrite,
}

impl WriteMode {
    /// The spelling used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Merge => "merge",
            WriteMode::Append => "append",
            WriteMode::PartitionOverwrite => "partition_overwrite",
        }
    }
}

/// The `[late]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateSpec {
    /// Where late rows go.
    pub policy: LatePolicy,
    /// Absolute path of the side Delta table for `quarantine`.
    pub quarantine_path: Option<String>,
}

/// Late-row policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Merge late rows like any other (newer cursor still wins).
    Merge,
    /// Write late rows to the quarantine table instead of the target.
    Quarantine,
}
