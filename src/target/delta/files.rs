//! A Delta table's live data files as tidemark's own commits read them: each file's path,
//! partition values (typed), integer key range (from its statistics), the `add` it is live
//! by and its deletion vector; and their scans in the table's columns, where a column a file
//! does not store reads null and the rows its deletion vector deletes are left out (so a
//! table with deletion vectors, written by tidemark or by any other writer, reads right).

use super::dv;
use crate::error::{EngineError, Result};
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add, DeletionVectorDescriptor};
use polars::prelude::*;
use roaring::RoaringTreemap;
use std::path::{Path, PathBuf};

/// The physical row position of each scanned row (0-based, in the file).
pub const ROW_COL: &str = "__tm_row";

/// One live data file.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// Where it is (local tables).
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// Partition values, typed as the table's columns.
    pub partition: Vec<(String, AnyValue<'static>)>,
    /// Integer key statistics (min, max), when the file has them.
    pub key_range: Option<(i64, i64)>,
    /// The `remove` that retires it (carrying its deletion vector, which names it).
    pub remove: Action,
    /// The `add` it is live by (tags, statistics, partition values).
    pub add: Add,
    /// Its deletion vector, when some of its rows are deleted.
    pub dv: Option<DeletionVectorDescriptor>,
    /// The positions its deletion vector deletes (loaded by [`load_deleted`]).
    pub deleted: Option<Arc<RoaringTreemap>>,
}

impl TableFile {
    /// Rows the file stores (deleted ones included), from its statistics.
    pub fn physical_rows(&self) -> Option<u64> {
        let stats: serde_json::Value = serde_json::from_str(self.add.stats.as_deref()?).ok()?;
        stats["numRecords"].as_u64()
    }
}

fn partition_value(raw: Option<&str>, dtype: &DataType, name: &str) -> Result<AnyValue<'static>> {
    let Some(raw) = raw else {
        return Ok(AnyValue::Null);
    };
    if *dtype == DataType::Date {
        let day = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|e| {
            EngineError::Integrity(format!(
                "partition value {raw:?} of `{name}` is not a date: {e}"
            ))
        })?;
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
        return Ok(AnyValue::Date((day - epoch).num_days() as i32));
    }
    let s = Series::new(name.into(), [raw]);
    let cast = s.strict_cast(dtype).map_err(|e| {
        EngineError::Integrity(format!(
            "partition value {raw:?} of `{name}` is not a {dtype}: {e}"
        ))
    })?;
    Ok(cast.get(0)?.into_static())
}

/// The table's live files (`schema`: the table's Polars schema, for partition values).
pub fn table_files(
    t: &DeltaTable,
    table_dir: &str,
    schema: &Schema,
    int_key: Option<&str>,
) -> Result<Vec<TableFile>> {
    let snapshot = t.snapshot().map_err(|e| EngineError::delta(table_dir, e))?;
    let partition_cols: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let mut out = Vec::new();
    for f in snapshot.log_data().iter() {
        let values = f.partition_values_map();
        let mut partition = Vec::with_capacity(partition_cols.len());
        for p in &partition_cols {
            let dtype = schema.get(p.as_str()).expect("checked by `unsupported`");
            let raw = values.get(p).and_then(|v| v.as_deref());
            partition.push((p.clone(), partition_value(raw, dtype, p)?));
        }
        let key_range = int_key.and_then(|k| {
            let stats: serde_json::Value = serde_json::from_str(&f.stats()?).ok()?;
            Some((
                stats["minValues"][k].as_i64()?,
                stats["maxValues"][k].as_i64()?,
            ))
        });
        #[allow(deprecated)]
        let add = f.add_action();
        out.push(TableFile {
            path: Path::new(table_dir).join(f.path().as_ref()),
            size: f.size().max(0) as u64,
            partition,
            key_range,
            remove: f.remove_action(true).into(),
            dv: add.deletion_vector.clone(),
            add,
            deleted: None,
        });
    }
    Ok(out)
}

/// Loads the deletion vectors of `files` (each DV file read once).
pub async fn load_deleted(t: &DeltaTable, files: &mut [TableFile]) -> Result<()> {
    let mut reader = dv::Reader::of(t);
    for f in files.iter_mut() {
        if let (Some(d), None) = (&f.dv, &f.deleted) {
            f.deleted = Some(Arc::new(reader.read(d).await?));
        }
    }
    Ok(())
}

/// A file's live rows with its partition columns added, in the table's column order and
/// types, and [`ROW_COL`]: each row's physical position. A column the file does not store
/// (added to the table after it was written) reads null; rows its deletion vector deletes
/// are left out (the file's DV must have been loaded).
pub fn scan_file(f: &TableFile, columns: &[String], schema: &Schema) -> Result<LazyFrame> {
    if f.dv.is_some() && f.deleted.is_none() {
        return Err(EngineError::Integrity(format!(
            "{}: its deletion vector was not loaded",
            f.path.display()
        )));
    }
    let path = f.path.to_string_lossy().into_owned();
    let args = ScanArgsParquet {
        // The index is taken by the scan, before any filter: a physical position.
        row_index: Some(RowIndex {
            name: ROW_COL.into(),
            offset: 0,
        }),
        ..Default::default()
    };
    let mut lf = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), args)?;
    if let Some(deleted) = f.deleted.as_ref().filter(|d| !d.is_empty()) {
        let positions: Vec<IdxSize> = deleted.iter().map(|p| p as IdxSize).collect();
        let positions = Series::new("deleted".into(), positions);
        lf = lf.filter(
            col(ROW_COL)
                .is_in(lit(positions).implode(false), false)
                .not(),
        );
    }
    let parts: Vec<Expr> = f
        .partition
        .iter()
        .map(|(name, v)| {
            let dtype = schema.get(name.as_str()).cloned().unwrap_or(DataType::Null);
            lit(Scalar::new(dtype, v.clone())).alias(name.as_str())
        })
        .collect();
    if !parts.is_empty() {
        lf = lf.with_columns(parts);
    }
    let stored = lf.collect_schema().map_err(|e| EngineError::CorruptInput {
        path: f.path.clone(),
        reason: e.to_string(),
    })?;
    let mut select: Vec<Expr> = columns
        .iter()
        .map(|c| {
            let dtype = schema.get(c.as_str()).cloned().unwrap_or(DataType::Null);
            if stored.contains(c.as_str()) {
                col(c.as_str()).strict_cast(dtype)
            } else {
                lit(NULL).cast(dtype).alias(c.as_str())
            }
        })
        .collect();
    select.push(col(ROW_COL));
    Ok(lf.select(select))
}

/// The whole table as one lazy frame over its files (for audit checks that read the
/// target): only what a query needs is read, deletion vectors applied.
pub async fn scan_table(t: &DeltaTable, table_dir: &str, schema: &Schema) -> Result<LazyFrame> {
    let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let mut files = table_files(t, table_dir, schema, None)?;
    if files.is_empty() {
        return Ok(DataFrame::empty_with_schema(schema).lazy());
    }
    load_deleted(t, &mut files).await?;
    let frames = files
        .iter()
        .map(|f| {
            Ok(scan_file(f, &columns, schema)?.drop(Selector::ByName {
                names: Arc::new([ROW_COL.into()]),
                strict: true,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(concat(frames, UnionArgs::default())?)
}
