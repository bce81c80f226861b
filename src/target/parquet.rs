//! The partitioned Parquet dataset target, `mode = "partition_overwrite"`.
//!
//! The dataset is plain hive layout (`<path>/order_date=2026-01-01/part-*.parquet`) that
//! DuckDB, Polars and Spark read directly. Everything tidemark keeps for it lives in a sidecar
//! directory beside the dataset, `<parent>/.<name>.tidemark/`, so no reader globbing the
//! dataset ever sees a staged or replaced file, and every rename stays on one file system:
//!
//! - *stage* splits the batch by the partition columns and writes one file per partition
//!   under `staging/<pipeline>/run-<seq>/data/<partition>/`, then `staged.json` (last: a
//!   staging without it is incomplete and is rebuilt).
//! - *promote*, under an exclusive lock of the dataset, returns the recorded result when the
//!   pipeline's commit marker already holds the run, else writes the intent journal
//!   (`journal.json`: the partitions to publish), then swaps each staged partition directory
//!   with the live one in one `renameat2(RENAME_EXCHANGE)` (a new partition is renamed into
//!   place), and finally writes the marker `commits/<pipeline>.json` with run_seq and the
//!   watermark. A swap is atomic, so a reader sees the whole old or the whole new partition,
//!   never a missing or half-written one. Once the journal exists the commit is decided: any
//!   retry, or the next run's reconcile, rolls it forward (a partition whose live directory
//!   already holds the run's file is done).
//! - The replaced partitions land in the staging directory and are removed with it, after
//!   the watermark is durable.

use super::{CdcApply, CommittedRun, KindRules, Promoted, Target, blocking};
use crate::batch::frame::write_parquet_durable;
use crate::contract;
use crate::error::{EngineError, Result};
use crate::state::fsio;
use crate::state::watermark::Watermark;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tidemark_workflows::payloads::{BatchFile, ColumnInfo, SchemaChange};
use tidemark_workflows::spec::{PipelineSpec, SchemaContract, WriteMode};

/// What a Parquet dataset target accepts.
pub static RULES: KindRules = KindRules {
    title: "Parquet dataset",
    name: "parquet",
    takes_path: true,
    default_mode: WriteMode::PartitionOverwrite,
    refuses: |mode| match mode {
        WriteMode::DeleteInsert => Some(super::delete_insert_is_postgres()),
        WriteMode::PartitionOverwrite => None,
        m => Some((
            format!(
                "{:?} is not supported by the Parquet dataset target: plain Parquet files cannot be updated row by row",
                m.as_str()
            ),
            "use mode = \"partition_overwrite\", or kind = \"delta\" for merge/append",
        )),
    },
    partitions: true,
    partition_pruning: false,
    accepts_change_events: false,
    refuses_object_storage: Some((
        "a Parquet dataset swaps partition directories with renameat2(RENAME_EXCHANGE), which object stores do not have, so its commits cannot be atomic there",
        "use kind = \"delta\" for a table on object storage (its commits are atomic there: a create-only PUT of each log entry), or a local path",
    )),
    deletion_vectors: false,
};

/// The Parquet dataset of one pipeline.
pub struct ParquetTarget {
    spec: PipelineSpec,
}

impl ParquetTarget {
    /// The target of a spec whose `[target]` is a Parquet dataset.
    pub fn of(spec: &PipelineSpec) -> Self {
        ParquetTarget { spec: spec.clone() }
    }
}

fn layout<'a>(spec: &'a PipelineSpec, columns: &'a [ColumnInfo]) -> Layout<'a> {
    Layout {
        partition_by: &spec.target.partition_by,
        key: &spec.target.key,
        cursor: &spec.source.cursor,
        contract: &spec.schema,
        columns,
    }
}

#[async_trait::async_trait]
impl Target for ParquetTarget {
    fn describe(&self) -> String {
        format!("Parquet dataset {}", self.spec.target.path)
    }

    fn commits_every_batch(&self) -> bool {
        true
    }

    async fn committed_run(&self) -> Result<Option<CommittedRun>> {
        let spec = self.spec.clone();
        blocking(move || committed_run(&spec.target.path, &spec.name)).await
    }

    async fn stage(
        &self,
        batch: &BatchFile,
        columns: &[ColumnInfo],
        run_seq: u64,
    ) -> Result<super::Staged> {
        let (spec, batch, columns) = (self.spec.clone(), batch.clone(), columns.to_vec());
        blocking(move || {
            let local = crate::storage::local_batch(&batch.path, &batch.sha256)?;
            let (dests, bytes) = stage(
                local.path(),
                &batch.sha256,
                &spec.target.path,
                &spec.name,
                run_seq,
                layout(&spec, &columns),
            )?;
            Ok(super::Staged {
                locations: dests
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .collect(),
                bytes,
            })
        })
        .await
    }

    async fn promote(
        &self,
        batch: &BatchFile,
        columns: &[ColumnInfo],
        run_seq: u64,
        watermark_json: &str,
        _cdc: Option<CdcApply>,
    ) -> Result<Promoted> {
        let (spec, batch, wm) = (self.spec.clone(), batch.clone(), watermark_json.to_string());
        let columns = columns.to_vec();
        blocking(move || {
            // Re-stages only when the staging is incomplete and promote has not begun.
            let restage = || {
                let local = crate::storage::local_batch(&batch.path, &batch.sha256)?;
                stage_locked(
                    local.path(),
                    &batch.sha256,
                    &spec.target.path,
                    &spec.name,
                    run_seq,
                    layout(&spec, &columns),
                )
                .map(|_| ())
            };
            promote(&spec.target.path, &spec.name, run_seq, &wm, &restage)
        })
        .await
    }

    async fn promote_truncate(&self, _run_seq: u64, _watermark_json: &str) -> Result<Promoted> {
        Err(EngineError::Spec(format!(
            "{} does not take change events (the spec loader refuses such a pipeline)",
            self.describe()
        )))
    }

    async fn cleanup(&self, run_seq: u64) -> Result<()> {
        let (path, name) = (self.spec.target.path.clone(), self.spec.name.clone());
        blocking(move || cleanup(&path, &name, run_seq)).await
    }

    fn clear_staging_before(&self, run_seq: u64) -> Result<()> {
        super::clear_run_dirs_before(&staging_dir(
            &self.spec.target.path,
            &self.spec.name,
            run_seq,
        ))
    }

    async fn truncate(&self) -> Result<Option<i64>> {
        let path = self.spec.target.path.clone();
        blocking(move || truncate(&path)).await?;
        Ok(None)
    }

    async fn read_all(&self) -> Result<DataFrame> {
        let path = self.spec.target.path.clone();
        blocking(move || read_all(&path)).await
    }

    async fn maintain(
        &self,
        _id: &str,
        _m: &tidemark_workflows::spec::MaintenanceSpec,
        dry_run: bool,
        _retention_floor_ms: u64,
    ) -> Result<tidemark_workflows::payloads::MaintainReport> {
        let (path, name) = (self.spec.target.path.clone(), self.spec.name.clone());
        let mut report = tidemark_workflows::payloads::MaintainReport {
            pipeline: name.clone(),
            target: self.describe(),
            dry_run,
            ..Default::default()
        };
        report.notes.push(
            "a Parquet dataset holds one file per partition (each run rewrites the partitions it touches whole): nothing to compact, no log to checkpoint".into(),
        );
        // A journaled commit is rolled forward first; then no staging of the pipeline is
        // live (maintenance holds its id) and what is left is debris of runs that died.
        let cleared = blocking(move || {
            committed_run(&path, &name)?;
            let base = sidecar(&path).join("staging").join(&name);
            let mut found = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&base) {
                for e in rd.flatten() {
                    found.push(e.path());
                }
            }
            if !dry_run {
                for d in &found {
                    fsio::remove_dir_if_exists(d)?;
                }
            }
            Ok(found)
        })
        .await?;
        for d in cleared {
            report.notes.push(format!(
                "{} staging {} of a run that died",
                if dry_run { "would remove" } else { "removed" },
                d.display()
            ));
        }
        Ok(report)
    }

    async fn columns(&self) -> Result<Option<contract::Columns>> {
        let path = self.spec.target.path.clone();
        let mut columns = blocking(move || dataset_columns(&path)).await?;
        // Partition columns live in the directory names, in whatever type the batch has.
        if let Some(c) = &mut columns {
            for p in &self.spec.target.partition_by {
                c.push((p.clone(), DataType::Unknown(Default::default())));
            }
        }
        Ok(columns)
    }

    async fn run_commits(&self) -> Result<Vec<(i64, u64)>> {
        let marker = read_json::<Marker>(&marker_path(&self.spec.target.path, &self.spec.name))?;
        Ok(marker
            .map(|m| (m.run_seq as i64, m.run_seq))
            .into_iter()
            .collect())
    }

    async fn leftovers(&self) -> Result<Vec<String>> {
        // Each partition directory holds exactly one data file (one run's), never two or none.
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.spec.target.path) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let files = std::fs::read_dir(e.path())
                .map(|f| f.flatten().count())
                .unwrap_or(0);
            if files != 1 {
                out.push(format!(
                    "partition {} holds {files} files",
                    e.file_name().to_string_lossy()
                ));
            }
        }
        Ok(out)
    }
}

/// The sidecar directory of a dataset: `<parent>/.<name>.tidemark`.
pub fn sidecar(dataset: &str) -> PathBuf {
    let p = Path::new(dataset);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    p.parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}.tidemark"))
}

/// The staging directory of one run.
pub fn staging_dir(dataset: &str, pipeline: &str, run_seq: u64) -> PathBuf {
    sidecar(dataset)
        .join("staging")
        .join(pipeline)
        .join(format!("run-{run_seq:08}"))
}

fn marker_path(dataset: &str, pipeline: &str) -> PathBuf {
    sidecar(dataset)
        .join("commits")
        .join(format!("{pipeline}.json"))
}

/// The file name a run gives its data file in each partition. It identifies the run that
/// wrote a live partition, which is how a roll-forward knows a swap is already done.
fn data_file_name(run_seq: u64) -> String {
    format!("part-r{run_seq:08}-00000.parquet")
}

/// One partition of a staged batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StagedPartition {
    /// Relative hive path, e.g. `order_date=2026-01-01` or `a=1/b=x`.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Batch rows with a key the partition did not hold.
    #[serde(default)]
    pub inserted: u64,
    /// Batch rows that replaced a live row of the same key.
    #[serde(default)]
    pub updated: u64,
}

/// `staged.json`: a complete staging of one batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Staged {
    batch_sha256: String,
    partitions: Vec<StagedPartition>,
    /// What the schema contract did to the batch and the dataset's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema_change: Option<SchemaChange>,
}

/// `journal.json`: the intent to publish a run. Once written, the run is committed by
/// whoever gets to it first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    pipeline: String,
    run_seq: u64,
    watermark: String,
    partitions: Vec<StagedPartition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema_change: Option<SchemaChange>,
}

/// The dataset's columns (partition columns aside) as of its last commit: `schema.parquet`
/// in the sidecar (an empty file in those columns, installed by every commit), else, for a
/// dataset committed before tidemark kept it, any live file's.
fn schema_file(dataset: &str) -> PathBuf {
    sidecar(dataset).join("schema.parquet")
}

/// The dataset's columns (None: no dataset yet).
pub fn dataset_columns(dataset: &str) -> Result<Option<contract::Columns>> {
    let path = schema_file(dataset);
    let file = if path.is_file() {
        path
    } else {
        match any_live_file(Path::new(dataset)) {
            Some(f) => f,
            None => return Ok(None),
        }
    };
    let f = std::fs::File::open(&file)
        .map_err(|e| EngineError::io(format!("open {}", file.display()), e))?;
    let schema = ParquetReader::new(f)
        .schema()
        .map_err(|e| EngineError::CorruptInput {
            path: file.clone(),
            reason: e.to_string(),
        })?;
    Ok(Some(
        schema
            .iter_values()
            .map(|f| (f.name.to_string(), DataType::from_arrow_field(f)))
            .collect(),
    ))
}

/// `df` in `columns` (name, type) order: a column it lacks is null, one it has in another
/// type is cast, one outside `columns` is left out.
fn shaped(df: DataFrame, columns: &contract::Columns) -> Result<DataFrame> {
    let present = df.schema().clone();
    Ok(df
        .lazy()
        .select(
            columns
                .iter()
                .map(|(c, dtype)| {
                    if present.get(c.as_str()).is_some_and(|t| t == dtype) {
                        col(c.as_str())
                    } else if present.contains(c.as_str()) {
                        col(c.as_str()).strict_cast(dtype.clone())
                    } else {
                        lit(NULL).cast(dtype.clone()).alias(c.as_str())
                    }
                })
                .collect::<Vec<_>>(),
        )
        .collect()?)
}

/// `commits/<pipeline>.json`: the last run published into the dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    pipeline: String,
    run_seq: u64,
    watermark: String,
    /// Rows inserted (new keys).
    rows: u64,
    /// Rows that replaced a live row.
    #[serde(default)]
    updated: u64,
    partitions: u64,
    committed_at: String,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            EngineError::Integrity(format!("{} is not readable: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io(format!("read {}", path.display()), e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("serialisable");
    fsio::write_atomic(path, &bytes)
}

/// Hive-escapes a partition value (as Spark does: `/`, `=`, `%`, `:` and control or
/// non-ASCII bytes become `%XX`); a null is `__HIVE_DEFAULT_PARTITION__`.
pub fn escape_value(value: Option<&str>) -> String {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return "__HIVE_DEFAULT_PARTITION__".into();
    };
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-_. +,;@~".contains(&b);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out == "." || out == ".." {
        return out.replace('.', "%2E");
    }
    out
}

/// Splits `df` by `partition_by`: (hive path, rows without the partition columns).
fn split(df: &DataFrame, partition_by: &[String]) -> Result<Vec<(String, DataFrame)>> {
    for p in partition_by {
        if df.column(p).is_err() {
            return Err(EngineError::Schema(format!(
                "partition column `{p}` is not in the batch (columns: {})",
                df.get_column_names()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if partition_by.len() == df.width() {
        return Err(EngineError::Spec(
            "every column of the batch is a partition column: the data files would be empty".into(),
        ));
    }
    let text_cols: Vec<String> = (0..partition_by.len())
        .map(|i| format!("__tm_part_{i}"))
        .collect();
    let mut with_text = df.clone();
    for (p, t) in partition_by.iter().zip(&text_cols) {
        let s = df
            .column(p)?
            .as_materialized_series()
            .cast(&DataType::String)?
            .with_name(t.as_str().into());
        with_text.with_column(s.into_column())?;
    }
    let groups = with_text.partition_by_stable(text_cols.iter().map(|s| s.as_str()), true)?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut path = PathBuf::new();
        for (p, t) in partition_by.iter().zip(&text_cols) {
            let c = g.column(t)?.str()?.get(0).map(|s| s.to_string());
            path.push(format!(
                "{}={}",
                escape_value(Some(p)),
                escape_value(c.as_deref())
            ));
        }
        let drop: Vec<&str> = partition_by
            .iter()
            .chain(&text_cols)
            .map(|s| s.as_str())
            .collect();
        let data = g.drop_many(drop);
        out.push((path.to_string_lossy().into_owned(), data));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// How a batch maps onto the dataset.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// Partition columns (the hive directories).
    pub partition_by: &'a [String],
    /// Key columns: when set, a partition's new content is its live rows merged with the
    /// batch's (newest cursor wins per key, the batch on ties), so rows the batch does not
    /// carry are kept; when empty, the batch's rows replace the partition.
    pub key: &'a [String],
    /// The cursor column (the merge's "newest").
    pub cursor: &'a str,
    /// The schema contract: how the batch's columns are reconciled with the dataset's.
    pub contract: &'a SchemaContract,
    /// The batch's columns as the manifest describes them (null counts, origins).
    pub columns: &'a [ColumnInfo],
}

/// Stages a batch file: one Parquet file per partition (its full new content), then
/// `staged.json`. A staging that is already complete for this batch, or already being
/// promoted, is left as it is.
///
/// Staging holds the dataset's lock and first checks the commit marker: an attempt that wakes
/// up after its run was published (a zombie) writes nothing, and one paused mid-write holds
/// the others off until it resumes, so no staging is ever written after its run's cleanup.
pub fn stage(
    batch: &Path,
    sha256: &str,
    dataset: &str,
    pipeline: &str,
    run_seq: u64,
    layout: Layout<'_>,
) -> Result<(Vec<PathBuf>, u64)> {
    let _lock = DatasetLock::acquire(dataset, LOCK_WAIT)?;
    if read_json::<Marker>(&marker_path(dataset, pipeline))?.is_some_and(|m| m.run_seq >= run_seq) {
        return Ok((vec![staging_dir(dataset, pipeline, run_seq)], 0));
    }
    stage_locked(batch, sha256, dataset, pipeline, run_seq, layout)
}

/// [`stage`] for a caller that holds the dataset's lock (promote's restage).
pub fn stage_locked(
    batch: &Path,
    sha256: &str,
    dataset: &str,
    pipeline: &str,
    run_seq: u64,
    layout: Layout<'_>,
) -> Result<(Vec<PathBuf>, u64)> {
    let dir = staging_dir(dataset, pipeline, run_seq);
    if dir.join("journal.json").exists() {
        // Promote has begun: the staged partitions may already be live.
        return Ok((vec![dir], 0));
    }
    if let Some(s) = read_json::<Staged>(&dir.join("staged.json"))?
        && s.batch_sha256 == sha256
        && s.partitions.iter().all(|p| {
            dir.join("data")
                .join(&p.path)
                .join(data_file_name(run_seq))
                .is_file()
        })
    {
        return Ok((vec![dir], 0));
    }
    let actual = fsio::sha256_file(batch)?;
    if actual != sha256 {
        return Err(EngineError::Integrity(format!(
            "batch {} has checksum {actual}, the manifest says {sha256}",
            batch.display()
        )));
    }
    fsio::remove_dir_if_exists(&dir)?;
    let df = read_parquet(batch)?;
    // The schema contract, against the dataset's columns (partition columns are the layout,
    // outside it): the batch and every partition it rewrites are written in the result.
    let data_cols: contract::Columns = df
        .schema()
        .iter()
        .filter(|(n, _)| !layout.partition_by.iter().any(|p| p == n.as_str()))
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let (columns, schema_change) = match dataset_columns(dataset)? {
        None => (data_cols, None),
        Some(table) => {
            let batch = contract::Batch::of_manifest(
                layout.columns,
                &data_cols,
                df.height() as u64,
                "the batch".into(),
                false,
            );
            let r = contract::against_table(
                layout.contract,
                &table,
                &format!("the Parquet dataset {dataset}"),
                &batch,
            )?;
            let mut record = r.record.clone();
            if record.changes_table() {
                record.applied = Some(
                    "new partitions and the partitions this run rewrites carry the new schema; other partitions keep theirs".into(),
                );
            }
            (r.table, (!record.is_empty()).then_some(record))
        }
    };
    let mut with_parts = columns.clone();
    for p in layout.partition_by {
        if let Ok(c) = df.column(p) {
            with_parts.push((p.clone(), c.dtype().clone()));
        }
    }
    let df = shaped(df, &with_parts)?;
    let parts = split(&df, layout.partition_by)?;
    let mut staged = Vec::with_capacity(parts.len());
    let mut bytes = 0;
    for (i, (path, batch_part)) in parts.into_iter().enumerate() {
        let live = read_partition(&Path::new(dataset).join(&path))?
            .map(|l| shaped(l, &columns))
            .transpose()?;
        let (mut data, inserted, updated) = merge_partition(live, batch_part, &layout, &path)?;
        let file = dir.join("data").join(&path).join(data_file_name(run_seq));
        write_parquet_durable(&mut data, &file, &[])?;
        bytes += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if i == 0 {
            crate::crash::point("mid_stage");
        }
        staged.push(StagedPartition {
            path,
            rows: data.height() as u64,
            inserted,
            updated,
        });
    }
    // The dataset's columns after this commit, installed with it.
    let mut schema = DataFrame::empty_with_schema(&Schema::from_iter(
        columns
            .iter()
            .map(|(n, t)| Field::new(n.as_str().into(), t.clone())),
    ));
    write_parquet_durable(&mut schema, &dir.join("schema.parquet"), &[])?;
    write_json(
        &dir.join("staged.json"),
        &Staged {
            batch_sha256: sha256.to_string(),
            partitions: staged,
            schema_change,
        },
    )?;
    Ok((vec![dir], bytes))
}

/// The live rows of a partition (None when the partition does not exist).
fn read_partition(dir: &Path) -> Result<Option<DataFrame>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let mut out: Option<DataFrame> = None;
    for f in files {
        let df = read_parquet(&f)?;
        match &mut out {
            None => out = Some(df),
            Some(acc) => {
                acc.vstack_mut_owned(df)?;
            }
        }
    }
    Ok(out)
}

/// The new content of one partition: the batch's rows, merged into the live rows by key when
/// the spec has a key. Returns (rows, inserted, updated).
fn merge_partition(
    live: Option<DataFrame>,
    batch: DataFrame,
    layout: &Layout<'_>,
    path: &str,
) -> Result<(DataFrame, u64, u64)> {
    let batch_rows = batch.height() as u64;
    let Some(live) = live.filter(|l| l.height() > 0) else {
        return Ok((batch, batch_rows, 0));
    };
    if layout.key.is_empty() {
        return Ok((batch, batch_rows, live.height() as u64));
    }
    let shape = |df: &DataFrame| -> Vec<(String, DataType)> {
        df.schema()
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    };
    if shape(&live) != shape(&batch) {
        let show = |v: Vec<(String, DataType)>| {
            v.iter()
                .map(|(n, t)| format!("{n}: {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(EngineError::Schema(format!(
            "the batch's columns ({}) differ from the dataset's partition {path} ({}); reset the pipeline with a new dataset path to change them",
            show(shape(&batch)),
            show(shape(&live))
        )));
    }
    const SRC: &str = "__tm_src";
    let live_rows = live.height() as u64;
    let mut order = vec![SRC];
    if batch.column(layout.cursor).is_ok() {
        order.insert(0, layout.cursor);
    }
    let merged = concat(
        [
            live.lazy().with_column(lit(false).alias(SRC)),
            batch.lazy().with_column(lit(true).alias(SRC)),
        ],
        UnionArgs::default(),
    )?
    .sort(order, SortMultipleOptions::default())
    .unique_stable_generic(
        Some(layout.key.iter().map(|k| col(k.as_str())).collect()),
        UniqueKeepStrategy::Last,
    )
    .collect()?;
    let kept_batch = merged.column(SRC)?.bool()?.sum().unwrap_or(0) as u64;
    let inserted = (merged.height() as u64).saturating_sub(live_rows);
    let merged = merged.drop(SRC)?;
    Ok((merged, inserted, kept_batch.saturating_sub(inserted)))
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| EngineError::CorruptInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// An exclusive lock of a dataset's sidecar, held by one promote or reconcile at a time.
/// The kernel releases it when its process dies, so a killed worker never wedges the
/// dataset; a paused one holds it until it resumes, and other attempts retry meanwhile.
struct DatasetLock {
    _file: std::fs::File,
}

impl DatasetLock {
    fn acquire(dataset: &str, wait: Duration) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let path = sidecar(dataset).join("lock");
        std::fs::create_dir_all(sidecar(dataset))
            .map_err(|e| EngineError::io(format!("create {}", sidecar(dataset).display()), e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DatasetLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(EngineError::io(format!("lock {}", path.display()), err));
            }
            if Instant::now() >= deadline {
                return Err(EngineError::io(
                    format!(
                        "lock {}: another attempt is publishing into this dataset (retrying)",
                        path.display()
                    ),
                    err,
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Publishes a staged run. Blocking. `restage` is called under the lock (so it must use
/// [`stage_locked`]), once the run is known not to be published yet and no journal exists, to
/// rebuild a missing or incomplete staging.
pub fn promote(
    dataset: &str,
    pipeline: &str,
    run_seq: u64,
    watermark_json: &str,
    restage: &dyn Fn() -> Result<()>,
) -> Result<Promoted> {
    promote_until(dataset, pipeline, run_seq, watermark_json, restage, None)
}

/// [`promote`] that stops, as a crash would, after `stop_after` partition swaps (before the
/// marker). For tests of the roll-forward; `None` runs to completion.
#[doc(hidden)]
pub fn promote_until(
    dataset: &str,
    pipeline: &str,
    run_seq: u64,
    watermark_json: &str,
    restage: &dyn Fn() -> Result<()>,
    stop_after: Option<usize>,
) -> Result<Promoted> {
    let _lock = DatasetLock::acquire(dataset, LOCK_WAIT)?;
    if let Some(m) = read_json::<Marker>(&marker_path(dataset, pipeline))?
        && m.run_seq >= run_seq
    {
        return Ok(Promoted {
            version: (m.run_seq == run_seq).then_some(run_seq as i64),
            already: true,
            inserted: if m.run_seq == run_seq { m.rows } else { 0 },
            updated: if m.run_seq == run_seq { m.updated } else { 0 },
            deleted: 0,
            schema: None,
        });
    }
    let dir = staging_dir(dataset, pipeline, run_seq);
    let journal = match read_json::<Journal>(&dir.join("journal.json"))? {
        Some(j) => j,
        None => {
            restage()?;
            let staged = read_json::<Staged>(&dir.join("staged.json"))?.ok_or_else(|| {
                EngineError::Integrity(format!(
                    "{} holds no complete staging of run {run_seq}",
                    dir.display()
                ))
            })?;
            let j = Journal {
                pipeline: pipeline.to_string(),
                run_seq,
                watermark: watermark_json.to_string(),
                partitions: staged.partitions,
                schema_change: staged.schema_change,
            };
            write_json(&dir.join("journal.json"), &j)?;
            j
        }
    };
    crate::crash::point("promote_before_commit");
    roll_forward(dataset, &dir, &journal, stop_after)?;
    Ok(Promoted {
        version: Some(run_seq as i64),
        already: false,
        inserted: journal.partitions.iter().map(|p| p.inserted).sum(),
        updated: journal.partitions.iter().map(|p| p.updated).sum(),
        deleted: 0,
        schema: journal.schema_change.clone(),
    })
}

/// Completes a journaled commit: swaps every partition not yet live, then writes the marker.
fn roll_forward(dataset: &str, dir: &Path, j: &Journal, stop_after: Option<usize>) -> Result<u64> {
    let root = Path::new(dataset);
    std::fs::create_dir_all(root).map_err(|e| EngineError::io(format!("create {dataset}"), e))?;
    let file = data_file_name(j.run_seq);
    for (i, p) in j.partitions.iter().enumerate() {
        if stop_after == Some(i) {
            return Ok(0);
        }
        let live = root.join(&p.path);
        let staged = dir.join("data").join(&p.path);
        if live.join(&file).is_file() {
            continue; // swapped by an earlier attempt
        }
        if !staged.join(&file).is_file() {
            return Err(EngineError::Integrity(format!(
                "partition {} of run {} is neither live nor staged ({})",
                p.path,
                j.run_seq,
                staged.display()
            )));
        }
        let parent = live.parent().expect("partition path has a parent");
        std::fs::create_dir_all(parent)
            .map_err(|e| EngineError::io(format!("create {}", parent.display()), e))?;
        swap_in(&staged, &live)?;
        fsio::sync_dir(parent)?;
        fsio::sync_dir(staged.parent().expect("staged path has a parent"))?;
    }
    // The dataset's columns as of this commit (a journal from before tidemark kept them has
    // none staged).
    let staged_schema = dir.join("schema.parquet");
    if staged_schema.is_file() {
        fsio::copy_durable(&staged_schema, &schema_file(dataset), None)?;
    }
    let rows = j.partitions.iter().map(|p| p.inserted).sum();
    let updated = j.partitions.iter().map(|p| p.updated).sum();
    write_json(
        &marker_path(dataset, &j.pipeline),
        &Marker {
            pipeline: j.pipeline.clone(),
            run_seq: j.run_seq,
            watermark: j.watermark.clone(),
            rows,
            updated,
            partitions: j.partitions.len() as u64,
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    )?;
    Ok(rows)
}

/// Puts `staged` at `live` atomically: exchanged with the live directory when there is one
/// (the old partition ends up at `staged`), renamed into place otherwise.
fn swap_in(staged: &Path, live: &Path) -> Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths");
    let (from, to) = (c(staged), c(live));
    let rename2 = |flags: libc::c_uint| -> std::io::Result<()> {
        // SAFETY: two valid NUL-terminated paths, AT_FDCWD.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let ctx = |what: &str, e| {
        EngineError::io(
            format!("{what} {} with {}", staged.display(), live.display()),
            e,
        )
    };
    let result = if live.exists() {
        rename2(libc::RENAME_EXCHANGE)
    } else {
        rename2(libc::RENAME_NOREPLACE)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            // No renameat2 on this file system: move the old directory aside first. A
            // reader may find the partition missing between the two renames (documented).
            tracing::warn!(path = %live.display(), "renameat2 unsupported; swapping with two renames");
            let aside = staged.with_extension("old");
            if live.exists() {
                std::fs::rename(live, &aside).map_err(|e| ctx("move aside", e))?;
            }
            std::fs::rename(staged, live).map_err(|e| ctx("rename", e))?;
            if aside.exists() {
                std::fs::rename(&aside, staged).map_err(|e| ctx("move back", e))?;
            }
            Ok(())
        }
        Err(e) => Err(ctx("exchange", e)),
    }
}

fn any_live_file(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            if let Some(f) = any_live_file(&path) {
                return Some(f);
            }
        } else if name.ends_with(".parquet") {
            return Some(path);
        }
    }
    None
}

/// The last run published into the dataset, after rolling forward any journaled commit
/// that an attempt left half done.
pub fn committed_run(dataset: &str, pipeline: &str) -> Result<Option<CommittedRun>> {
    if !sidecar(dataset).is_dir() {
        return Ok(None);
    }
    let _lock = DatasetLock::acquire(dataset, LOCK_WAIT)?;
    let mut marker = read_json::<Marker>(&marker_path(dataset, pipeline))?;
    let done = marker.as_ref().map_or(0, |m| m.run_seq);
    let runs = sidecar(dataset).join("staging").join(pipeline);
    let mut pending: Vec<Journal> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&runs) {
        for e in entries.flatten() {
            if let Some(j) = read_json::<Journal>(&e.path().join("journal.json"))?
                && j.run_seq > done
            {
                pending.push(j);
            }
        }
    }
    pending.sort_by_key(|j| j.run_seq);
    if let Some(j) = pending.pop() {
        tracing::warn!(
            pipeline,
            run_seq = j.run_seq,
            "rolling forward a half-published run"
        );
        roll_forward(
            dataset,
            &staging_dir(dataset, pipeline, j.run_seq),
            &j,
            None,
        )?;
        marker = read_json::<Marker>(&marker_path(dataset, pipeline))?;
    }
    Ok(marker.map(|m| CommittedRun {
        run_seq: m.run_seq,
        version: m.run_seq as i64,
        watermark: Watermark::from_json(&m.watermark).ok(),
        rows_inserted: m.rows,
        rows_updated: m.updated,
        rows_deleted: 0,
    }))
}

/// Removes a run's staging (which holds the partitions it replaced), unless its commit is
/// journaled but not yet marked: that one is rolled forward by the next reconcile.
pub fn cleanup(dataset: &str, pipeline: &str, run_seq: u64) -> Result<()> {
    let dir = staging_dir(dataset, pipeline, run_seq);
    if dir.join("journal.json").exists() {
        let marked = read_json::<Marker>(&marker_path(dataset, pipeline))?
            .is_some_and(|m| m.run_seq >= run_seq);
        if !marked {
            tracing::warn!(
                pipeline,
                run_seq,
                "keeping a journaled staging for roll-forward"
            );
            return Ok(());
        }
    }
    fsio::remove_dir_if_exists(&dir)
}

/// Removes every partition and file of the dataset, under its lock (the sidecar and its
/// commit marker stay, so run numbering goes on). Returns the entries removed.
pub fn truncate(dataset: &str) -> Result<u64> {
    let root = Path::new(dataset);
    if !root.is_dir() {
        return Ok(0);
    }
    let _lock = DatasetLock::acquire(dataset, LOCK_WAIT)?;
    let mut removed = 0;
    let entries =
        std::fs::read_dir(root).map_err(|e| EngineError::io(format!("list {dataset}"), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io(format!("list {dataset}"), e))?;
        let path = entry.path();
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| EngineError::io(format!("remove {}", path.display()), e))?;
        removed += 1;
    }
    fsio::sync_dir(root)?;
    Ok(removed)
}

/// Reads the whole dataset (hive partition columns included) — for tests, the demo, audit
/// checks and the chaos oracle. Partitions written before and after a schema change are
/// unified by column name: a column a partition lacks reads as null, a narrower type as the
/// wider one.
pub fn read_all(dataset: &str) -> Result<DataFrame> {
    let mut files = Vec::new();
    collect_live_files(Path::new(dataset), &mut files);
    if files.is_empty() {
        return Ok(DataFrame::empty());
    }
    files.sort();
    let mut frames = Vec::with_capacity(files.len());
    for f in &files {
        let args = ScanArgsParquet {
            hive_options: HiveOptions::new_enabled(),
            ..Default::default()
        };
        let path = f.to_string_lossy().into_owned();
        frames.push(LazyFrame::scan_parquet(
            PlRefPath::new(path.as_str()),
            args,
        )?);
    }
    let all = concat(
        frames,
        UnionArgs {
            diagonal: true,
            to_supertypes: true,
            ..Default::default()
        },
    )?;
    Ok(all.collect()?)
}

/// Every data file under `dir` (hidden and `_` entries aside).
fn collect_live_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            collect_live_files(&path, out);
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_hive_escaped() {
        assert_eq!(escape_value(Some("2026-01-01")), "2026-01-01");
        assert_eq!(escape_value(Some("a/b=c")), "a%2Fb%3Dc");
        assert_eq!(escape_value(Some("10:30")), "10%3A30");
        assert_eq!(escape_value(None), "__HIVE_DEFAULT_PARTITION__");
    }

    #[test]
    fn the_sidecar_sits_beside_the_dataset() {
        assert_eq!(
            sidecar("/lake/orders"),
            PathBuf::from("/lake/.orders.tidemark")
        );
    }
}
