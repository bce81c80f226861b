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

/// Writes `df` as Parquet to `path` durably (temp file, fsync, rename, fsync dir).
pub fn write_parquet_durable(df: &mut DataFrame, path: &Path) -> Result<()> {
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
    ParquetWriter::new(&file).finish(df)?;
    file.sync_all()
        .map_err(|e| EngineError::io(format!("fsync {}", tmp.display()), e))?;
    fsio::rename_durable(&tmp, path)
}

/// The names of a frame's columns that are not hidden (`__tm_*`).
pub fn visible_columns(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .into_iter()
        .filter(|n| !n.starts_with("__tm_"))
        .map(|n| n.to_string())
        .collect()
}
