//! tidemark's own copy-on-write MERGE into a Delta table, for row pipelines in merge mode.
//!
//! delta-rs's MERGE joins the whole (pruned) target with the batch in DataFusion and writes
//! every row of every file it scanned through one plan. This module makes the same commit
//! with less work, in Polars:
//!
//! 1. **candidates**: the table's files, pruned by partition when a key's partition values
//!    cannot change (the spec's `partition_stable`, or partition columns that are part of
//!    the key), and by the min/max statistics of an integer key;
//! 2. **probe**: only the key columns of the candidates are read and joined with the batch's
//!    keys, which says which file holds which batch key;
//! 3. **rewrite**: a file is rewritten only when one of its rows loses to the batch (newer
//!    cursor, or an equal cursor with different contents); its other rows are copied. A
//!    file whose matched rows all win stays as it is, so a re-read through the lookback
//!    costs one key probe;
//! 4. **insert**: batch rows whose key no file holds, written partitioned;
//! 5. **one commit**: remove + add actions with the run's `txn` and metadata, and a read
//!    predicate (the partitions and key range read) for Delta's conflict checker, made from
//!    the same table state the caller checked the token in (so a zombie is fenced).
//!
//! The matching rule is the delta-rs MERGE's (`update when s.cursor > t.cursor or (equal and
//! some column IS DISTINCT FROM)`, insert when not matched), so both paths give the same
//! table. Tables this module does not handle (column mapping, change data feed, CHECK
//! constraints, generated or identity columns, an append-only table, partition columns other
//! than integers, strings and dates, files outside the table directory) go to delta-rs's
//! MERGE: [`unsupported`] says why.
//!
//! **Merge-on-read** (`[target] deletion_vectors = true`, on a table with the feature): step
//! 3 rewrites nothing. The losing rows' physical positions are added to their file's deletion
//! vector (one new DV file per commit for all touched files, `dv.rs`), the file is committed
//! again as `remove` + `add` (same path, new DV, `tightBounds: false`), and the winning
//! versions are written with the inserts into new files: a run writes the new data, not the
//! files it touches. Existing deletion vectors (tidemark's or any writer's) are honoured in
//! every scan (`files.rs`), and a copy-on-write rewrite drops the rows they delete.

use crate::error::{EngineError, Result};
use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::operations::write::configs::WriterStatsConfig;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::table::config::TablePropertiesExt;
use polars::prelude::*;
use roaring::RoaringTreemap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::adopt;
use super::dv;
use super::files::{ROW_COL, TableFile, load_deleted, scan_file, table_files};

const FILE_COL: &str = "__tm_file";
const HIT_COL: &str = "__tm_hit";
const S_PREFIX: &str = "__tm_s:";

/// What one rewrite MERGE needs.
pub struct RewriteMerge<'a> {
    /// The table, loaded once: its state is the one the run's token was checked in.
    pub table: &'a DeltaTable,
    /// Table directory.
    pub table_dir: &'a str,
    /// The staged batch (one row per key).
    pub staged: &'a Path,
    /// Key columns.
    pub key: &'a [String],
    /// Cursor column.
    pub cursor: &'a str,
    /// The spec promises that a key's partition values never change.
    pub partition_stable: bool,
    /// The run's idempotency token.
    pub txn: Transaction,
    /// The run's commit metadata.
    pub metadata: Vec<(String, serde_json::Value)>,
    /// The MERGE's join and update predicates, for the commit's operation parameters.
    pub on: &'a str,
    /// See [`RewriteMerge::on`].
    pub newer: &'a str,
    /// The schema change this commit carries (`[schema]`), if any.
    pub evolution: Option<&'a Evolution>,
    /// Delete losing rows with deletion vectors (merge-on-read) instead of rewriting their
    /// files: the spec asks for it and the table has the feature enabled.
    pub deletion_vectors: bool,
    /// The staged file's own Arrow schema (from its footer): whether it can become a data
    /// file as it is when every batch row is an insert (`adopt.rs`).
    pub staged_schema: &'a SchemaRef,
}

/// A schema change a commit carries (`[schema]`): the table's metadata with the evolved
/// schema (same table id), that schema as Arrow (what the commit's files are written in), and
/// whether every file must be rewritten in it (a column was widened: Delta without the
/// `typeWidening` feature, which delta-rs 1.1 can neither read nor write, requires each data
/// file to store the column's current type).
pub struct Evolution {
    /// The `metaData` action.
    pub metadata: deltalake::kernel::Metadata,
    /// The evolved schema.
    pub arrow: SchemaRef,
    /// A column was widened: every data file is rewritten in the commit.
    pub rewrite_all: bool,
}

/// The schema change a resolution makes to `t`: widened columns take the batch's type
/// (`batch` is the staged batch's Arrow schema), added columns come last, nullable. None when
/// the table's schema does not change.
pub fn evolve(
    t: &DeltaTable,
    r: &crate::contract::Resolution,
    batch: &SchemaRef,
) -> Result<Option<Evolution>> {
    use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
    use deltalake::kernel::{MetadataExt, StructField, StructType};
    if !r.changes_table() {
        return Ok(None);
    }
    let snapshot = snapshot_of(t)?;
    let table = t.table_url().to_string();
    let kernel_type = |name: &str| -> Result<deltalake::kernel::DataType> {
        let field = batch.field_with_name(name).map_err(|_| {
            EngineError::Schema(format!("column `{name}` is not in the staged batch"))
        })?;
        // Delta stores timestamps in microseconds; a naive one is UTC (a `timestamp_ntz`
        // column would need a protocol upgrade).
        let arrow = match field.data_type() {
            deltalake::arrow::datatypes::DataType::Timestamp(_, _) => {
                deltalake::arrow::datatypes::DataType::Timestamp(
                    deltalake::arrow::datatypes::TimeUnit::Microsecond,
                    Some("UTC".into()),
                )
            }
            other => other.clone(),
        };
        (&arrow).try_into_kernel().map_err(|e| {
            EngineError::Schema(format!(
                "column `{name}` ({arrow}) has no Delta type: {e}; cast it in [transform]"
            ))
        })
    };
    let mut fields: Vec<StructField> = snapshot.schema().fields().cloned().collect();
    for (name, _, _) in &r.widened {
        let to = kernel_type(name)?;
        if let Some(f) = fields.iter_mut().find(|f| &f.name == name) {
            f.data_type = to;
        }
    }
    for (name, _) in &r.added {
        fields.push(StructField::nullable(name.clone(), kernel_type(name)?));
    }
    let schema = StructType::try_new(fields).map_err(|e| {
        EngineError::Schema(format!("the evolved schema of {table} is invalid: {e}"))
    })?;
    let metadata = snapshot
        .metadata()
        .clone()
        .with_schema(&schema)
        .map_err(|e| EngineError::Schema(format!("the evolved schema of {table}: {e}")))?;
    let arrow: deltalake::arrow::datatypes::Schema = (&schema)
        .try_into_arrow()
        .map_err(|e| EngineError::Schema(format!("the evolved schema of {table}: {e}")))?;
    Ok(Some(Evolution {
        metadata,
        arrow: Arc::new(arrow),
        rewrite_all: !r.widened.is_empty(),
    }))
}

/// The Polars schema of an Arrow schema (through an empty IPC batch, so the two libraries
/// agree on every type).
fn polars_schema_of(arrow: &SchemaRef) -> Result<Schema> {
    let df = arrow_to_polars(&[RecordBatch::new_empty(arrow.clone())])?;
    Ok(df.schema().as_ref().clone())
}

/// The table's columns and their Polars types (what the schema contract compares).
pub fn table_columns(t: &DeltaTable) -> Result<crate::contract::Columns> {
    Ok(table_polars_schema(t)?
        .iter()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect())
}

/// The staged batch's columns and their Polars types.
pub fn batch_columns(arrow: &SchemaRef) -> Result<crate::contract::Columns> {
    Ok(polars_schema_of(arrow)?
        .iter()
        .map(|(n, d)| (n.to_string(), d.clone()))
        .collect())
}

/// What the MERGE did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteOutcome {
    /// The new table version (None: nothing changed, no commit).
    pub version: Option<i64>,
    /// Batch rows inserted.
    pub inserted: u64,
    /// Target rows replaced by a winning batch row.
    pub updated: u64,
    /// Files whose key columns were probed.
    pub files_probed: usize,
    /// Files rewritten (removed and added again).
    pub files_rewritten: usize,
    /// Files added (rewrites and inserts).
    pub files_added: usize,
    /// Parquet bytes of the rewritten files (read whole) and the staged batch.
    pub bytes_read: u64,
    /// Parquet bytes written (and deletion-vector bytes).
    pub bytes_written: u64,
    /// Merge-on-read: files whose losing rows a deletion vector now deletes.
    pub files_deleted_from: usize,
    /// Merge-on-read: bytes of the deletion-vector file written.
    pub dv_bytes: u64,
    /// Write once: the staged batch became a data file as it is (every row an insert).
    pub adopted: bool,
    /// Write once, partitioned: data files copied from the staged batch's row groups (one
    /// per partition whose every batch row this commit writes).
    pub files_copied: usize,
    /// Milliseconds per phase: prepare (batch, file list), probe, rewrite (wall), of which
    /// rewrite_compute and rewrite_write (summed over the parallel lanes), insert, commit.
    pub phase_ms: std::collections::BTreeMap<&'static str, u64>,
}

fn snapshot_of(t: &DeltaTable) -> Result<&deltalake::table::state::DeltaTableState> {
    t.snapshot()
        .map_err(|e| EngineError::delta(t.table_url().as_str(), e))
}

/// Why a table needs delta-rs's MERGE instead (None: this module handles it).
pub fn unsupported(t: &DeltaTable) -> Result<Option<String>> {
    let snapshot = snapshot_of(t)?;
    let props = snapshot.table_config();
    if props.append_only() {
        return Ok(Some("the table is append-only".into()));
    }
    if props.enable_change_data_feed() {
        return Ok(Some("the table records a change data feed".into()));
    }
    if !props.get_constraints().is_empty() {
        return Ok(Some("the table has CHECK constraints".into()));
    }
    let config = snapshot.metadata().configuration();
    if config
        .get("delta.columnMapping.mode")
        .is_some_and(|m| m != "none")
    {
        return Ok(Some("the table uses column mapping".into()));
    }
    for f in snapshot.schema().fields() {
        if f.metadata().keys().any(|k| {
            k.starts_with("delta.generationExpression")
                || k.starts_with("delta.identity")
                || k.starts_with("delta.invariants")
        }) {
            return Ok(Some(format!(
                "column `{}` is generated, an identity or has an invariant",
                f.name()
            )));
        }
    }
    let schema = table_polars_schema(t)?;
    for p in snapshot.metadata().partition_columns() {
        match schema.get(p.as_str()) {
            Some(d) if d.is_integer() || matches!(d, DataType::String | DataType::Date) => {}
            Some(d) => return Ok(Some(format!("partition column `{p}` is of type {d}"))),
            None => return Ok(Some(format!("partition column `{p}` is not in the schema"))),
        }
    }
    for f in snapshot.log_data().iter() {
        if f.path().contains("://") || f.path().starts_with('/') {
            return Ok(Some(format!(
                "file {} is outside the table directory",
                f.path()
            )));
        }
    }
    Ok(None)
}

/// The table's schema as Polars sees it: an empty batch of the table's Arrow schema through
/// an IPC stream, so the two libraries agree on every type.
pub fn table_schema(t: &DeltaTable) -> Result<Schema> {
    table_polars_schema(t)
}

fn table_polars_schema(t: &DeltaTable) -> Result<Schema> {
    let arrow_schema = table_arrow_schema(t)?;
    let empty = RecordBatch::new_empty(arrow_schema);
    let df = arrow_to_polars(&[empty])?;
    Ok(df.schema().as_ref().clone())
}

pub(super) fn table_arrow_schema(t: &DeltaTable) -> Result<SchemaRef> {
    Ok(snapshot_of(t)?.snapshot().arrow_schema())
}

/// Arrow record batches (what delta-rs reads) as one Polars frame, through Arrow IPC.
pub fn arrow_to_polars(batches: &[RecordBatch]) -> Result<DataFrame> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| EngineError::Integrity("no Arrow batch to convert".into()))?;
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema)
            .map_err(|e| EngineError::Integrity(format!("Arrow IPC: {e}")))?;
        for b in batches {
            w.write(b)
                .map_err(|e| EngineError::Integrity(format!("Arrow IPC: {e}")))?;
        }
        w.finish()
            .map_err(|e| EngineError::Integrity(format!("Arrow IPC: {e}")))?;
    }
    Ok(IpcStreamReader::new(std::io::Cursor::new(buf)).finish()?)
}

/// A Polars frame as Arrow batches of exactly the table's Arrow schema (Polars' large
/// strings and any narrower integer are cast to the table's types).
fn polars_to_arrow(df: &mut DataFrame, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let mut buf = Vec::new();
    IpcStreamWriter::new(&mut buf)
        .with_compat_level(CompatLevel::oldest())
        .finish(df)?;
    let reader =
        deltalake::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(buf), None)
            .map_err(|e| EngineError::Integrity(format!("Arrow IPC: {e}")))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| EngineError::Integrity(format!("Arrow IPC: {e}")))?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let c = b.column_by_name(field.name()).ok_or_else(|| {
                EngineError::Schema(format!("column `{}` is missing", field.name()))
            })?;
            let c = if c.data_type() == field.data_type() {
                c.clone()
            } else {
                deltalake::arrow::compute::cast(c, field.data_type()).map_err(|e| {
                    EngineError::Schema(format!(
                        "column `{}` ({}) does not fit the table's type {}: {e}",
                        field.name(),
                        c.data_type(),
                        field.data_type()
                    ))
                })?
            };
            columns.push(c);
        }
        out.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
            EngineError::Schema(format!("the rows do not fit the table's schema: {e}"))
        })?);
    }
    Ok(out)
}

fn key_exprs(key: &[String]) -> Vec<Expr> {
    key.iter().map(|k| col(k.as_str())).collect()
}

/// Does the batch's version of a matched row win? The delta-rs MERGE's rule, vectorised.
fn wins(columns: &[String], key: &[String], cursor: &str) -> Expr {
    // Key columns are joined on, not renamed (a cursor that is part of the key is equal on
    // both sides: such a row only wins by a differing column).
    let s = |c: &str| {
        if key.iter().any(|k| k == c) {
            col(c)
        } else {
            col(format!("{S_PREFIX}{c}"))
        }
    };
    let mut differs: Option<Expr> = None;
    for c in columns
        .iter()
        .filter(|c| !key.contains(c) && c.as_str() != cursor)
    {
        let d = s(c).neq_missing(col(c.as_str()));
        differs = Some(match differs {
            None => d,
            Some(acc) => acc.or(d),
        });
    }
    let newer = s(cursor).gt(col(cursor));
    let rule = match differs {
        None => newer,
        Some(d) => newer.or(s(cursor).eq(col(cursor)).and(d)),
    };
    col(HIT_COL).is_not_null().and(rule.fill_null(lit(false)))
}

/// A partition's values as a comparable key: a file's (owned, from the log) and a batch row's
/// (borrowed from the frame) compare equal when the values are.
pub(super) fn partition_tuple(values: Vec<AnyValue>) -> String {
    let owned: Vec<AnyValue<'static>> = values.into_iter().map(|v| v.into_static()).collect();
    format!("{owned:?}")
}

fn file_partition(f: &TableFile) -> Vec<AnyValue<'_>> {
    f.partition.iter().map(|(_, v)| v.clone()).collect()
}

/// Files that may hold a batch key, before any file is read.
fn candidates<'f>(
    files: &'f [TableFile],
    batch: &DataFrame,
    prune_partitions: bool,
    int_key: Option<&str>,
) -> Result<Vec<&'f TableFile>> {
    let mut keep: Vec<&TableFile> = files.iter().collect();
    if prune_partitions && let Some(first) = files.first() {
        let names: Vec<&str> = first.partition.iter().map(|(n, _)| n.as_str()).collect();
        if !names.is_empty() {
            let tuples = batch.select(names.iter().copied())?.unique_stable(
                None,
                UniqueKeepStrategy::First,
                None,
            )?;
            let mut present = std::collections::HashSet::new();
            for i in 0..tuples.height() {
                present.insert(partition_tuple(tuples.get_row(i)?.0));
            }
            keep.retain(|f| present.contains(&partition_tuple(file_partition(f))));
        }
    }
    if let Some(k) = int_key {
        let mut keys: Vec<i64> = batch
            .column(k)?
            .cast(&DataType::Int64)?
            .i64()?
            .into_no_null_iter()
            .collect();
        keys.sort_unstable();
        keep.retain(|f| match f.key_range {
            None => true,
            Some((lo, hi)) => {
                let at = keys.partition_point(|&v| v < lo);
                keys.get(at).is_some_and(|&v| v <= hi)
            }
        });
    }
    Ok(keep)
}

/// SQL literal of a partition value for the conflict checker's read predicate.
fn sql_literal(v: &AnyValue) -> Option<String> {
    Some(match v {
        AnyValue::String(s) => format!("'{}'", s.replace('\'', "''")),
        AnyValue::StringOwned(s) => format!("'{}'", s.replace('\'', "''")),
        AnyValue::Date(d) => format!(
            "'{}'",
            chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)?.format("%Y-%m-%d")
        ),
        v if v.is_integer() => v.to_string(),
        _ => return None,
    })
}

/// The part of the table this MERGE read, as a predicate Delta's conflict checker tests
/// concurrent commits against (None: the whole table).
fn read_predicate(
    batch: &DataFrame,
    partition_cols: &[String],
    prune_partitions: bool,
    int_key: Option<&str>,
) -> Result<Option<String>> {
    let mut parts = Vec::new();
    if prune_partitions {
        for p in partition_cols {
            let values = batch.column(p)?.unique()?;
            let mut lits = Vec::new();
            let mut nulls = false;
            for v in values.as_materialized_series().iter() {
                if v.is_null() {
                    nulls = true;
                } else {
                    match sql_literal(&v) {
                        Some(l) => lits.push(l),
                        None => return Ok(None),
                    }
                }
            }
            let q = super::quote(p);
            let mut alts = Vec::new();
            if !lits.is_empty() {
                alts.push(format!("{q} IN ({})", lits.join(", ")));
            }
            if nulls {
                alts.push(format!("{q} IS NULL"));
            }
            parts.push(format!("({})", alts.join(" OR ")));
        }
    }
    if let Some(k) = int_key {
        let c = batch.column(k)?.cast(&DataType::Int64)?;
        let c = c.i64()?;
        if let (Some(lo), Some(hi)) = (c.min(), c.max()) {
            let q = super::quote(k);
            parts.push(format!("({q} >= {lo} AND {q} <= {hi})"));
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join(" AND ")))
}

/// Rows of candidate files read per probe round: the probe's memory follows this, not the
/// table (32 MiB of an integer key).
const PROBE_ROUND_ROWS: u64 = 4_000_000;

/// Which candidate file holds which batch key: the matches as the key columns plus
/// `FILE_COL` (the file's index in `files`). Only the key columns are read, a round of files
/// at a time (up to `round_rows` rows, [`PROBE_ROUND_ROWS`] in a MERGE), so a MERGE into a big table holds one
/// round's keys, not the table's. A single integer key is looked up in a hash set of the
/// batch's keys built once; other keys are joined with the batch's, round by round.
fn probe(
    files: &[&TableFile],
    batch: &DataFrame,
    key: &[String],
    int_key: Option<&str>,
    columns: &[String],
    schema: &Schema,
    round_rows: u64,
) -> Result<DataFrame> {
    let failed = |e: PolarsError| EngineError::Integrity(format!("probing the table's keys: {e}"));
    let mut rounds: Vec<Vec<usize>> = vec![Vec::new()];
    let mut rows = 0u64;
    for (i, f) in files.iter().enumerate() {
        let n = f.physical_rows().unwrap_or(round_rows);
        if rows > 0 && rows + n > round_rows {
            rounds.push(Vec::new());
            rows = 0;
        }
        rounds.last_mut().expect("a round").push(i);
        rows += n;
    }
    let scan_round = |round: &[usize]| -> Result<LazyFrame> {
        let frames = round
            .iter()
            .map(|&i| {
                Ok(scan_file(files[i], columns, schema)?
                    .select(key_exprs(key))
                    .with_column(lit(i as u32).cast(DataType::UInt32).alias(FILE_COL)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(match frames.len() {
            1 => frames.into_iter().next().expect("one frame"),
            _ => concat(frames, UnionArgs::default())?,
        })
    };
    if let Some(k) = int_key {
        let wanted: PlHashSet<i64> = batch
            .column(k)?
            .cast(&DataType::Int64)?
            .i64()?
            .iter()
            .flatten()
            .collect();
        let (mut hit_keys, mut hit_files) = (Vec::new(), Vec::new());
        for round in &rounds {
            let df = scan_round(round)?.collect().map_err(failed)?;
            let keys = df.column(k)?.cast(&DataType::Int64)?;
            let keys = keys.i64()?;
            let file = df.column(FILE_COL)?.u32()?;
            for (v, f) in keys.iter().zip(file.iter()) {
                if let (Some(v), Some(f)) = (v, f)
                    && wanted.contains(&v)
                {
                    hit_keys.push(v);
                    hit_files.push(f);
                }
            }
        }
        let dtype = schema.get(k).cloned().unwrap_or(DataType::Int64);
        return Ok(DataFrame::new_infer_height(vec![
            Series::new(k.into(), hit_keys).strict_cast(&dtype)?.into(),
            Series::new(FILE_COL.into(), hit_files).into(),
        ])?);
    }
    let batch_keys = batch.select(key.iter().map(|k| k.as_str()))?;
    let mut found = Vec::new();
    for round in &rounds {
        found.push(
            scan_round(round)?
                .join(
                    batch_keys.clone().lazy(),
                    key_exprs(key),
                    key_exprs(key),
                    JoinArgs::new(JoinType::Inner),
                )
                .collect()
                .map_err(failed)?
                .lazy(),
        );
    }
    concat(found, UnionArgs::default())?
        .collect()
        .map_err(failed)
}

/// Writes frames into the table directory as Delta data files (split by partition, with
/// statistics), returning their add actions.
pub(super) struct FileSink {
    table: DeltaTable,
    config: WriterConfig,
    arrow_schema: SchemaRef,
}

impl FileSink {
    pub(super) fn new(
        t: &DeltaTable,
        arrow_schema: SchemaRef,
        partition_cols: Vec<String>,
    ) -> Result<Self> {
        let snapshot = snapshot_of(t)?;
        let stats = WriterStatsConfig::from_config(snapshot.snapshot().table_configuration());
        let config = WriterConfig::new(
            arrow_schema.clone(),
            partition_cols,
            None,
            Some(snapshot.table_config().target_file_size()),
            None,
            stats.num_indexed_cols,
            stats.stats_columns,
        );
        Ok(FileSink {
            table: t.clone(),
            config,
            arrow_schema,
        })
    }

    /// Blocking: call from a blocking thread.
    pub(super) fn write(
        &self,
        df: &mut DataFrame,
        handle: &tokio::runtime::Handle,
    ) -> Result<Vec<Action>> {
        let props = writer_properties(df);
        let batches = polars_to_arrow(df, &self.arrow_schema)?;
        let store = self.table.log_store().object_store(None);
        let mut writer = DeltaWriter::new(store, self.config.clone()).with_writer_properties(props);
        let table = self.table.table_url().to_string();
        handle.block_on(async {
            for b in &batches {
                writer
                    .write(b)
                    .await
                    .map_err(|e| EngineError::delta(&table, e))?;
            }
            let adds = writer
                .close()
                .await
                .map_err(|e| EngineError::delta(&table, e))?;
            Ok(adds.into_iter().map(Action::Add).collect())
        })
    }
}

/// Parquet writer settings for one frame: Snappy, as delta-rs writes, but dictionary
/// encoding only for columns with few distinct values (at most a quarter of a sample of the
/// first rows: a status, a country code). The Parquet writer hashes every value of a
/// dictionary column until the dictionary overflows; for keys, timestamps, amounts or ids
/// with thousands of values that was half of the write's time on the S2 benchmark.
fn writer_properties(df: &DataFrame) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::WriterProperties;
    use deltalake::parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder()
        .set_created_by(format!("tidemark {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false);
    const SAMPLE_ROWS: usize = 4096;
    let sample = df.height().min(SAMPLE_ROWS);
    for c in df.columns() {
        if few_distinct(&c.as_materialized_series().slice(0, sample), sample / 4) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(c.name().as_str()), true);
        }
    }
    b.build()
}

/// Whether a column holds at most `limit` distinct values (counting stops past the limit).
fn few_distinct(s: &Series, limit: usize) -> bool {
    fn at_most<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>, limit: usize) -> bool {
        let mut seen = PlHashSet::new();
        for v in values {
            if seen.insert(v) && seen.len() > limit {
                return false;
            }
        }
        true
    }
    if s.dtype() == &DataType::Boolean {
        return true;
    }
    if let Ok(strings) = s.str() {
        return at_most(strings.iter(), limit);
    }
    use polars::series::BitRepr;
    match s.bit_repr() {
        Some(BitRepr::U64(u)) => at_most(u.iter(), limit),
        Some(BitRepr::U32(u)) => at_most(u.iter(), limit),
        Some(BitRepr::U16(u)) => at_most(u.iter(), limit),
        Some(BitRepr::U8(u)) => at_most(u.iter(), limit),
        _ => false,
    }
}

fn added_bytes(actions: &[Action]) -> u64 {
    actions
        .iter()
        .map(|a| match a {
            Action::Add(add) => add.size.max(0) as u64,
            _ => 0,
        })
        .sum()
}

/// The table's columns (in order, with their Polars types), the MERGE's key and cursor, and
/// whether losing rows are deleted by deletion vectors instead of their files rewritten.
#[derive(Clone)]
struct Columns {
    names: Vec<String>,
    schema: Schema,
    key: Vec<String>,
    cursor: String,
    deletion_vectors: bool,
}

/// Time spent by the rewrite lanes, summed.
#[derive(Default)]
struct Spent {
    compute_ms: AtomicU64,
    write_ms: AtomicU64,
}

/// What rewriting one file produced.
struct Rewritten {
    updated: u64,
    /// Copy-on-write: the file's new content, written.
    adds: Vec<Action>,
    /// Merge-on-read: the physical positions of the file's rows that lose (to be deleted by
    /// its deletion vector) and the batch's versions that replace them (to be written with
    /// the inserts).
    deleted: Option<(RoaringTreemap, DataFrame)>,
    /// Inserts handed to the file's rewrite that it did not write (no row of the file lost,
    /// so the file stays): written with the other inserts.
    unplaced: Option<DataFrame>,
}

/// One file to rewrite: with the batch rows whose keys it holds (`None`: only to store the
/// table's new column types), and the batch's inserts into its partition, written into the
/// rewritten file so a partition that takes updates does not gather a new small file per
/// batch (copy-on-write only).
struct Job {
    file: TableFile,
    batch_rows: Option<DataFrame>,
    inserts: Option<DataFrame>,
}

impl Job {
    fn widen(file: TableFile) -> Self {
        Job {
            file,
            batch_rows: None,
            inserts: None,
        }
    }
}

/// The file's rows with the batch's winning versions in place (None: no row of the file
/// loses, so it stays as it is).
fn rewrite_file(
    f: &TableFile,
    batch_for_file: Option<LazyFrame>,
    inserts: Option<DataFrame>,
    cols: &Columns,
    sink: &FileSink,
    handle: &tokio::runtime::Handle,
    spent: &Spent,
) -> Result<Option<Rewritten>> {
    let started = std::time::Instant::now();
    let (columns, schema, key, cursor) = (&cols.names, &cols.schema, &cols.key, &cols.cursor);
    let corrupt = |e: PolarsError| EngineError::CorruptInput {
        path: f.path.clone(),
        reason: e.to_string(),
    };
    let Some(batch_for_file) = batch_for_file else {
        // Rewritten only to store the table's new column types (a widening).
        let mut df = scan_file(f, columns, schema)?.collect().map_err(corrupt)?;
        let adds = sink.write(&mut df, handle)?;
        spent
            .write_ms
            .fetch_add(started.elapsed().as_millis() as u64, Relaxed);
        return Ok(Some(Rewritten {
            updated: 0,
            adds,
            deleted: None,
            unplaced: inserts,
        }));
    };
    let target = scan_file(f, columns, schema)?.collect().map_err(corrupt)?;
    // The file's rows that lose to the batch, with the batch's version beside them: an
    // inner join with the few batch rows whose keys this file holds.
    let renamed: Vec<Expr> = columns
        .iter()
        .map(|c| {
            if key.contains(c) {
                col(c.as_str())
            } else {
                col(c.as_str()).alias(format!("{S_PREFIX}{c}"))
            }
        })
        .chain([lit(true).alias(HIT_COL)])
        .collect();
    let mut args = JoinArgs::new(JoinType::Inner);
    args.validation = JoinValidation::ManyToOne;
    let winners = target
        .clone()
        .lazy()
        .join(
            batch_for_file.select(renamed),
            key_exprs(key),
            key_exprs(key),
            args,
        )
        .filter(wins(columns, key, cursor))
        .collect()
        .map_err(corrupt)?;
    let updated = winners.height() as u64;
    if updated == 0 {
        return Ok(inserts.map(|i| Rewritten {
            updated: 0,
            adds: Vec::new(),
            deleted: None,
            unplaced: Some(i),
        }));
    }
    let versions = winners.clone().lazy().select(
        columns
            .iter()
            .map(|c| {
                if key.contains(c) {
                    col(c.as_str())
                } else {
                    col(format!("{S_PREFIX}{c}")).alias(c.as_str())
                }
            })
            .collect::<Vec<_>>(),
    );
    if cols.deletion_vectors {
        // Merge-on-read: the losers are deleted where they are; nothing of the file is
        // rewritten.
        let positions: RoaringTreemap = winners
            .column(ROW_COL)?
            .cast(&DataType::UInt64)?
            .u64()?
            .into_no_null_iter()
            .collect();
        let versions = versions.collect().map_err(corrupt)?;
        spent
            .compute_ms
            .fetch_add(started.elapsed().as_millis() as u64, Relaxed);
        return Ok(Some(Rewritten {
            updated,
            adds: Vec::new(),
            deleted: Some((positions, versions)),
            unplaced: inserts,
        }));
    }
    // Every other row is copied as it is; the winning versions replace the losers, and the
    // partition's inserts join them.
    let replaced = winners.column(ROW_COL)?.as_materialized_series().clone();
    let kept = target
        .lazy()
        .filter(
            col(ROW_COL)
                .is_in(lit(replaced).implode(false), false)
                .not(),
        )
        .select(key_exprs(columns));
    let mut parts = vec![kept, versions];
    parts.extend(inserts.map(|i| i.lazy()));
    let mut df = concat(parts, UnionArgs::default())?
        .collect()
        .map_err(corrupt)?;
    let computed = std::time::Instant::now();
    spent
        .compute_ms
        .fetch_add((computed - started).as_millis() as u64, Relaxed);
    let adds = sink.write(&mut df, handle)?;
    spent
        .write_ms
        .fetch_add(computed.elapsed().as_millis() as u64, Relaxed);
    Ok(Some(Rewritten {
        updated,
        adds,
        deleted: None,
        unplaced: None,
    }))
}

/// Hands each partition's inserts to a rewrite job of a file in that partition (the first),
/// returning the inserts of partitions no job rewrites.
fn fold_inserts(
    inserts: DataFrame,
    partition_cols: &[String],
    jobs: &mut VecDeque<Job>,
) -> Result<DataFrame> {
    if inserts.height() == 0 {
        return Ok(inserts);
    }
    let mut job_of: std::collections::HashMap<String, usize> = Default::default();
    for (i, j) in jobs.iter().enumerate() {
        job_of
            .entry(partition_tuple(file_partition(&j.file)))
            .or_insert(i);
    }
    let mut rest = Vec::new();
    for (tuple, part) in by_partition(&inserts, partition_cols)? {
        match job_of.get(&tuple) {
            Some(&i) => jobs[i].inserts = Some(part),
            None => rest.push(part),
        }
    }
    stacked(rest, &inserts)
}

/// `rows` split by the values of `partition_cols` (in order of first appearance), each part
/// with its [`partition_tuple`].
pub(super) fn by_partition(
    rows: &DataFrame,
    partition_cols: &[String],
) -> Result<Vec<(String, DataFrame)>> {
    let cols = || partition_cols.iter().map(|c| c.as_str());
    rows.partition_by_stable(cols(), true)?
        .into_iter()
        .map(|part| Ok((partition_tuple(part.select(cols())?.get_row(0)?.0), part)))
        .collect()
}

/// `parts` stacked into one frame; `like` emptied when there are none.
pub(super) fn stacked(parts: Vec<DataFrame>, like: &DataFrame) -> Result<DataFrame> {
    if parts.is_empty() {
        return Ok(like.clear());
    }
    let lazy: Vec<LazyFrame> = parts.into_iter().map(|d| d.lazy()).collect();
    Ok(concat(lazy, UnionArgs::default())?.collect()?)
}

/// Rewrites files a few at a time on blocking threads (one lane per core): each with its
/// batch rows (`Some`: the MERGE), or as it is in the table's current types (`None`).
async fn run_jobs(
    jobs: VecDeque<Job>,
    cols: &Columns,
    sink: &Arc<FileSink>,
    spent: &Arc<Spent>,
) -> Result<Vec<(TableFile, Rewritten)>> {
    let lanes = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    let queue = Arc::new(Mutex::new(jobs));
    let mut tasks = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (queue, sink, cols) = (queue.clone(), sink.clone(), cols.clone());
        let spent = spent.clone();
        let handle = tokio::runtime::Handle::current();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut done: Vec<(TableFile, Rewritten)> = Vec::new();
            loop {
                let Some(job) = queue.lock().expect("queue lock").pop_front() else {
                    return Ok::<_, EngineError>(done);
                };
                let rows = job.batch_rows.map(|r| r.lazy());
                let f = job.file;
                if let Some(r) = rewrite_file(&f, rows, job.inserts, &cols, &sink, &handle, &spent)?
                {
                    done.push((f, r));
                }
            }
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(
            task.await
                .map_err(|e| EngineError::Integrity(format!("a rewrite task failed: {e}")))??,
        );
    }
    Ok(out)
}

/// A batch in the table's columns and types: a column the batch lacks (`missing_columns =
/// "null"`) is null, columns the table lacks (`new_columns = "ignore"`) are left out.
fn in_table_columns(df: DataFrame, columns: &[String], schema: &Schema) -> Result<DataFrame> {
    let present = df.schema().clone();
    df.lazy()
        .select(
            columns
                .iter()
                .map(|c| {
                    let dtype = schema.get(c.as_str()).cloned().unwrap_or(DataType::Null);
                    if present.contains(c.as_str()) {
                        col(c.as_str()).strict_cast(dtype)
                    } else {
                        lit(NULL).cast(dtype).alias(c.as_str())
                    }
                })
                .collect::<Vec<_>>(),
        )
        .collect()
        .map_err(|e| {
            EngineError::Schema(format!("the batch does not fit the table's columns: {e}"))
        })
}

/// The actions that delete each file's losing rows by deletion vector: the file's new DV is
/// its old one with the new positions added; all of them go into one new DV file at the
/// table's root (written here, before the commit that references it). A file whose every
/// row is now deleted is simply removed. Returns the actions and the DV file's size.
async fn deletion_vector_actions(
    t: &DeltaTable,
    table_dir: &str,
    files: Vec<(TableFile, RoaringTreemap)>,
) -> Result<(Vec<Action>, u64)> {
    let mut actions = Vec::new();
    let mut kept: Vec<(TableFile, RoaringTreemap)> = Vec::new();
    for (f, positions) in files {
        let mut all = f.deleted.as_deref().cloned().unwrap_or_default();
        all |= positions;
        let physical = match f.physical_rows() {
            Some(n) => n,
            None => physical_rows_of(&f.path)?,
        };
        if all.len() >= physical {
            actions.push(f.remove.clone());
        } else {
            kept.push((f, all));
        }
    }
    if kept.is_empty() {
        return Ok((actions, 0));
    }
    let (name, encoded_path) = dv::new_file();
    let treemaps: Vec<RoaringTreemap> = kept.iter().map(|(_, t)| t.clone()).collect();
    let encoded = dv::encode(treemaps)?;
    let size = encoded.bytes.len() as u64;
    use object_store::ObjectStoreExt;
    let store = t.log_store().object_store(None);
    store
        .put(
            &object_store::path::Path::from(name.as_str()),
            encoded.bytes.into(),
        )
        .await
        .map_err(|e| EngineError::Storage {
            context: format!("write deletion vector {name} of {table_dir}"),
            source: e,
        })?;
    for ((f, _), part) in kept.into_iter().zip(encoded.parts) {
        let mut add = f.add.clone();
        add.deletion_vector = Some(dv::descriptor(&encoded_path, part));
        add.data_change = true;
        add.stats = add.stats.as_deref().and_then(loose_bounds);
        actions.push(f.remove.clone());
        actions.push(Action::Add(add));
    }
    Ok((actions, size))
}

/// A file's statistics with `tightBounds: false`: its min/max still bound the live rows, but
/// no longer exactly (deleted rows may hold the extremes).
fn loose_bounds(stats: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(stats).ok()?;
    v.as_object_mut()?
        .insert("tightBounds".into(), serde_json::Value::Bool(false));
    Some(v.to_string())
}

/// The rows a Parquet file stores, from its footer.
fn physical_rows_of(path: &Path) -> Result<u64> {
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| EngineError::CorruptInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Runs the MERGE and commits it (or nothing, when no row changes).
pub async fn merge(req: RewriteMerge<'_>) -> Result<RewriteOutcome> {
    let mut clock = std::time::Instant::now();
    let mut phases = std::collections::BTreeMap::new();
    let mut lap = |name: &'static str| {
        phases.insert(name, clock.elapsed().as_millis() as u64);
        clock = std::time::Instant::now();
    };
    let t = req.table;
    let snapshot = t
        .snapshot()
        .map_err(|e| EngineError::delta(req.table_dir, e))?;
    let partition_cols: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let (arrow_schema, schema) = match req.evolution {
        Some(e) => (e.arrow.clone(), polars_schema_of(&e.arrow)?),
        None => (table_arrow_schema(t)?, table_polars_schema(t)?),
    };
    let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let key = req.key.to_vec();
    let cursor = req.cursor.to_string();

    // The batch, in the table's types and column order.
    let staged = req.staged.to_path_buf();
    let staged_bytes = std::fs::metadata(&staged).map(|m| m.len()).unwrap_or(0);
    let batch = {
        let file = std::fs::File::open(&staged)
            .map_err(|e| EngineError::io(format!("open {}", staged.display()), e))?;
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| EngineError::Integrity(format!("staged batch unreadable: {e}")))?;
        in_table_columns(df, &columns, &schema)?
    };
    ensure_one_row_per_key(&batch, &key)?;

    let prune_partitions = !partition_cols.is_empty()
        && (req.partition_stable || partition_cols.iter().all(|p| key.contains(p)));
    let int_key = match key.as_slice() {
        [k] if schema.get(k.as_str()).is_some_and(|d| d.is_integer())
            && !partition_cols.contains(k) =>
        {
            Some(k.as_str())
        }
        _ => None,
    };
    let mut files = table_files(t, req.table_dir, &schema, int_key)?;
    let rewrite_all = req.evolution.is_some_and(|e| e.rewrite_all);
    // Rows an existing deletion vector deletes are neither probed nor kept: the deletion
    // vectors of the files this MERGE may read (the candidates; all, for a widening) are
    // loaded, each DV file read once.
    let wanted: std::collections::HashSet<PathBuf> = if rewrite_all {
        files.iter().map(|f| f.path.clone()).collect()
    } else {
        candidates(&files, &batch, prune_partitions, int_key)?
            .iter()
            .map(|f| f.path.clone())
            .collect()
    };
    let mut reading: Vec<TableFile> = Vec::new();
    files.retain(|f| {
        if f.dv.is_some() && wanted.contains(&f.path) {
            reading.push(f.clone());
            false
        } else {
            true
        }
    });
    load_deleted(t, &mut reading).await?;
    files.extend(reading);
    let files = files;
    let probe_set = candidates(&files, &batch, prune_partitions, int_key)?;
    // A widening rewrites every file anyway: deletion vectors are purged with it.
    let deletion_vectors = req.deletion_vectors && !rewrite_all;

    lap("prepare");
    // Probe: which candidate file holds which batch key (key columns only).
    let file_keys = if probe_set.is_empty() {
        None
    } else {
        Some(probe(
            &probe_set,
            &batch,
            &key,
            int_key,
            &columns,
            &schema,
            PROBE_ROUND_ROWS,
        )?)
    };

    lap("probe");
    // The batch rows whose key no file holds: inserts.
    let mut inserts = match &file_keys {
        None => batch.clone(),
        Some(probe) => {
            let matched = probe
                .select(key.iter().map(|k| k.as_str()))?
                .unique_stable(None, UniqueKeepStrategy::First, None)?
                .lazy()
                .with_column(lit(true).alias(HIT_COL));
            batch
                .clone()
                .lazy()
                .join(
                    matched,
                    key_exprs(&key),
                    key_exprs(&key),
                    JoinArgs::new(JoinType::Left),
                )
                .filter(col(HIT_COL).is_null())
                .drop(Selector::ByName {
                    names: Arc::new([HIT_COL.into()]),
                    strict: true,
                })
                .collect()?
        }
    };
    let inserted = inserts.height() as u64;
    // Rewrite the files that hold a losing row, a few at a time on blocking threads.
    let sink = Arc::new(FileSink::new(
        t,
        arrow_schema.clone(),
        partition_cols.clone(),
    )?);
    let mut jobs: VecDeque<Job> = VecDeque::new();
    if let Some(probe) = &file_keys {
        let files_hit = probe.column(FILE_COL)?.unique()?;
        for v in files_hit
            .as_materialized_series()
            .u32()?
            .into_no_null_iter()
        {
            let keys = probe
                .clone()
                .lazy()
                .filter(col(FILE_COL).eq(lit(v)))
                .select(key_exprs(&key))
                .collect()?;
            let rows = batch
                .clone()
                .lazy()
                .join(
                    keys.lazy(),
                    key_exprs(&key),
                    key_exprs(&key),
                    JoinArgs::new(JoinType::Inner),
                )
                .collect()?;
            jobs.push_back(Job {
                file: probe_set[v as usize].clone(),
                batch_rows: Some(rows),
                inserts: None,
            });
        }
    }
    if !deletion_vectors && !partition_cols.is_empty() && !jobs.is_empty() {
        inserts = fold_inserts(inserts, &partition_cols, &mut jobs)?;
    }
    let cols = Columns {
        names: columns.clone(),
        schema: schema.clone(),
        key: key.clone(),
        cursor: cursor.clone(),
        deletion_vectors,
    };
    let spent = Arc::new(Spent::default());
    let mut actions: Vec<Action> = Vec::new();
    let mut outcome = RewriteOutcome {
        files_probed: probe_set.len(),
        bytes_read: staged_bytes,
        ..Default::default()
    };
    let mut rewritten_paths = std::collections::HashSet::new();
    // Merge-on-read: per touched file, the positions its losers sit at; their winning
    // versions are written with the inserts.
    let mut deleted: Vec<(TableFile, RoaringTreemap)> = Vec::new();
    let mut replacements: Vec<DataFrame> = Vec::new();
    let mut unplaced: Vec<DataFrame> = Vec::new();
    for (f, r) in run_jobs(jobs, &cols, &sink, &spent).await? {
        outcome.updated += r.updated;
        unplaced.extend(r.unplaced);
        if r.updated == 0 {
            continue; // the file stays as it is
        }
        rewritten_paths.insert(f.path.clone());
        match r.deleted {
            Some((positions, versions)) => {
                replacements.push(versions);
                deleted.push((f, positions));
            }
            None => {
                outcome.files_rewritten += 1;
                outcome.bytes_read += f.size;
                actions.push(f.remove.clone());
                actions.extend(r.adds);
            }
        }
    }
    if !unplaced.is_empty() {
        unplaced.push(inserts);
        inserts = concat(
            unplaced.into_iter().map(|d| d.lazy()).collect::<Vec<_>>(),
            UnionArgs::default(),
        )?
        .collect()?;
    }

    lap("rewrite");
    outcome.inserted = inserted;
    // What the commit says of the batch, taken now: the batch and the probe's matches are
    // dropped before the inserts are written, so the write's buffers do not come on top of
    // them (a MERGE batch's peak stays near a first load's).
    let batch_rows = batch.height();
    let all_inserts = inserted as usize == batch_rows;
    let predicate = if req.evolution.is_some_and(|e| e.rewrite_all) {
        None // every file was read and rewritten
    } else {
        read_predicate(&batch, &partition_cols, prune_partitions, int_key)?
    };
    // Write once: where the staged file's row groups hold whole partitions, the partitions
    // whose every batch row this commit writes are copied from it as they are.
    let layout = match req.evolution {
        None => super::copy::Layout::of(
            req.staged,
            &batch,
            &partition_cols,
            req.staged_schema,
            &arrow_schema,
        )?,
        Some(_) => None,
    };
    drop(batch);
    drop(file_keys);
    // Write once: when every batch row is an insert, the staged file itself can be the new
    // data file.
    let adoptable = replacements.is_empty()
        && inserts.height() > 0
        && all_inserts
        && req.evolution.is_none()
        && match adopt::refusal(req.staged_schema, &arrow_schema, &partition_cols, false) {
            None => true,
            Some(why) => {
                tracing::debug!(reason = %why, "the staged batch is written again, not adopted");
                false
            }
        };
    if !replacements.is_empty() {
        replacements.push(inserts);
        inserts = concat(
            replacements
                .into_iter()
                .map(|d| d.lazy())
                .collect::<Vec<_>>(),
            UnionArgs::default(),
        )?
        .collect()?;
    }
    let adopted = if adoptable {
        adopt::adopt(
            Path::new(req.table_dir),
            req.staged,
            &inserts,
            &arrow_schema,
        )?
    } else {
        None
    };
    if let Some(add) = adopted {
        outcome.adopted = true;
        actions.push(add);
    } else if inserts.height() > 0 {
        let (adds, copied) =
            write_new_rows(layout, sink.clone(), req.staged, req.table_dir, inserts).await?;
        outcome.files_copied = copied;
        actions.extend(adds);
    }
    lap("insert");
    if !deleted.is_empty() {
        let (dv_actions, dv_bytes) = deletion_vector_actions(t, req.table_dir, deleted).await?;
        outcome.files_deleted_from = dv_actions.len() / 2;
        outcome.dv_bytes = dv_bytes;
        actions.extend(dv_actions);
    }
    if rewrite_all && outcome.inserted + outcome.updated > 0 {
        // A widened column: every other file is rewritten in the new types too.
        let rest: VecDeque<Job> = files
            .iter()
            .filter(|f| !rewritten_paths.contains(&f.path))
            .map(|f| Job::widen(f.clone()))
            .collect();
        for (f, r) in run_jobs(rest, &cols, &sink, &spent).await? {
            outcome.files_rewritten += 1;
            outcome.bytes_read += f.size;
            actions.push(f.remove.clone());
            actions.extend(r.adds);
        }
        lap("widen");
    }
    if let Some(e) = req.evolution {
        actions.insert(0, Action::Metadata(e.metadata.clone()));
    }
    outcome.files_added = actions
        .iter()
        .filter(|a| matches!(a, Action::Add(_)))
        .count();
    outcome.bytes_written = added_bytes(&actions) + outcome.dv_bytes;
    if outcome.inserted + outcome.updated == 0 {
        outcome.phase_ms.extend(phases);
        return Ok(outcome);
    }

    let metrics = serde_json::json!({
        "num_source_rows": batch_rows,
        "num_target_rows_inserted": outcome.inserted,
        "num_target_rows_updated": outcome.updated,
        "num_target_rows_deleted": 0,
        "num_target_files_scanned": outcome.files_probed,
        "num_target_files_skipped_during_scan": files.len() - outcome.files_probed,
        "num_target_files_added": outcome.files_added,
        "num_target_files_removed": outcome.files_rewritten,
        "num_deletion_vectors_added": outcome.files_deleted_from,
        "tidemark_merge": if deletion_vectors { "deletion_vectors" } else { "rewrite" },
    });
    let mut metadata = req.metadata.clone();
    metadata.push(("readVersion".into(), snapshot.version().into()));
    metadata.push(("operationMetrics".into(), metrics));
    let props = CommitProperties::default()
        .with_application_transaction(req.txn.clone())
        .with_metadata(metadata);
    let operation = DeltaOperation::Merge {
        predicate,
        merge_predicate: Some(req.on.to_string()),
        matched_predicates: vec![MergePredicate {
            action_type: "update".into(),
            predicate: Some(req.newer.to_string()),
        }],
        not_matched_predicates: vec![MergePredicate {
            action_type: "insert".into(),
            predicate: None,
        }],
        not_matched_by_source_predicates: vec![],
    };
    // The run's files (and deletion vector) are written, not yet referenced.
    crate::crash::point("promote_before_commit");
    let committed = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(snapshot), t.log_store(), operation)
        .await
        .map_err(|e| EngineError::delta(req.table_dir, e))?;
    outcome.version = Some(committed.version() as i64);
    lap("commit");
    outcome.phase_ms.extend(phases);
    outcome
        .phase_ms
        .insert("rewrite_compute", spent.compute_ms.load(Relaxed));
    outcome
        .phase_ms
        .insert("rewrite_write", spent.write_ms.load(Relaxed));
    Ok(outcome)
}

/// Refuses a batch that holds a key twice (a transform that fans out rows): a MERGE needs
/// one row per key.
fn ensure_one_row_per_key(batch: &DataFrame, key: &[String]) -> Result<()> {
    let distinct = batch
        .select(key.iter().map(|k| k.as_str()))?
        .unique_stable(None, UniqueKeepStrategy::Any, None)?
        .height();
    if distinct != batch.height() {
        return Err(EngineError::Schema(format!(
            "the batch holds {} rows for {distinct} keys ({}): a MERGE needs one row per key; make the transform keep one row per key",
            batch.height(),
            key.join(", ")
        )));
    }
    Ok(())
}

/// Writes the rows a commit adds as new data files, on a blocking thread: the whole
/// partitions `layout` allows copied from the staged file (on object storage, copied into a
/// scratch directory and uploaded), the rest through the writer. Returns their add actions
/// and how many files were copied.
async fn write_new_rows(
    layout: Option<super::copy::Layout>,
    sink: Arc<FileSink>,
    staged: &Path,
    table_dir: &str,
    rows: DataFrame,
) -> Result<(Vec<Action>, usize)> {
    let handle = tokio::runtime::Handle::current();
    let remote = super::table_remote(table_dir)?;
    let (staged, table_dir) = (staged.to_path_buf(), PathBuf::from(table_dir));
    tokio::task::spawn_blocking(move || {
        let (mut adds, mut rest) = match (&layout, &remote) {
            (Some(l), None) => l.copy(&table_dir, &staged, rows)?,
            (Some(l), Some(remote)) => {
                let scratch = crate::storage::scratch_dir()?;
                let (adds, rest) = l.copy(scratch.path(), &staged, rows)?;
                for a in &adds {
                    if let Action::Add(add) = a {
                        remote.upload(&add.path, &scratch.path().join(&add.path), None)?;
                    }
                }
                (adds, rest)
            }
            (None, _) => (Vec::new(), rows),
        };
        let copied = adds.len();
        if rest.height() > 0 {
            adds.extend(sink.write(&mut rest, &handle)?);
        }
        Ok((adds, copied))
    })
    .await
    .map_err(|e| EngineError::Integrity(format!("the write task failed: {e}")))?
}

/// What an append that changes the table's schema needs.
pub struct RewriteAppend<'a> {
    /// The table, loaded once (the state the run's token was checked in).
    pub table: &'a DeltaTable,
    /// Table directory.
    pub table_dir: &'a str,
    /// The staged batch.
    pub staged: &'a Path,
    /// The run's idempotency token.
    pub txn: Transaction,
    /// The run's commit metadata.
    pub metadata: Vec<(String, serde_json::Value)>,
    /// The schema change (None: the batch only lacks or drops columns).
    pub evolution: Option<&'a Evolution>,
    /// The staged file's own Arrow schema (from its footer): without a schema change, a file
    /// of the table's columns becomes a data file as it is (`adopt.rs`).
    pub staged_schema: &'a SchemaRef,
    /// A MERGE's batch appended to a table without rows (a first load on object storage).
    pub first_load: Option<FirstLoad<'a>>,
}

/// What a MERGE appended to a table without rows keeps of the MERGE: its key (the batch must
/// hold one row per key) and its clauses, for the commit. The commit is a MERGE that read the
/// whole table, so a concurrent commit that added rows (another writer's first load, a
/// backfill window's) conflicts with it, and the retry MERGEs into what that one wrote.
pub struct FirstLoad<'a> {
    /// The MERGE's key.
    pub key: &'a [String],
    /// Its join condition.
    pub on: &'a str,
    /// Its update condition.
    pub newer: &'a str,
}

/// Appends the staged batch in the table's (possibly evolved) columns, in one commit with the
/// schema change: a column the batch lacks is written null, one the table lacks left out,
/// and after a widening every existing file is rewritten in the new types. delta-rs's own
/// write cannot do this: its schema merge gives the table a new id and never widens.
pub async fn append(req: RewriteAppend<'_>) -> Result<RewriteOutcome> {
    let t = req.table;
    let snapshot = snapshot_of(t)?;
    let partition_cols: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let (arrow_schema, schema) = match req.evolution {
        Some(e) => (e.arrow.clone(), polars_schema_of(&e.arrow)?),
        None => (table_arrow_schema(t)?, table_polars_schema(t)?),
    };
    let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let file = std::fs::File::open(req.staged)
        .map_err(|e| EngineError::io(format!("open {}", req.staged.display()), e))?;
    let df = ParquetReader::new(file)
        .finish()
        .map_err(|e| EngineError::Integrity(format!("staged batch unreadable: {e}")))?;
    let batch = in_table_columns(df, &columns, &schema)?;
    if let Some(f) = &req.first_load {
        ensure_one_row_per_key(&batch, f.key)?;
    }
    let sink = Arc::new(FileSink::new(
        t,
        arrow_schema.clone(),
        partition_cols.clone(),
    )?);
    let mut outcome = RewriteOutcome {
        inserted: batch.height() as u64,
        ..Default::default()
    };
    let mut actions = Vec::new();
    if req.evolution.is_some_and(|e| e.rewrite_all) {
        let files = table_files(t, req.table_dir, &schema, None)?;
        let cols = Columns {
            names: columns.clone(),
            schema: schema.clone(),
            key: Vec::new(),
            cursor: String::new(),
            deletion_vectors: false,
        };
        let jobs = files.into_iter().map(Job::widen).collect();
        for (f, r) in run_jobs(jobs, &cols, &sink, &Arc::new(Spent::default())).await? {
            outcome.files_rewritten += 1;
            outcome.bytes_read += f.size;
            actions.push(f.remove.clone());
            actions.extend(r.adds);
        }
    }
    let adopted = match (req.evolution, &partition_cols) {
        (None, p) if adopt::refusal(req.staged_schema, &arrow_schema, p, false).is_none() => {
            match super::table_remote(req.table_dir)? {
                None => adopt::adopt(Path::new(req.table_dir), req.staged, &batch, &arrow_schema)?,
                Some(remote) => {
                    let (staged, schema) = (req.staged.to_path_buf(), arrow_schema.clone());
                    let rows = batch.clone();
                    tokio::task::spawn_blocking(move || {
                        adopt::adopt_remote(&remote, &staged, &rows, &schema)
                    })
                    .await
                    .map_err(|e| EngineError::Integrity(format!("the upload task failed: {e}")))??
                }
            }
        }
        _ => None,
    };
    if let Some(add) = adopted {
        outcome.adopted = true;
        actions.push(add);
    } else {
        // Write once, partitioned: whole partitions copied from the staged file.
        let layout = match req.evolution {
            None => super::copy::Layout::of(
                req.staged,
                &batch,
                &partition_cols,
                req.staged_schema,
                &arrow_schema,
            )?,
            Some(_) => None,
        };
        let (adds, copied) =
            write_new_rows(layout, sink.clone(), req.staged, req.table_dir, batch).await?;
        outcome.files_copied = copied;
        actions.extend(adds);
    }
    if let Some(e) = req.evolution {
        actions.insert(0, Action::Metadata(e.metadata.clone()));
    }
    outcome.files_added = actions
        .iter()
        .filter(|a| matches!(a, Action::Add(_)))
        .count();
    outcome.bytes_written = added_bytes(&actions);
    let how = if outcome.adopted {
        "adopted"
    } else {
        "rewrite"
    };
    let (metrics, operation) = match &req.first_load {
        None => (
            serde_json::json!({
                "num_added_rows": outcome.inserted,
                "num_added_files": outcome.files_added,
                "num_removed_files": outcome.files_rewritten,
                "tidemark_append": how,
            }),
            DeltaOperation::Write {
                mode: deltalake::protocol::SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        ),
        Some(f) => (
            serde_json::json!({
                "num_source_rows": outcome.inserted,
                "num_target_rows_inserted": outcome.inserted,
                "num_target_rows_updated": 0,
                "num_target_rows_deleted": 0,
                "num_target_files_added": outcome.files_added,
                "num_target_files_removed": 0,
                "tidemark_merge": how,
            }),
            // No predicate: the MERGE read the whole (empty) table.
            DeltaOperation::Merge {
                predicate: None,
                merge_predicate: Some(f.on.to_string()),
                matched_predicates: vec![MergePredicate {
                    action_type: "update".into(),
                    predicate: Some(f.newer.to_string()),
                }],
                not_matched_predicates: vec![MergePredicate {
                    action_type: "insert".into(),
                    predicate: None,
                }],
                not_matched_by_source_predicates: vec![],
            },
        ),
    };
    let mut metadata = req.metadata.clone();
    metadata.push(("readVersion".into(), snapshot.version().into()));
    metadata.push(("operationMetrics".into(), metrics));
    let props = CommitProperties::default()
        .with_application_transaction(req.txn.clone())
        .with_metadata(metadata);
    crate::crash::point("promote_before_commit");
    let committed = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(snapshot), t.log_store(), operation)
        .await
        .map_err(|e| EngineError::delta(req.table_dir, e))?;
    outcome.version = Some(committed.version() as i64);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::delta::{self, MergeEngine, PromoteRequest};
    use proptest::prelude::*;
    use tidemark_workflows::spec::WriteMode;

    /// One version of one row: key, partition day, cursor, two nullable values.
    #[derive(Debug, Clone)]
    struct Row {
        id: i64,
        day: i32,
        ts: i64,
        v: Option<&'static str>,
        n: Option<i64>,
    }

    fn frame(rows: &[Row]) -> DataFrame {
        df!(
            "id" => rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            "day" => rows.iter().map(|r| r.day).collect::<Vec<_>>(),
            "ts" => rows.iter().map(|r| r.ts).collect::<Vec<_>>(),
            "v" => rows.iter().map(|r| r.v).collect::<Vec<_>>(),
            "n" => rows.iter().map(|r| r.n).collect::<Vec<_>>(),
        )
        .unwrap()
        .lazy()
        .with_column(col("day").cast(DataType::Date))
        .collect()
        .unwrap()
    }

    /// Promotes one batch as run `seq` of pipeline `p` through `engine`.
    async fn promote(
        table: &str,
        dir: &Path,
        seq: u64,
        rows: &[Row],
        stable: bool,
        engine: MergeEngine,
    ) -> crate::target::Promoted {
        promote_dv(table, dir, seq, rows, stable, engine, false).await
    }

    /// [`promote`], merge-on-read when `dv`.
    async fn promote_dv(
        table: &str,
        dir: &Path,
        seq: u64,
        rows: &[Row],
        stable: bool,
        engine: MergeEngine,
        dv: bool,
    ) -> crate::target::Promoted {
        let part = vec!["day".to_string()];
        promote_into(
            table,
            dir,
            seq,
            rows,
            stable,
            engine,
            dv,
            WriteMode::Merge,
            &part,
        )
        .await
    }

    /// One batch as run `seq`, in `mode`, into a table partitioned by `part` (when created).
    #[allow(clippy::too_many_arguments)]
    async fn promote_into(
        table: &str,
        dir: &Path,
        seq: u64,
        rows: &[Row],
        stable: bool,
        engine: MergeEngine,
        dv: bool,
        mode: WriteMode,
        part: &[String],
    ) -> crate::target::Promoted {
        let staged = staged_path(table, dir, seq);
        let mut df = frame(rows);
        // As `process` writes it: grouped by partition for a partitioned table (whose whole
        // partitions are then copied, not written again), here every other batch, so that
        // the tests cover both layouts. (Renamed over, never truncated in place: an adopted
        // file is the table's data file.)
        let cluster: &[String] = if seq % 2 == 1 { part } else { &[] };
        crate::batch::frame::write_parquet_durable(&mut df, &staged, cluster).unwrap();
        let key = vec!["id".to_string()];
        delta::promote_with(
            &PromoteRequest {
                table,
                app_id: "tidemark:p",
                pipeline: "p",
                run_seq: seq,
                staged: &staged,
                staged_rows: rows.len() as u64,
                mode,
                key: &key,
                cursor: "ts",
                partition_by: part,
                partition_stable: stable,
                watermark_json: "{}",
                cdc: None,
                contract: &Default::default(),
                columns: &[],
                deletion_vectors: dv,
            },
            engine,
        )
        .await
        .unwrap()
    }

    /// Where run `seq` of `table` is staged in the tests.
    fn staged_path(table: &str, dir: &Path, seq: u64) -> PathBuf {
        let name = Path::new(table).file_name().unwrap().to_string_lossy();
        dir.join(format!("batch-{name}-{seq}.parquet"))
    }

    /// Whether the table holds the staged file itself (adopted: the same inode) as a data file.
    async fn holds_staged_file(table: &str, staged: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(staged).unwrap().ino();
        let t = delta::open(table).await.unwrap().unwrap();
        t.snapshot().unwrap().log_data().iter().any(|f| {
            std::fs::metadata(Path::new(table).join(f.path().as_ref()))
                .is_ok_and(|m| m.ino() == ino)
        })
    }

    async fn contents(table: &str) -> DataFrame {
        let batches = delta::read_all(table).await.unwrap();
        if batches.is_empty() {
            return DataFrame::empty();
        }
        arrow_to_polars(&batches)
            .unwrap()
            .lazy()
            .select([col("id"), col("day"), col("ts"), col("v"), col("n")])
            .sort(["id"], SortMultipleOptions::default())
            .collect()
            .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn row_strategy(stable: bool) -> impl Strategy<Value = Row> {
        (
            0i64..12,
            0i32..3,
            0i64..3,
            prop::option::of(prop::sample::select(vec!["a", "b"])),
            prop::option::of(0i64..2),
        )
            .prop_map(move |(id, day, ts, v, n)| Row {
                id,
                // A stable partition is a function of the key.
                day: 20_000 + if stable { (id % 3) as i32 } else { day },
                ts,
                v,
                n,
            })
    }

    /// Batches of distinct keys (the engine dedups before promote).
    fn batches(stable: bool) -> impl Strategy<Value = Vec<Vec<Row>>> {
        prop::collection::vec(prop::collection::vec(row_strategy(stable), 1..12), 2..5).prop_map(
            |bs| {
                bs.into_iter()
                    .map(|b| {
                        let mut seen = std::collections::HashSet::new();
                        b.into_iter().filter(|r| seen.insert(r.id)).collect()
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// The rewrite MERGE leaves the same table, and reports the same counts, as
        /// delta-rs's MERGE, batch after batch: newer and equal-but-different versions win,
        /// older and identical ones do not, nulls compare as values, and a key whose
        /// partition value changes moves (never duplicated) unless the spec says stable.
        #[test]
        fn the_rewrite_merge_equals_delta_rs_merge(stable in any::<bool>(), bs in batches(false), bs_stable in batches(true)) {
            let bs = if stable { bs_stable } else { bs };
            rt().block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let ours = dir.path().join("ours").to_string_lossy().into_owned();
                let theirs = dir.path().join("theirs").to_string_lossy().into_owned();
                for (i, b) in bs.iter().enumerate() {
                    let seq = i as u64 + 1;
                    let a = promote(&ours, dir.path(), seq, b, stable, MergeEngine::Rewrite).await;
                    let d = promote(&theirs, dir.path(), seq, b, stable, MergeEngine::DeltaRs).await;
                    assert_eq!((a.inserted, a.updated), (d.inserted, d.updated), "batch {i}: {b:?}");
                    let (x, y) = (contents(&ours).await, contents(&theirs).await);
                    assert!(x.equals_missing(&y), "batch {i}: {b:?}\nrewrite:\n{x}\ndelta-rs:\n{y}");
                    let keys = x.column("id").unwrap().n_unique().unwrap();
                    assert_eq!(keys, x.height(), "a key is in the table twice:\n{x}");
                    if i == 0 {
                        // A first load from a grouped batch: every partition copied.
                        let codecs = codecs(&ours).await;
                        assert!(codecs.iter().all(|(_, c)| c.starts_with("ZSTD")), "{codecs:?}");
                    }
                }
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        /// Write once: on an unpartitioned table, a batch whose every row is an insert (the
        /// first, and any of only new keys) is adopted as a data file as it is, and the table
        /// is still the one delta-rs's MERGE makes, batch after batch (the adopted files'
        /// statistics steer the later MERGEs' file pruning by key).
        #[test]
        fn adopted_insert_batches_leave_the_table_delta_rs_merge_makes(fresh in any::<bool>(), dv in any::<bool>(), bs in batches(false)) {
            rt().block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let ours = dir.path().join("ours").to_string_lossy().into_owned();
                let theirs = dir.path().join("theirs").to_string_lossy().into_owned();
                for (i, b) in bs.iter().enumerate() {
                    let seq = i as u64 + 1;
                    // Fresh: every batch of new keys (all inserts).
                    let b: Vec<Row> = b.iter().cloned().map(|mut r| {
                        if fresh { r.id += 100 * i as i64; }
                        r
                    }).collect();
                    let a = promote_into(&ours, dir.path(), seq, &b, false, MergeEngine::Rewrite, dv, WriteMode::Merge, &[]).await;
                    let d = promote_into(&theirs, dir.path(), seq, &b, false, MergeEngine::DeltaRs, false, WriteMode::Merge, &[]).await;
                    assert_eq!((a.inserted, a.updated), (d.inserted, d.updated), "batch {i}: {b:?}");
                    if i == 0 || fresh {
                        assert!(holds_staged_file(&ours, &staged_path(&ours, dir.path(), seq)).await, "batch {i} was not adopted");
                    }
                    let (x, y) = (contents(&ours).await, contents(&theirs).await);
                    assert!(x.equals_missing(&y), "batch {i}: {b:?}\nadopting:\n{x}\ndelta-rs:\n{y}");
                }
            });
        }
    }

    /// The probe finds the same (key, file) pairs whether it reads the files in one round or
    /// one round per file, by the integer-key lookup or by the join.
    #[test]
    fn the_probe_reads_the_table_round_by_round_with_the_same_result() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("p").to_string_lossy().into_owned();
            let rows: Vec<Row> = (0..30).map(|i| r(i, (i % 3) as i32, 1, "a")).collect();
            promote(&table, dir.path(), 1, &rows, true, MergeEngine::Rewrite).await;
            let t = delta::open(&table).await.unwrap().unwrap();
            let schema = table_polars_schema(&t).unwrap();
            let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
            let files = table_files(&t, &table, &schema, Some("id")).unwrap();
            assert_eq!(files.len(), 3);
            let refs: Vec<&TableFile> = files.iter().collect();
            let batch = in_table_columns(
                frame(&[
                    r(4, 1, 2, "b"),
                    r(9, 0, 2, "b"),
                    r(11, 2, 2, "b"),
                    r(99, 0, 2, "b"),
                ]),
                &columns,
                &schema,
            )
            .unwrap();
            let key = vec!["id".to_string()];
            let sorted = |df: DataFrame| df.sort(["id"], SortMultipleOptions::default()).unwrap();
            let whole = sorted(
                probe(&refs, &batch, &key, Some("id"), &columns, &schema, u64::MAX).unwrap(),
            );
            assert_eq!(
                whole.height(),
                3,
                "ids 4, 9 and 11 are in the table: {whole}"
            );
            for (int_key, round) in [(Some("id"), 1), (None, 1), (None, u64::MAX)] {
                let got =
                    sorted(probe(&refs, &batch, &key, int_key, &columns, &schema, round).unwrap());
                assert!(got.equals(&whole), "{int_key:?} {round}: {got} vs {whole}");
            }
        });
    }

    /// Write once in append mode: each batch's staged file becomes a data file as it is,
    /// and the table holds every row of every batch.
    #[test]
    fn append_batches_are_adopted_as_they_are() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("app").to_string_lossy().into_owned();
            let b1: Vec<Row> = (0..5).map(|i| r(i, 0, 1, "a")).collect();
            let b2: Vec<Row> = (3..9).map(|i| r(i, 1, 2, "b")).collect();
            for (seq, b) in [(1, &b1), (2, &b2)] {
                let p = promote_into(
                    &table,
                    dir.path(),
                    seq,
                    b,
                    false,
                    MergeEngine::Rewrite,
                    false,
                    WriteMode::Append,
                    &[],
                )
                .await;
                assert_eq!(p.inserted, b.len() as u64);
                assert!(holds_staged_file(&table, &staged_path(&table, dir.path(), seq)).await);
            }
            let rows = contents(&table).await;
            assert_eq!(rows.height(), b1.len() + b2.len());
            // A partitioned table does not adopt the batch whole: a batch grouped by
            // partition (run 1) has its partitions copied, another (run 2) is written.
            let parted = dir.path().join("parted").to_string_lossy().into_owned();
            let part = vec!["v".to_string()];
            let b3: Vec<Row> = (3..9)
                .map(|i| r(i, 1, 2, if i % 2 == 0 { "b" } else { "c" }))
                .collect();
            for (seq, b) in [(1, &b1), (2, &b3)] {
                promote_into(
                    &parted,
                    dir.path(),
                    seq,
                    b,
                    false,
                    MergeEngine::Rewrite,
                    false,
                    WriteMode::Append,
                    &part,
                )
                .await;
                assert!(!holds_staged_file(&parted, &staged_path(&parted, dir.path(), seq)).await);
            }
            let codecs: Vec<String> = codecs(&parted)
                .await
                .into_iter()
                .map(|(v, c)| format!("{v} {c}"))
                .collect();
            assert_eq!(codecs, ["a ZSTD(ZstdLevel(1))", "b SNAPPY", "c SNAPPY"]);
            assert_eq!(contents(&parted).await.height(), b1.len() + b3.len());
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Merge-on-read leaves the same logical table as copy-on-write, batch after batch
        /// (read back through delta-rs, which applies the deletion vectors), with the same
        /// counts.
        #[test]
        fn the_deletion_vector_merge_equals_the_copy_on_write_merge(stable in any::<bool>(), bs in batches(false), bs_stable in batches(true)) {
            let bs = if stable { bs_stable } else { bs };
            rt().block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let mor = dir.path().join("mor").to_string_lossy().into_owned();
                let cow = dir.path().join("cow").to_string_lossy().into_owned();
                for (i, b) in bs.iter().enumerate() {
                    let seq = i as u64 + 1;
                    let a = promote_dv(&mor, dir.path(), seq, b, stable, MergeEngine::Rewrite, true).await;
                    let c = promote_dv(&cow, dir.path(), seq, b, stable, MergeEngine::Rewrite, false).await;
                    assert_eq!((a.inserted, a.updated), (c.inserted, c.updated), "batch {i}: {b:?}");
                    let (x, y) = (contents(&mor).await, contents(&cow).await);
                    assert!(x.equals_missing(&y), "batch {i}: {b:?}\nmerge-on-read:\n{x}\ncopy-on-write:\n{y}");
                }
                let t = delta::open(&mor).await.unwrap().unwrap();
                assert!(delta::deletion_vectors_enabled(&t));
            });
        }
    }

    /// Merge-on-read rewrites nothing: two replaced rows of a ten-row file are deleted by a
    /// deletion vector on it (in the DV format, `tightBounds: false`), their new versions go
    /// into a new file; a file whose every row is replaced is simply removed.
    #[test]
    fn replaced_rows_are_deleted_by_a_deletion_vector_and_a_dead_file_is_removed() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("t").to_string_lossy().into_owned();
            let first: Vec<Row> = (0..10).map(|i| r(i, 0, 1, "a")).collect();
            promote_dv(
                &table,
                dir.path(),
                1,
                &first,
                false,
                MergeEngine::Rewrite,
                true,
            )
            .await;
            let original = delta::open(&table).await.unwrap().unwrap();
            let original_files: Vec<String> = original
                .snapshot()
                .unwrap()
                .log_data()
                .iter()
                .map(|f| f.path().to_string())
                .collect();
            assert_eq!(original_files.len(), 1);

            let p = promote_dv(
                &table,
                dir.path(),
                2,
                &[r(3, 0, 2, "b"), r(7, 0, 2, "b")],
                false,
                MergeEngine::Rewrite,
                true,
            )
            .await;
            assert_eq!((p.updated, p.inserted), (2, 0));
            let t = delta::open(&table).await.unwrap().unwrap();
            let files: Vec<_> = t
                .snapshot()
                .unwrap()
                .log_data()
                .iter()
                .map(|f| (f.path().to_string(), f.deletion_vector_descriptor()))
                .collect();
            assert_eq!(
                files.len(),
                2,
                "the old file (with a DV) and one new file: {files:?}"
            );
            let old = files
                .iter()
                .find(|(p, _)| *p == original_files[0])
                .expect("the old file stays");
            let dv = old.1.as_ref().expect("a deletion vector on the old file");
            assert_eq!(dv.cardinality, 2);
            let mut reader = super::dv::Reader::of(&t);
            #[allow(deprecated)]
            let add = t
                .snapshot()
                .unwrap()
                .log_data()
                .iter()
                .find(|f| f.path() == original_files[0])
                .unwrap()
                .add_action();
            let positions = reader
                .read(add.deletion_vector.as_ref().unwrap())
                .await
                .unwrap();
            assert_eq!(
                positions.iter().collect::<Vec<_>>(),
                vec![3, 7],
                "physical positions of ids 3 and 7"
            );
            assert!(add.stats.unwrap().contains("\"tightBounds\":false"));
            let now = contents(&table).await;
            assert_eq!(now.height(), 10);
            let v = now
                .column("v")
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>();
            assert_eq!(v.iter().filter(|v| *v == "b").count(), 2, "{now}");

            // Every remaining row of the old file replaced: it is removed, no DV of all rows.
            let rest: Vec<Row> = (0..10)
                .filter(|i| *i != 3 && *i != 7)
                .map(|i| r(i, 0, 3, "c"))
                .collect();
            promote_dv(
                &table,
                dir.path(),
                3,
                &rest,
                false,
                MergeEngine::Rewrite,
                true,
            )
            .await;
            let t = delta::open(&table).await.unwrap().unwrap();
            assert!(
                t.snapshot()
                    .unwrap()
                    .log_data()
                    .iter()
                    .all(|f| f.path() != original_files[0]),
                "the dead file is removed"
            );
            assert_eq!(contents(&table).await.height(), 10);
        });
    }

    fn r(id: i64, day: i32, ts: i64, v: &'static str) -> Row {
        Row {
            id,
            day: 20_000 + day,
            ts,
            v: Some(v),
            n: None,
        }
    }

    /// One batch as run `seq`, merged (rewrite engine, copy-on-write) into a table
    /// partitioned by the string `v`, declared stable.
    async fn by_v(table: &str, dir: &Path, seq: u64, rows: Vec<Row>) -> crate::target::Promoted {
        let part = ["v".to_string()];
        promote_into(
            table,
            dir,
            seq,
            &rows,
            true,
            MergeEngine::Rewrite,
            false,
            WriteMode::Merge,
            &part,
        )
        .await
    }

    /// A stable string partition: the probe finds the key in its partition's file (a batch
    /// row's borrowed string and the log's owned one are the same partition), and the
    /// partition's inserts go into its rewritten file instead of a new small one.
    #[test]
    fn a_string_partition_is_probed_and_its_inserts_join_the_rewritten_file() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("t").to_string_lossy().into_owned();
            let into = |seq, rows: Vec<Row>| by_v(&table, dir.path(), seq, rows);
            let first: Vec<Row> = (0..6)
                .map(|i| r(i, 0, 1, if i % 2 == 0 { "a" } else { "b" }))
                .collect();
            into(1, first).await;
            let files = |t: &DeltaTable| t.snapshot().unwrap().log_data().num_files();
            assert_eq!(files(&delta::open(&table).await.unwrap().unwrap()), 2);

            // Partition "a": id 0 updated, id 10 new.
            let p = into(2, vec![r(0, 0, 2, "a"), r(10, 0, 2, "a")]).await;
            assert_eq!((p.updated, p.inserted), (1, 1), "{p:?}");
            let now = contents(&table).await;
            assert_eq!(
                now.height(),
                7,
                "id 0 updated in place, not duplicated:\n{now}"
            );
            let t = delta::open(&table).await.unwrap().unwrap();
            assert_eq!(
                files(&t),
                2,
                "the insert went into the rewritten file of \"a\""
            );
            let ts0 = now
                .lazy()
                .filter(col("id").eq(lit(0i64)))
                .collect()
                .unwrap();
            assert_eq!(ts0.column("ts").unwrap().i64().unwrap().get(0), Some(2));

            // An insert into a partition no update touches gets a file of its own.
            let p = into(3, vec![r(11, 0, 3, "c"), r(2, 0, 3, "a")]).await;
            assert_eq!((p.updated, p.inserted), (1, 1), "{p:?}");
            assert_eq!(contents(&table).await.height(), 8);
            assert_eq!(files(&delta::open(&table).await.unwrap().unwrap()), 3);
        });
    }

    /// The compression of each data file, by its partition values (`v`): a partition copied
    /// from the staged batch keeps the batch's Zstd, one the writer wrote is Snappy.
    async fn codecs(table: &str) -> Vec<(String, String)> {
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
        let t = delta::open(table).await.unwrap().unwrap();
        let mut out: Vec<(String, String)> = t
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| {
                let values = f.partition_values_map();
                let file = std::fs::File::open(Path::new(table).join(f.path().as_ref())).unwrap();
                let reader = SerializedFileReader::new(file).unwrap();
                let codec = reader.metadata().row_group(0).column(0).compression();
                let v = values.get("v").cloned().flatten().unwrap_or_default();
                (v, format!("{codec:?}"))
            })
            .collect();
        out.sort();
        out
    }

    /// Write once on a partitioned table: a first load's partitions are copied from the
    /// staged batch's row groups (their bytes, less the partition column), except one whose
    /// value needs escaping to name a directory; a later MERGE copies its new partition, and
    /// rewrites the one it updates. The table reads back as the rows the writer would make.
    #[test]
    fn whole_partitions_are_copied_from_the_staged_batch() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("t").to_string_lossy().into_owned();
            let into = |seq, rows: Vec<Row>| by_v(&table, dir.path(), seq, rows);
            let first: Vec<Row> = (0..9)
                .map(|i| r(i, 0, 1, ["a", "b-1", "c d"][i as usize % 3]))
                .collect();
            let p = into(1, first.clone()).await;
            assert_eq!((p.inserted, p.updated), (9, 0));
            let snappy = |v: &str| (v.to_string(), "SNAPPY".to_string());
            let zstd = |v: &str| (v.to_string(), "ZSTD(ZstdLevel(1))".to_string());
            assert_eq!(
                codecs(&table).await,
                [zstd("a"), zstd("b-1"), snappy("c d")],
                "\"a\" and \"b-1\" copied, \"c d\" written"
            );
            let now = contents(&table).await;
            let expected = frame(&first)
                .lazy()
                .select([col("id"), col("day"), col("ts"), col("v"), col("n")])
                .sort(["id"], SortMultipleOptions::default())
                .collect()
                .unwrap();
            assert!(now.equals_missing(&expected), "{now}\n{expected}");

            // Run 3 (grouped, like run 1): "a" gets an update, "e" is new.
            into(2, vec![r(100, 0, 2, "b-1")]).await;
            let p = into(3, vec![r(0, 0, 3, "a"), r(20, 0, 3, "e"), r(21, 0, 3, "e")]).await;
            assert_eq!((p.inserted, p.updated), (2, 1), "{p:?}");
            let codecs = codecs(&table).await;
            assert!(
                codecs.contains(&zstd("e")),
                "the new partition is copied: {codecs:?}"
            );
            assert!(
                codecs.contains(&snappy("a")),
                "the updated one rewritten: {codecs:?}"
            );
            let now = contents(&table).await;
            assert_eq!(now.height(), 12, "{now}");
            let ts0 = now
                .lazy()
                .filter(col("id").eq(lit(0i64)))
                .collect()
                .unwrap();
            assert_eq!(ts0.column("ts").unwrap().i64().unwrap().get(0), Some(3));
        });
    }

    /// With a stable partition only the batch's partitions are probed, and a file whose
    /// matched rows all lose is not rewritten.
    #[test]
    fn a_stable_partition_prunes_and_unchanged_files_stay() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("t").to_string_lossy().into_owned();
            let first: Vec<Row> = (0..30).map(|i| r(i, (i % 3) as i32, 1, "a")).collect();
            promote(&table, dir.path(), 1, &first, true, MergeEngine::Rewrite).await;
            let t = delta::open(&table).await.unwrap().unwrap();
            let files_before = t.snapshot().unwrap().log_data().num_files();
            assert_eq!(files_before, 3, "one file per day");

            // Day 0 only: one newer version, one identical re-read.
            let staged = dir.path().join("b2.parquet");
            let mut df = frame(&[r(0, 0, 2, "b"), r(3, 0, 1, "a")]);
            ParquetWriter::new(std::fs::File::create(&staged).unwrap())
                .finish(&mut df)
                .unwrap();
            let key = vec!["id".to_string()];
            let out = merge(RewriteMerge {
                table: &t,
                table_dir: &table,
                staged: &staged,
                key: &key,
                cursor: "ts",
                partition_stable: true,
                txn: Transaction::new("tidemark:p", 2),
                metadata: vec![],
                on: "t.id = s.id",
                newer: "s.ts > t.ts",
                evolution: None,
                deletion_vectors: false,
                staged_schema: &delta::staged_footer(&staged).unwrap().0,
            })
            .await
            .unwrap();
            assert_eq!(out.files_probed, 1, "only day 0's file is probed: {out:?}");
            assert_eq!((out.updated, out.inserted, out.files_rewritten), (1, 0, 1));

            // An identical re-read changes nothing: no file rewritten, no commit.
            let t = delta::open(&table).await.unwrap().unwrap();
            let out = merge(RewriteMerge {
                table: &t,
                table_dir: &table,
                staged: &staged,
                key: &key,
                cursor: "ts",
                partition_stable: false,
                txn: Transaction::new("tidemark:p", 3),
                metadata: vec![],
                on: "t.id = s.id",
                newer: "s.ts > t.ts",
                evolution: None,
                deletion_vectors: false,
                staged_schema: &delta::staged_footer(&staged).unwrap().0,
            })
            .await
            .unwrap();
            assert_eq!(
                out.files_probed, 3,
                "unstable: every file may hold the keys"
            );
            assert_eq!(
                (out.version, out.updated, out.files_rewritten),
                (None, 0, 0)
            );
        });
    }

    /// A zombie attempt that loaded the table before the live attempt committed the run is
    /// refused by Delta's conflict checker (the same app id in a later version).
    #[test]
    fn a_rewrite_commit_from_a_stale_state_of_the_same_run_is_refused() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("t").to_string_lossy().into_owned();
            promote(
                &table,
                dir.path(),
                1,
                &[r(1, 0, 1, "a")],
                false,
                MergeEngine::Rewrite,
            )
            .await;
            let staged = dir.path().join("b2.parquet");
            let mut df = frame(&[r(1, 0, 2, "b"), r(2, 0, 2, "b")]);
            ParquetWriter::new(std::fs::File::create(&staged).unwrap())
                .finish(&mut df)
                .unwrap();
            let key = vec!["id".to_string()];
            let stale = delta::open(&table).await.unwrap().unwrap();
            let live = delta::open(&table).await.unwrap().unwrap();
            let footer = delta::staged_footer(&staged).unwrap().0;
            let attempt = |t| RewriteMerge {
                table: t,
                table_dir: &table,
                staged: &staged,
                key: &key,
                cursor: "ts",
                partition_stable: false,
                txn: Transaction::new("tidemark:p", 2),
                metadata: vec![],
                on: "t.id = s.id",
                newer: "s.ts > t.ts",
                evolution: None,
                deletion_vectors: false,
                staged_schema: &footer,
            };
            let done = merge(attempt(&live)).await.unwrap();
            assert_eq!(done.version, Some(2));
            let zombie = merge(attempt(&stale)).await;
            assert!(
                zombie.is_err(),
                "the stale commit must be refused: {zombie:?}"
            );
            let after = contents(&table).await;
            assert_eq!(after.height(), 2, "{after}");
        });
    }

    /// Tables the rewrite does not handle say why (and go to delta-rs's MERGE).
    #[test]
    fn an_append_only_table_is_left_to_delta_rs() {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let table = dir.path().join("t");
            std::fs::create_dir_all(&table).unwrap();
            let url = url::Url::from_directory_path(&table).unwrap();
            let t = DeltaTable::try_from_url(url)
                .await
                .unwrap()
                .create()
                .with_column("id", deltalake::kernel::DataType::LONG, true, None)
                .with_configuration_property(deltalake::TableProperty::AppendOnly, Some("true"))
                .await
                .unwrap();
            let why = unsupported(&t).unwrap();
            assert_eq!(why.as_deref(), Some("the table is append-only"));
        });
    }
}
