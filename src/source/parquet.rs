//! The Parquet source: a directory of `*.parquet` files (or a glob), read lazily.
//!
//! Cost follows the new data: each file's footer statistics are read first, and a file whose
//! cursor maximum lies below the window is never opened for data. The remaining files are
//! scanned with the window predicate pushed down, so Polars skips their row groups that lie
//! below it. Each scanned row carries its file ordinal and row index, the deterministic
//! tie-break of the dedup (later file, then later row).

use crate::error::{EngineError, Result};
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Schema as ArrowSchema, TimeUnit as ArrowUnit,
};
use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
use deltalake::parquet::file::statistics::Statistics;
use polars::prelude::*;
use std::path::{Path, PathBuf};
use tidemark_workflows::cursor::CursorType;

/// Hidden column: the file ordinal of a row.
pub const FILE_COL: &str = "__tm_file";
/// Hidden column: the row index within its file.
pub const ROW_COL: &str = "__tm_row";
/// Hidden column: the cursor as i64 (µs for timestamps).
pub const CURSOR_COL: &str = "__tm_cursor";

/// How the cursor column is physically stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorEncoding {
    /// Timestamp with a unit.
    Timestamp(ArrowUnit),
    /// Date (days since epoch).
    Date,
    /// An integer.
    Integer,
}

impl CursorEncoding {
    /// The cursor type this encoding implies.
    pub fn cursor_type(self) -> CursorType {
        match self {
            CursorEncoding::Integer => CursorType::Integer,
            _ => CursorType::Timestamp,
        }
    }
}

/// A source file and what its footer says.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path.
    pub path: PathBuf,
    /// Position in the sorted listing: later files win ties.
    pub ordinal: u32,
    /// Columns and their Arrow types, in order.
    pub columns: Vec<(String, ArrowType)>,
    /// Cursor encoding.
    pub cursor: CursorEncoding,
    /// Greatest cursor value from statistics (µs or integer), when every row group has one.
    pub cursor_max: Option<i64>,
}

/// Lists the Parquet files of a source path, sorted by name: a directory's `*.parquet`
/// files, a glob's matches, or a single file.
pub fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(|e| EngineError::io(format!("list {path}"), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "parquet"))
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else if path.contains(['*', '?', '[']) {
        glob::glob(path)
            .map_err(|e| {
                EngineError::Spec(format!("source.path {path:?} is not a valid glob: {e}"))
            })?
            .filter_map(|g| g.ok())
            .filter(|f| f.is_file())
            .collect()
    } else {
        return Err(EngineError::SourceMissing(format!(
            "{path} does not exist (source.path must be a directory of .parquet files, a file, or a glob)"
        )));
    };
    files.sort();
    if files.is_empty() {
        return Err(EngineError::SourceMissing(format!(
            "{path} holds no .parquet file"
        )));
    }
    Ok(files)
}

/// Reads a file's footer: schema and the cursor's maximum from row-group statistics.
pub fn inspect(path: &Path, ordinal: u32, cursor: &str) -> Result<SourceFile> {
    let corrupt = |reason: String| EngineError::CorruptInput {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| corrupt(e.to_string()))?;
    let meta = reader.metadata();
    let schema: ArrowSchema = deltalake::parquet::arrow::parquet_to_arrow_schema(
        meta.file_metadata().schema_descr(),
        meta.file_metadata().key_value_metadata(),
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let columns: Vec<(String, ArrowType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let Some((_, cursor_type)) = columns.iter().find(|(n, _)| n == cursor) else {
        return Err(EngineError::Schema(format!(
            "cursor column `{cursor}` is missing from {} (columns: {})",
            path.display(),
            columns
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let encoding = match cursor_type {
        ArrowType::Timestamp(unit, _) => CursorEncoding::Timestamp(*unit),
        ArrowType::Date32 => CursorEncoding::Date,
        ArrowType::Int8
        | ArrowType::Int16
        | ArrowType::Int32
        | ArrowType::Int64
        | ArrowType::UInt8
        | ArrowType::UInt16
        | ArrowType::UInt32 => CursorEncoding::Integer,
        other => {
            return Err(EngineError::Schema(format!(
                "cursor column `{cursor}` in {} has type {other}; a cursor must be a timestamp, a date or an integer",
                path.display()
            )));
        }
    };
    let leaf = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts().len() == 1 && c.path().parts()[0] == cursor);
    let mut cursor_max: Option<i64> = None;
    let mut complete = leaf.is_some() && meta.num_row_groups() > 0;
    if let Some(leaf) = leaf {
        for rg in meta.row_groups() {
            let physical = match rg.column(leaf).statistics() {
                Some(Statistics::Int64(s)) => s.max_opt().copied(),
                Some(Statistics::Int32(s)) => s.max_opt().map(|v| *v as i64),
                _ => None,
            };
            match physical {
                Some(v) => cursor_max = Some(cursor_max.map_or(v, |m| m.max(v))),
                None if rg.num_rows() == 0 => {}
                None => complete = false,
            }
        }
    }
    let cursor_max = if complete {
        cursor_max.map(|v| to_cursor_units(v, encoding))
    } else {
        None
    };
    Ok(SourceFile {
        path: path.to_path_buf(),
        ordinal,
        columns,
        cursor: encoding,
        cursor_max,
    })
}

/// Converts a physical cursor value to cursor units (µs for timestamps), rounding down.
fn to_cursor_units(v: i64, enc: CursorEncoding) -> i64 {
    match enc {
        CursorEncoding::Integer => v,
        CursorEncoding::Date => v.saturating_mul(86_400_000_000),
        CursorEncoding::Timestamp(ArrowUnit::Second) => v.saturating_mul(1_000_000),
        CursorEncoding::Timestamp(ArrowUnit::Millisecond) => v.saturating_mul(1_000),
        CursorEncoding::Timestamp(ArrowUnit::Microsecond) => v,
        CursorEncoding::Timestamp(ArrowUnit::Nanosecond) => v.div_euclid(1_000),
    }
}

/// Checks that every file has the first file's columns and types, naming the first drift.
pub fn check_same_schema(files: &[SourceFile]) -> Result<()> {
    let Some(first) = files.first() else {
        return Ok(());
    };
    for f in &files[1..] {
        if f.columns == first.columns {
            continue;
        }
        for (name, ty) in &first.columns {
            match f.columns.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(EngineError::Schema(format!(
                        "schema drift: column `{name}` of {} is missing from {}",
                        first.path.display(),
                        f.path.display()
                    )));
                }
                Some((_, t)) if t != ty => {
                    return Err(EngineError::Schema(format!(
                        "schema drift: column `{name}` is {ty} in {} but {t} in {}",
                        first.path.display(),
                        f.path.display()
                    )));
                }
                _ => {}
            }
        }
        let extra: Vec<&str> = f
            .columns
            .iter()
            .filter(|(n, _)| !first.columns.iter().any(|(m, _)| m == n))
            .map(|(n, _)| n.as_str())
            .collect();
        return Err(EngineError::Schema(format!(
            "schema drift: {} has column(s) {} that {} lacks",
            f.path.display(),
            extra.join(", "),
            first.path.display()
        )));
    }
    Ok(())
}

/// The window predicate on the cursor column in its own type (so statistics can prune),
/// keeping null cursors so the caller can count or refuse them.
fn window_predicate(cursor: &str, enc: CursorEncoding, dtype: &DataType, low: i64) -> Expr {
    let bound = match enc {
        CursorEncoding::Integer => lit(low).cast(dtype.clone()),
        CursorEncoding::Date => lit(low.div_euclid(86_400_000_000) as i32).cast(DataType::Date),
        CursorEncoding::Timestamp(unit) => {
            let v = match unit {
                ArrowUnit::Second => low.div_euclid(1_000_000),
                ArrowUnit::Millisecond => low.div_euclid(1_000),
                ArrowUnit::Microsecond => low,
                ArrowUnit::Nanosecond => low.saturating_mul(1_000),
            };
            lit(v).cast(dtype.clone())
        }
    };
    col(cursor).is_null().or(col(cursor).gt_eq(bound))
}

/// Scans the given files lazily: window filter pushed down, hidden columns added
/// (file ordinal, row index, cursor as i64).
pub fn scan_window(files: &[SourceFile], cursor: &str, low: Option<i64>) -> Result<LazyFrame> {
    let mut frames = Vec::with_capacity(files.len());
    for f in files {
        let args = ScanArgsParquet {
            row_index: Some(RowIndex {
                name: ROW_COL.into(),
                offset: 0,
            }),
            ..Default::default()
        };
        let path = f.path.to_string_lossy().into_owned();
        let mut lf = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), args)?;
        if let Some(low) = low {
            let schema = lf.collect_schema().map_err(|e| EngineError::CorruptInput {
                path: f.path.clone(),
                reason: e.to_string(),
            })?;
            let dtype = schema.get(cursor).cloned().ok_or_else(|| {
                EngineError::Schema(format!("cursor `{cursor}` missing from {path}"))
            })?;
            lf = lf.filter(window_predicate(cursor, f.cursor, &dtype, low));
        }
        let cursor_i64 = match f.cursor {
            CursorEncoding::Integer => col(cursor).cast(DataType::Int64),
            _ => col(cursor).dt().timestamp(TimeUnit::Microseconds),
        };
        lf = lf.with_columns([
            lit(f.ordinal).cast(DataType::UInt32).alias(FILE_COL),
            cursor_i64.alias(CURSOR_COL),
        ]);
        frames.push(lf);
    }
    if frames.len() == 1 {
        return Ok(frames.pop().expect("one frame"));
    }
    Ok(concat(frames, UnionArgs::default())?)
}
