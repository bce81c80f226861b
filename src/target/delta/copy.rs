//! Write once for partitioned tables: a partition whose batch rows all enter the table in
//! this commit becomes a data file made of the staged batch's own encoded row groups, copied
//! byte for byte less the partition columns (Delta keeps those in the log), instead of being
//! decoded and encoded again.
//!
//! `process` writes a partitioned Delta table's batch grouped by partition, no row group
//! holding two (`batch::frame::write_clustered`). The MERGE learns the layout from the staged
//! file's footer and the batch in memory ([`Layout::of`]): a row group counts only when the
//! batch's rows in it are of one partition, so a file written otherwise simply copies
//! nothing. A partition is copied ([`Layout::copy`]) when every one of its batch rows is
//! written by this commit (new keys; with deletion vectors, also the winning versions of
//! updated rows), the file's columns are the table's own physical types (the test of
//! `adopt::refusal`), and its values are plain enough to name its directory (integers, dates,
//! and strings of letters, digits, `.`, `_`, `-`). Every other row goes through the writer.
//!
//! The copied file keeps the staged file's encoding and compression and carries the Arrow
//! schema hint of its columns (in plain types, `batch::arrow_hint`); its add action's
//! statistics come from the rows in memory, as the adopted file's do. Crash safety is the writer's: files are written under fresh names
//! and synced before the commit, so a crash leaves unreferenced files that vacuum removes.

use super::adopt;
use super::rewrite::{by_partition, partition_tuple, stacked};
use crate::error::{EngineError, Result};
use crate::state::fsio;
use deltalake::arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use deltalake::kernel::Action;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::column::writer::ColumnCloseResult;
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::file::writer::SerializedFileWriter;
use deltalake::parquet::schema::types::Type as ParquetType;
use polars::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Where each partition of a staged batch sits in its file.
pub struct Layout {
    meta: Arc<ParquetMetaData>,
    /// Indices of the file's columns a copy keeps (all but the partition columns).
    keep: Vec<usize>,
    /// The Arrow schema hint of the copied files (the staged file's, less the partitions).
    arrow: ArrowSchema,
    /// The table's Arrow schema (for its non-null columns).
    table: SchemaRef,
    partition_cols: Vec<String>,
    /// Per partition (its `rewrite::partition_tuple`): its row groups and rows; `None` when a row
    /// group mixes it with another partition or its values cannot name a directory.
    parts: HashMap<String, Option<Part>>,
}

struct Part {
    row_groups: Vec<usize>,
    rows: usize,
    /// Its values as the log spells them, in the partition columns' order.
    values: Vec<(String, String)>,
}

impl Layout {
    /// The layout of `staged`, whose rows `batch` holds in the same order (in the table's
    /// columns). None when no partition of it can be copied: an unpartitioned table, a file
    /// whose columns are not the table's own physical types, a nested column.
    pub fn of(
        staged: &Path,
        batch: &DataFrame,
        partition_cols: &[String],
        staged_schema: &SchemaRef,
        table_schema: &SchemaRef,
    ) -> Result<Option<Layout>> {
        if partition_cols.is_empty() || batch.height() == 0 {
            return Ok(None);
        }
        if let Some(why) = refusal(staged_schema, table_schema, partition_cols) {
            tracing::debug!(reason = %why, "the batch's partitions are written again, not copied");
            return Ok(None);
        }
        let file = std::fs::File::open(staged)
            .map_err(|e| EngineError::io(format!("open {}", staged.display()), e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
            EngineError::Integrity(format!(
                "staged batch {} is unreadable: {e}",
                staged.display()
            ))
        })?;
        let meta = reader.metadata().clone();
        let arrow_hint = reader.schema().clone();
        let root = meta.file_metadata().schema();
        let fields = root.get_fields();
        if fields.len() != meta.file_metadata().schema_descr().num_columns()
            || fields.iter().any(|f| f.is_group())
        {
            return Ok(None); // nested columns: leaves and fields differ
        }
        let keep: Vec<usize> = (0..fields.len())
            .filter(|&i| !partition_cols.iter().any(|p| p == fields[i].name()))
            .collect();
        let total: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
        if total != batch.height() as i64 || keep.len() + partition_cols.len() != fields.len() {
            return Ok(None);
        }
        let values = batch.select(partition_cols.iter().map(|c| c.as_str()))?;
        let mut parts: HashMap<String, Option<Part>> = HashMap::new();
        let mut offset = 0usize;
        for (g, group) in meta.row_groups().iter().enumerate() {
            let rows = group.num_rows() as usize;
            let distinct = values.slice(offset as i64, rows).unique_stable(
                None,
                UniqueKeepStrategy::First,
                None,
            )?;
            offset += rows;
            if distinct.height() != 1 {
                for i in 0..distinct.height() {
                    parts.insert(partition_tuple(distinct.get_row(i)?.0), None);
                }
                continue;
            }
            let row = distinct.get_row(0)?.0;
            let entry = parts
                .entry(partition_tuple(row.clone()))
                .or_insert_with(|| {
                    log_values(partition_cols, &row).map(|values| Part {
                        row_groups: Vec::new(),
                        rows: 0,
                        values,
                    })
                });
            if let Some(p) = entry {
                p.row_groups.push(g);
                p.rows += rows;
            }
        }
        // Plain types even for a batch written before its hint was made plain (an upgrade
        // with a run in flight): see `batch::arrow_hint`.
        let arrow = crate::batch::arrow_hint::plain_schema(&ArrowSchema::new(
            arrow_hint
                .fields()
                .iter()
                .filter(|f| !partition_cols.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        Ok(Some(Layout {
            meta,
            keep,
            arrow,
            table: table_schema.clone(),
            partition_cols: partition_cols.to_vec(),
            parts,
        }))
    }

    /// Copies every partition of `rows` (the rows this commit writes, in the table's columns)
    /// that holds all of its batch rows into a data file of its own under `table_dir`;
    /// returns their add actions and the rows left for the writer.
    pub fn copy(
        &self,
        table_dir: &Path,
        staged: &Path,
        rows: DataFrame,
    ) -> Result<(Vec<Action>, DataFrame)> {
        if rows.height() == 0 {
            return Ok((Vec::new(), rows));
        }
        let mut adds = Vec::new();
        let mut rest = Vec::new();
        for (key, part) in by_partition(&rows, &self.partition_cols)? {
            let data = part.drop_many(self.partition_cols.iter().map(|c| c.as_str()));
            let copyable = match self.parts.get(&key) {
                Some(Some(p))
                    if p.rows == part.height()
                        && !adopt::null_in_required(&data, &self.table, &self.partition_cols) =>
                {
                    Some(p)
                }
                _ => None,
            };
            match copyable {
                Some(p) => adds.push(self.write(table_dir, staged, p, &data)?),
                None => rest.push(part),
            }
        }
        Ok((adds, stacked(rest, &rows)?))
    }

    /// Writes partition `p`'s row groups as a new data file; `data` is its rows (without the
    /// partition columns), for the statistics.
    fn write(&self, table_dir: &Path, staged: &Path, p: &Part, data: &DataFrame) -> Result<Action> {
        let dir: Vec<String> = p.values.iter().map(|(c, v)| format!("{c}={v}")).collect();
        let dir = dir.join("/");
        let rel = format!("{dir}/part-00000-{}-c000.parquet", uuid::Uuid::new_v4());
        let dest = table_dir.join(&rel);
        let parent = dest.parent().expect("a partition directory");
        std::fs::create_dir_all(parent)
            .map_err(|e| EngineError::io(format!("create {}", parent.display()), e))?;
        let parquet = |e: deltalake::parquet::errors::ParquetError| {
            EngineError::Integrity(format!("copy of {} into {rel}: {e}", staged.display()))
        };
        let source = std::fs::File::open(staged)
            .map_err(|e| EngineError::io(format!("open {}", staged.display()), e))?;
        let out = std::fs::File::create(&dest)
            .map_err(|e| EngineError::io(format!("create {}", dest.display()), e))?;
        let root = self.meta.file_metadata().schema();
        let fields: Vec<_> = self
            .keep
            .iter()
            .map(|&i| root.get_fields()[i].clone())
            .collect();
        let schema = ParquetType::group_type_builder(root.name())
            .with_fields(fields)
            .build()
            .map_err(parquet)?;
        let mut props = WriterProperties::builder()
            .set_created_by(format!("tidemark {}", env!("CARGO_PKG_VERSION")))
            .build();
        deltalake::parquet::arrow::add_encoded_arrow_schema_to_metadata(&self.arrow, &mut props);
        let mut writer =
            SerializedFileWriter::new(&out, Arc::new(schema), Arc::new(props)).map_err(parquet)?;
        for &g in &p.row_groups {
            let group = self.meta.row_group(g);
            let mut rg = writer.next_row_group().map_err(parquet)?;
            for &c in &self.keep {
                let chunk = group.column(c);
                rg.append_column(
                    &source,
                    ColumnCloseResult {
                        bytes_written: chunk.compressed_size() as u64,
                        rows_written: group.num_rows() as u64,
                        metadata: chunk.clone(),
                        bloom_filter: None,
                        column_index: None,
                        offset_index: None,
                    },
                )
                .map_err(parquet)?;
            }
            rg.close().map_err(parquet)?;
        }
        writer.close().map_err(parquet)?;
        out.sync_all()
            .map_err(|e| EngineError::io(format!("fsync {}", dest.display()), e))?;
        fsio::sync_dir(parent)?;
        let size = std::fs::metadata(&dest)
            .map_err(|e| EngineError::io(format!("stat {}", dest.display()), e))?
            .len();
        let values = p
            .values
            .iter()
            .map(|(c, v)| (c.clone(), Some(v.clone())))
            .collect();
        adopt::add_action(rel, values, size, data)
    }
}

/// Why the staged file's partitions cannot be copied into the table (None: they can, row
/// groups permitting): its columns other than the partition columns must be the table's,
/// of the same physical types ([`adopt::refusal`]'s test).
pub fn refusal(staged: &SchemaRef, table: &SchemaRef, partition_cols: &[String]) -> Option<String> {
    let data_fields = |s: &SchemaRef| {
        Arc::new(ArrowSchema::new(
            s.fields()
                .iter()
                .filter(|f| !partition_cols.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ))
    };
    adopt::refusal(&data_fields(staged), &data_fields(table), &[], false)
}

/// A partition's values as Delta's log spells them, when each can also name a directory as
/// it is (None: the partition is written by the writer, which escapes what needs it).
fn log_values(cols: &[String], values: &[AnyValue]) -> Option<Vec<(String, String)>> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    cols.iter()
        .zip(values)
        .map(|(c, v)| {
            let text = match v {
                AnyValue::String(s) => s.to_string(),
                AnyValue::StringOwned(s) => s.to_string(),
                AnyValue::Date(d) => chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
                    .filter(|d| (1..=9999).contains(&chrono::Datelike::year(d)))?
                    .format("%Y-%m-%d")
                    .to_string(),
                v if v.is_integer() => v.to_string(),
                _ => return None,
            };
            (plain(c) && plain(&text)).then(|| (c.clone(), text))
        })
        .collect()
}
