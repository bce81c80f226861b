//! Small Polars helpers shared by batch building and the targets: row identity hashes, durable Parquet writing.

use crate::error::{EngineError, Result};
use crate::state::fsio;
use polars::prelude::*;
use sha2::{Digest, Sha256};
use std::path::Path;

/// A stable identity hash per row over `columns` (their displayed values), used for append
/// mode's boundary set. Stable across runs for the same values.
pub fn row_hashes(df: &DataFrame, columns: &[String]) -> Result<Vec<String>> {
    let sub = df.select(columns.iter().map(|c| c.as_str()))?;
    let mut out = Vec::with_capacity(sub.height());
    for i in 0..sub.height() {
        let row = sub.get_row(i)?;
        let mut h = Sha256::new();
        for v in row.0 {
            h.update(format!("{v:?}").as_bytes());
            h.update([0x1f]);
        }
        out.push(hex::encode(&h.finalize()[..16]));
    }
    Ok(out)
}

/// Writes `df` as Parquet to `path` durably (temp file, fsync, rename, fsync dir), its Arrow
/// schema hint in plain types (`arrow_hint`). With
/// `cluster_by` columns, the rows are grouped by their values and no row group holds two
/// groups ([`write_clustered`]).
pub fn write_parquet_durable(df: &mut DataFrame, path: &Path, cluster_by: &[String]) -> Result<()> {
    let dir = path.parent().expect("batch path has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let file = std::fs::File::create(&tmp)
        .map_err(|e| EngineError::io(format!("create {}", tmp.display()), e))?;
    if cluster_by.is_empty() {
        ParquetWriter::new(&file).finish(df)?;
    } else {
        write_clustered(df, &file, cluster_by)?;
    }
    super::arrow_hint::make_plain(&tmp)?;
    file.sync_all()
        .map_err(|e| EngineError::io(format!("fsync {}", tmp.display()), e))?;
    fsio::rename_durable(&tmp, path)
}

/// Rows per row group, as Polars writes by default.
const ROW_GROUP_ROWS: usize = 512 * 512;

/// Writes `df` grouped by the values of `cluster_by` (groups in order of first appearance,
/// rows in their order within a group), each group in row groups of its own: a batch for a
/// partitioned Delta table, whose partitions the promote can then copy into the table as
/// they are (`target::delta::copy`). `df` is replaced by the grouped frame.
fn write_clustered(df: &mut DataFrame, file: &std::fs::File, cluster_by: &[String]) -> Result<()> {
    let groups = df.partition_by_stable(cluster_by.iter().map(|c| c.as_str()), true)?;
    let mut writer = ParquetWriter::new(file).batched(df.schema())?;
    // The grouped frame replaces the input (the caller's rows, in the file's order), so
    // only one copy of the rows outlives the write.
    *df = DataFrame::empty();
    let mut out: Vec<DataFrame> = Vec::with_capacity(groups.len());
    for mut g in groups {
        g.rechunk_mut();
        let mut offset = 0;
        while offset < g.height() {
            let len = ROW_GROUP_ROWS.min(g.height() - offset);
            writer.write_batch(&g.slice(offset as i64, len))?;
            offset += len;
        }
        out.push(g);
    }
    writer.finish()?;
    *df = match out.len() {
        0 => DataFrame::empty(),
        _ => {
            let mut all = out.remove(0);
            for g in &out {
                all.vstack_mut(g)?;
            }
            all
        }
    };
    Ok(())
}

/// The names of a frame's columns that are not hidden (`__tm_*`).
pub fn visible_columns(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .into_iter()
        .filter(|n| !n.starts_with("__tm_"))
        .map(|n| n.to_string())
        .collect()
}
