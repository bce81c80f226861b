//! The Parquet source: a directory of `*.parquet` files (or a glob), read lazily.
//!
//! Cost follows the new data: each file's footer statistics are read first, and a file whose
//! cursor maximum lies below the window is never opened for data. The remaining files are
//! scanned with the window predicate pushed down, so Polars skips their row groups that lie
//! below it. Each scanned row carries its file ordinal and row index, the deterministic
//! tie-break of the dedup (later file, then later row).
//!
//! On object storage (`path = "s3://bucket/prefix"`, also `gs://`, `az://`) the prefix's
//! `*.parquet` objects are listed with one delimiter listing, each footer is read with ranged
//! GETs (never the whole file), and only the files the statistics keep are downloaded into
//! the worker's private scratch directory for the scan.

use super::Source;
use crate::batch::cut::{self, Cut, Smallest};
use crate::batch::{
    CURSOR_COL, Extracted, FILE_COL, ROW_COL, Reach, RunContext, check_cursor_type, rows,
    window_low,
};
use crate::contract;
use crate::error::{EngineError, Result};
use crate::state::watermark::Watermark;
use crate::storage::{Location, Remote};
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Schema as ArrowSchema, TimeUnit as ArrowUnit,
};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
use deltalake::parquet::file::statistics::Statistics;
use polars::prelude::*;
use std::path::{Path, PathBuf};
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::ProcessManifest;
use tidemark_workflows::spec::{PipelineSpec, SchemaContract};

/// The Parquet-files source.
pub struct ParquetFiles;

impl Source for ParquetFiles {
    fn build(&self, run: &RunContext<'_>) -> Result<ProcessManifest> {
        rows::finish(run, extract(run.spec, run.store, Some(run.reach()))?)
    }

    fn preview(
        &self,
        spec: &PipelineSpec,
        store: Option<&Watermark>,
    ) -> Result<Option<super::Preview>> {
        preview(spec, store)
    }
}

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
    /// The cursor column's leaf index in the file's Parquet schema.
    pub cursor_leaf: Option<usize>,
    /// Each row group's rows, uncompressed bytes and cursor range (from statistics).
    pub row_groups: Vec<RowGroupStats>,
}

/// What a footer says of one row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupStats {
    /// Rows.
    pub rows: u64,
    /// Uncompressed bytes (all columns).
    pub bytes: u64,
    /// Least cursor value (cursor units), when the statistics have one.
    pub min: Option<i64>,
    /// Greatest cursor value (cursor units), when the statistics have one.
    pub max: Option<i64>,
}

impl RowGroupStats {
    /// Whether the group may hold rows in `[low, high]` (unknown statistics: yes).
    fn overlaps(&self, low: Option<i64>, high: Option<i64>) -> bool {
        let above_low = match (low, self.max) {
            (Some(l), Some(m)) => m >= l,
            _ => true,
        };
        let below_high = match (high, self.min) {
            (Some(h), Some(m)) => m <= h,
            _ => true,
        };
        self.rows > 0 && above_low && below_high
    }
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
    inspect_footer(path, ordinal, cursor, reader.metadata())
}

/// A source prefix on object storage, `None` for a local path. Its store takes the
/// environment's credentials, plus the target's `storage_options` when both are on the same
/// kind of store.
fn remote_source(spec: &PipelineSpec) -> Result<Option<Remote>> {
    let url = match crate::storage::parse(&spec.source.path)? {
        Location::Local(_) => return Ok(None),
        Location::Remote(url) => url,
    };
    crate::storage::use_spec_options(spec);
    Remote::open(&url, &Default::default()).map(Some)
}

/// The `*.parquet` objects directly under a source prefix (keys and sizes), sorted by name;
/// a URL ending in `.parquet` names one object.
pub fn list_remote(remote: &Remote, path: &str) -> Result<Vec<(String, u64)>> {
    if path.contains(['*', '?', '[']) {
        return Err(EngineError::Spec(format!(
            "source.path {path:?}: globs are not supported on object storage; give the prefix that holds the .parquet files"
        )));
    }
    let files: Vec<(String, u64)> = remote
        .list_files("")?
        .into_iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .collect();
    if files.is_empty() {
        return Err(EngineError::SourceMissing(format!(
            "{path} holds no .parquet object"
        )));
    }
    Ok(files)
}

/// [`inspect`] of an object: the footer read with ranged GETs.
pub fn inspect_remote(
    remote: &Remote,
    key: &str,
    size: u64,
    ordinal: u32,
    cursor: &str,
) -> Result<SourceFile> {
    use deltalake::parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    use object_store::ObjectStoreExt;
    let url = PathBuf::from(remote.url_of(key));
    let corrupt = |reason: String| EngineError::CorruptInput {
        path: url.clone(),
        reason,
    };
    if size < 12 {
        return Err(corrupt(format!(
            "{size} bytes is too short for a Parquet file"
        )));
    }
    // One ranged GET of the file's tail (footer and, usually, the whole metadata), a second
    // only when the metadata is larger than that.
    let (store, path) = (remote.store().clone(), remote.object_path(key));
    let storage = |e| EngineError::Storage {
        context: format!("read the footer of {}", url.display()),
        source: e,
    };
    let tail_len = size.min(64 << 10);
    let tail =
        crate::storage::block_on(store.get_range(&path, size - tail_len..size)).map_err(storage)?;
    let last8: [u8; 8] = tail[tail.len() - 8..].try_into().expect("8 bytes");
    let footer = FooterTail::try_new(&last8).map_err(|e| corrupt(e.to_string()))?;
    let meta_len = footer.metadata_length() as u64;
    if meta_len + 8 > size {
        return Err(corrupt(format!(
            "the footer says {meta_len} bytes of metadata in a {size}-byte file"
        )));
    }
    let meta_bytes = if meta_len + 8 <= tail_len {
        tail.slice((tail_len - 8 - meta_len) as usize..(tail_len - 8) as usize)
    } else {
        crate::storage::block_on(store.get_range(&path, size - 8 - meta_len..size - 8))
            .map_err(storage)?
    };
    let meta =
        ParquetMetaDataReader::decode_metadata(&meta_bytes).map_err(|e| corrupt(e.to_string()))?;
    inspect_footer(&url, ordinal, cursor, &meta)
}

/// What a footer says: schema, cursor encoding and maximum.
fn inspect_footer(
    path: &Path,
    ordinal: u32,
    cursor: &str,
    meta: &deltalake::parquet::file::metadata::ParquetMetaData,
) -> Result<SourceFile> {
    let corrupt = |reason: String| EngineError::CorruptInput {
        path: path.to_path_buf(),
        reason,
    };
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
    let mut row_groups = Vec::with_capacity(meta.num_row_groups());
    for rg in meta.row_groups() {
        let (min, max) = match leaf.and_then(|l| rg.column(l).statistics()) {
            Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied()),
            Some(Statistics::Int32(s)) => (
                s.min_opt().map(|v| *v as i64),
                s.max_opt().map(|v| *v as i64),
            ),
            _ => (None, None),
        };
        row_groups.push(RowGroupStats {
            rows: rg.num_rows().max(0) as u64,
            bytes: rg.total_byte_size().max(0) as u64,
            min: min.map(|v| to_cursor_units(v, encoding)),
            max: max.map(|v| to_cursor_units(v, encoding)),
        });
    }
    let complete = leaf.is_some()
        && !row_groups.is_empty()
        && row_groups.iter().all(|g| g.rows == 0 || g.max.is_some());
    let cursor_max = if complete {
        row_groups.iter().filter_map(|g| g.max).max()
    } else {
        None
    };
    Ok(SourceFile {
        path: path.to_path_buf(),
        ordinal,
        columns,
        cursor: encoding,
        cursor_max,
        cursor_leaf: leaf,
        row_groups,
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

/// A cursor bound (cursor units) as a literal of the column's own type, rounded so that
/// `column <= literal` keeps exactly the values at or below `v` once converted (rounding down)
/// to cursor units, and `column >= literal` those at or above it (`upper` picks which).
fn bound_literal(enc: CursorEncoding, dtype: &DataType, v: i64, upper: bool) -> Expr {
    const DAY_US: i64 = 86_400_000_000;
    match enc {
        CursorEncoding::Integer => lit(v).cast(dtype.clone()),
        CursorEncoding::Date => lit(v.div_euclid(DAY_US) as i32).cast(DataType::Date),
        CursorEncoding::Timestamp(unit) => {
            let raw = match unit {
                ArrowUnit::Second => v.div_euclid(1_000_000),
                ArrowUnit::Millisecond => v.div_euclid(1_000),
                ArrowUnit::Microsecond => v,
                ArrowUnit::Nanosecond if upper => v.saturating_mul(1_000).saturating_add(999),
                ArrowUnit::Nanosecond => v.saturating_mul(1_000),
            };
            lit(raw).cast(dtype.clone())
        }
    }
}

/// The window predicate on the cursor column in its own type (so statistics can prune):
/// `low <= cursor <= high` (either bound optional), keeping null cursors so the caller can
/// count or refuse them. None: no bound.
fn window_predicate(
    cursor: &str,
    enc: CursorEncoding,
    dtype: &DataType,
    low: Option<i64>,
    high: Option<i64>,
) -> Option<Expr> {
    let lower = low.map(|l| col(cursor).gt_eq(bound_literal(enc, dtype, l, false)));
    let upper = high.map(|h| col(cursor).lt_eq(bound_literal(enc, dtype, h, true)));
    let inside = match (lower, upper) {
        (Some(l), Some(u)) => l.and(u),
        (Some(b), None) | (None, Some(b)) => b,
        (None, None) => return None,
    };
    Some(col(cursor).is_null().or(inside))
}

/// The window's files as one lazy frame, with what unifying their schemas did.
pub struct Scan {
    /// Window filter pushed down, hidden columns added (file ordinal, row index, cursor as
    /// i64), every file read into the unified schema.
    pub frame: LazyFrame,
    /// How the files' schemas were unified under the contract.
    pub unified: contract::Unified,
}

/// Scans the given files lazily: window filter pushed down, hidden columns added
/// (file ordinal, row index, cursor as i64), and each file read into one schema the
/// contract makes of theirs (`[schema]`: with the default contract, any difference among
/// the files is refused, naming both).
/// `names` say where each file is, for messages (a downloaded object's URL); `high` is the
/// batch's cut, when the window is read in batches.
pub fn scan_window(
    files: &[SourceFile],
    names: &[String],
    cursor: &str,
    (low, high): (Option<i64>, Option<i64>),
    schema: &SchemaContract,
) -> Result<Scan> {
    let mut frames = Vec::with_capacity(files.len());
    let mut inputs = Vec::with_capacity(files.len());
    for (f, name) in files.iter().zip(names) {
        let args = ScanArgsParquet {
            row_index: Some(RowIndex {
                name: ROW_COL.into(),
                offset: 0,
            }),
            ..Default::default()
        };
        let path = f.path.to_string_lossy().into_owned();
        let mut lf = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), args)?;
        let file_schema = lf.collect_schema().map_err(|e| EngineError::CorruptInput {
            path: f.path.clone(),
            reason: e.to_string(),
        })?;
        if low.is_some() || high.is_some() {
            let dtype = file_schema.get(cursor).cloned().ok_or_else(|| {
                EngineError::Schema(format!("cursor `{cursor}` missing from {path}"))
            })?;
            if let Some(p) = window_predicate(cursor, f.cursor, &dtype, low, high) {
                lf = lf.filter(p);
            }
        }
        inputs.push(contract::Input {
            origin: name.clone(),
            columns: file_schema
                .iter()
                .filter(|(n, _)| !n.starts_with("__tm_"))
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
        });
        frames.push(lf);
    }
    let unified = contract::unify_inputs(schema, &inputs)?;
    let mut out = Vec::with_capacity(frames.len());
    for ((lf, f), (input, plan)) in frames
        .into_iter()
        .zip(files)
        .zip(inputs.iter().zip(&unified.plans))
    {
        let cursor_i64 = match f.cursor {
            CursorEncoding::Integer => col(cursor).cast(DataType::Int64),
            _ => col(cursor).dt().timestamp(TimeUnit::Microseconds),
        };
        let mut lf = lf.with_columns([
            lit(f.ordinal).cast(DataType::UInt32).alias(FILE_COL),
            cursor_i64.alias(CURSOR_COL),
        ]);
        if unified.changed() {
            // Every file in the unified columns and types: a column it lacks is null, a
            // narrower type is cast up, a dropped column is left out.
            let mut select: Vec<Expr> = unified
                .columns
                .iter()
                .map(|(name, dtype)| {
                    if plan.missing.contains(name) {
                        lit(NULL).cast(dtype.clone()).alias(name.as_str())
                    } else if input.columns.iter().any(|(n, t)| n == name && t != dtype) {
                        col(name.as_str()).strict_cast(dtype.clone())
                    } else {
                        col(name.as_str())
                    }
                })
                .collect();
            select.extend([col(ROW_COL), col(FILE_COL), col(CURSOR_COL)]);
            lf = lf.select(select);
        }
        out.push(lf);
    }
    let frame = if out.len() == 1 {
        out.pop().expect("one frame")
    } else {
        concat(out, UnionArgs::default())?
    };
    Ok(Scan { frame, unified })
}

/// A run's window over the source's files: which files it reads (the statistics pruned the
/// others), local copies of remote ones, and their lazy scan.
struct Window {
    files_total: u64,
    files_skipped: u64,
    origins: Vec<String>,
    cursor_type: CursorType,
    window_low: Option<i64>,
    /// The files read, where they are (remote ones: their URLs).
    live: Vec<SourceFile>,
    /// The files read, where they can be opened (remote ones: downloaded copies).
    local: Vec<SourceFile>,
    /// Keeps downloaded copies until the window is dropped.
    _scratch: Option<tempfile::TempDir>,
    scan: Option<Scan>,
    /// Where the batch ends, when the window is bigger than the budget.
    cut: Option<Cut>,
}

/// Lists the files and their footers, fixes the cursor type and the window, cuts it at the
/// batch budget when `reach` is given, and scans the files the batch needs (downloading
/// remote ones into private scratch).
fn open_window(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    reach: Option<Reach>,
) -> Result<Window> {
    let src = &spec.source;
    // Files and their footers.
    let remote = remote_source(spec)?;
    let mut files = Vec::new();
    match &remote {
        None => {
            for (i, p) in list_files(&src.path)?.iter().enumerate() {
                files.push(inspect(p, i as u32, &src.cursor)?);
            }
        }
        Some(r) => {
            for (i, (key, size)) in list_remote(r, &src.path)?.iter().enumerate() {
                files.push(inspect_remote(r, key, *size, i as u32, &src.cursor)?);
            }
        }
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

    let mut live: Vec<_> = files
        .iter()
        .filter(|f| match (window_low, f.cursor_max) {
            (Some(low), Some(max)) => max >= low,
            _ => true,
        })
        .cloned()
        .collect();
    let files_skipped = (files.len() - live.len()) as u64;
    // The files this run reads are unified under the contract (and the batch is compared
    // with the target at promote): an old file that the window excludes does not wedge the
    // pipeline forever.
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
    let mut fetch = Fetch::new(remote.as_ref());
    // A window bigger than the budget is cut: the files wholly above the cut wait.
    let cut = match reach {
        Some(reach) => find_cut(
            &live,
            &mut fetch,
            window_low,
            reach.upper(cursor_type),
            store.and_then(|w| w.value),
            reach,
        )?,
        None => None,
    };
    if let Some(c) = &cut {
        live.retain(|f| file_min(f).is_none_or(|m| m <= c.high));
    }
    let mut local = live.clone();
    for f in &mut local {
        f.path = fetch.local(f)?;
    }
    let names: Vec<String> = live.iter().map(|f| f.path.display().to_string()).collect();
    let scan = if live.is_empty() {
        None
    } else {
        Some(scan_window(
            &local,
            &names,
            &src.cursor,
            (window_low, cut.map(|c| c.high)),
            &spec.schema,
        )?)
    };
    Ok(Window {
        files_total: files.len() as u64,
        files_skipped,
        origins: files.iter().map(|f| f.path.display().to_string()).collect(),
        cursor_type,
        window_low,
        live,
        local,
        _scratch: fetch.scratch,
        scan,
        cut,
    })
}

/// Where a window's files can be opened: local files in place; remote ones downloaded, on
/// first use, into private scratch that is removed when the window is dropped.
struct Fetch<'r> {
    remote: Option<&'r Remote>,
    scratch: Option<tempfile::TempDir>,
    fetched: std::collections::HashMap<u32, PathBuf>,
}

impl<'r> Fetch<'r> {
    fn new(remote: Option<&'r Remote>) -> Self {
        Fetch {
            remote,
            scratch: None,
            fetched: Default::default(),
        }
    }

    /// A path `f` can be opened at.
    fn local(&mut self, f: &SourceFile) -> Result<PathBuf> {
        let Some(r) = self.remote else {
            return Ok(f.path.clone());
        };
        if let Some(p) = self.fetched.get(&f.ordinal) {
            return Ok(p.clone());
        }
        if self.scratch.is_none() {
            self.scratch = Some(crate::storage::scratch_dir()?);
        }
        let dir = self.scratch.as_ref().expect("made above").path();
        let url = f.path.to_string_lossy().into_owned();
        let key = url
            .strip_prefix(&r.url_of(""))
            .unwrap_or(&url)
            .trim_start_matches('/')
            .to_string();
        let dest = dir.join(format!("{:06}.parquet", f.ordinal));
        r.download(&key, &dest)?.ok_or_else(|| {
            EngineError::SourceMissing(format!("{url} vanished while the run read it"))
        })?;
        self.fetched.insert(f.ordinal, dest.clone());
        Ok(dest)
    }
}

/// The least cursor value of a file from its statistics (None: unknown).
fn file_min(f: &SourceFile) -> Option<i64> {
    let groups: Vec<&RowGroupStats> = f.row_groups.iter().filter(|g| g.rows > 0).collect();
    if groups.is_empty() || groups.iter().any(|g| g.min.is_none()) {
        return None;
    }
    groups.iter().filter_map(|g| g.min).min()
}

/// Where this batch ends when the window `[low, upper]` holds more rows than the budget:
/// the row groups' statistics count the window first (nothing is read when it fits), then one
/// pass over the cursor column of the row groups that may hold the cut finds it, leaving
/// unread the groups wholly above what the batch can take.
fn find_cut(
    files: &[SourceFile],
    fetch: &mut Fetch<'_>,
    low: Option<i64>,
    upper: Option<i64>,
    watermark: Option<i64>,
    reach: Reach,
) -> Result<Option<Cut>> {
    let mut groups: Vec<(usize, usize, RowGroupStats)> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for (gi, g) in f.row_groups.iter().enumerate() {
            if g.overlaps(low, upper) {
                groups.push((fi, gi, *g));
            }
        }
    }
    let rows: u64 = groups.iter().map(|(_, _, g)| g.rows).sum();
    let bytes: u64 = groups.iter().map(|(_, _, g)| g.bytes).sum();
    let limit = cut::row_limit(reach.max_rows, reach.max_bytes, bytes, rows);
    if rows <= limit {
        return Ok(None);
    }
    groups.sort_by_key(|(fi, gi, g)| (g.min.unwrap_or(i64::MIN), *fi, *gi));
    let mut smallest = Smallest::new(limit, watermark);
    let mut readers: std::collections::HashMap<usize, ArrowReaderMetadata> = Default::default();
    for (fi, gi, g) in groups {
        if let Some(min) = g.min
            && smallest.can_skip(min)
        {
            smallest.skip(g.rows, g.max);
            continue;
        }
        let f = &files[fi];
        let path = fetch.local(f)?;
        let inside = |v: i64| low.is_none_or(|l| v >= l) && upper.is_none_or(|u| v <= u);
        cursor_values(&path, f, gi, &mut readers, fi, &mut |v| {
            if inside(v) {
                smallest.push(v);
            }
        })?;
    }
    Ok(smallest.finish())
}

/// Calls `each` with the cursor values (cursor units, nulls left out) of row group `group`
/// of `f`, read from `path` one column at a time.
fn cursor_values(
    path: &Path,
    f: &SourceFile,
    group: usize,
    readers: &mut std::collections::HashMap<usize, ArrowReaderMetadata>,
    key: usize,
    each: &mut dyn FnMut(i64),
) -> Result<()> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::Int64Type;
    let corrupt = |reason: String| EngineError::CorruptInput {
        path: f.path.clone(),
        reason,
    };
    let Some(leaf) = f.cursor_leaf else {
        return Err(corrupt(
            "the cursor column is not a top-level column".into(),
        ));
    };
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    let meta = match readers.get(&key) {
        Some(m) => m.clone(),
        None => {
            let m = ArrowReaderMetadata::load(&file, Default::default())
                .map_err(|e| corrupt(e.to_string()))?;
            readers.insert(key, m.clone());
            m
        }
    };
    let mask = ProjectionMask::leaves(meta.parquet_schema(), [leaf]);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
        .with_row_groups(vec![group])
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let ints = deltalake::arrow::compute::cast(batch.column(0), &ArrowType::Int64)
            .map_err(|e| corrupt(format!("cursor column: {e}")))?;
        for v in ints.as_primitive::<Int64Type>().iter().flatten() {
            each(to_cursor_units(v, f.cursor));
        }
    }
    Ok(())
}

/// Extracts the window from Parquet files: footer statistics skip whole files, the window
/// predicate is pushed into the scan, and a window bigger than `reach`'s budget is cut.
pub fn extract(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    reach: Option<Reach>,
) -> Result<Extracted> {
    let mut w = open_window(spec, store, reach)?;
    let (df, unified) = match w.scan.take() {
        None => (DataFrame::empty(), contract::Unified::default()),
        Some(scan) => {
            let df = scan
                .frame
                .collect()
                .map_err(|e| match corrupt_or_polars(e, &w.local) {
                    // A downloaded copy is named by its object's URL.
                    EngineError::CorruptInput { path, reason } => EngineError::CorruptInput {
                        path: w
                            .local
                            .iter()
                            .zip(&w.live)
                            .find(|(l, _)| l.path == path)
                            .map_or(path, |(_, f)| f.path.clone()),
                        reason,
                    },
                    other => other,
                })?;
            (df, scan.unified)
        }
    };
    let schema_resolution = if unified.changed() {
        let rows = rows_per_file(&df)?;
        let mut record = contract::unified_record(&unified, |i| {
            rows.get(&w.live[i].ordinal).copied().unwrap_or(0)
        });
        record.nulled.retain(|c| c.rows > 0);
        record.ignored.retain(|c| c.rows > 0);
        (!record.is_empty()).then_some(record)
    } else {
        None
    };
    Ok(Extracted {
        df,
        cursor_type: w.cursor_type,
        window_low: w.window_low,
        files_total: w.files_total,
        files_skipped: w.files_skipped,
        origins: w.origins,
        column_origins: unified.origins,
        batch_from: "the files of the window".into(),
        schema_resolution,
        cut: w.cut,
    })
}

/// The columns the next run would read (before the transform), where each first appears,
/// and how the window's files would be unified — from the files' footers, reading no row.
/// None when the window holds no file.
pub fn preview(spec: &PipelineSpec, store: Option<&Watermark>) -> Result<Option<super::Preview>> {
    let mut w = open_window(spec, store, None)?;
    let Some(scan) = w.scan.take() else {
        return Ok(None);
    };
    let unified = scan.unified;
    Ok(Some(super::Preview {
        columns: unified.columns.clone(),
        origins: unified.origins.clone(),
        // No row is read: the record names the columns, with no counts.
        unified: unified
            .changed()
            .then(|| contract::unified_record(&unified, |_| 0)),
        from: format!("the {} file(s) of the next window", w.live.len()),
    }))
}

/// Rows of a scanned window per file ordinal.
fn rows_per_file(df: &DataFrame) -> Result<std::collections::BTreeMap<u32, u64>> {
    let mut out = std::collections::BTreeMap::new();
    if df.height() == 0 {
        return Ok(out);
    }
    for v in df.column(FILE_COL)?.u32()?.iter().flatten() {
        *out.entry(v).or_insert(0) += 1;
    }
    Ok(out)
}

fn corrupt_or_polars(e: PolarsError, files: &[SourceFile]) -> EngineError {
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

    /// `process` of the spec's Parquet source after the run `store` recorded.
    fn build_batch(spec: &PipelineSpec, store: Option<&Watermark>) -> Result<ProcessManifest> {
        let state = crate::state::open(spec).unwrap();
        ParquetFiles.build(&RunContext {
            spec,
            store,
            state: &*state,
            run_seq: store.map_or(0, |w| w.run_seq) + 1,
            as_of_us: None,
            until: None,
            started: std::time::Instant::now(),
            group_by: &[],
        })
    }

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
        let next = |m: &ProcessManifest| {
            crate::batch::read_next_watermark(&*crate::state::open(&spec).unwrap(), m).unwrap()
        };
        assert_eq!(next(&m).boundary_hashes.len(), 3);

        let many: Vec<i64> = (0..(rows::MERGE_BOUNDARY_MAX as i64 + 1)).collect();
        write(dir.path(), "a.parquet", frame(&many, ties(many.len())));
        let m = build_batch(&spec, None).unwrap();
        assert!(next(&m).boundary_hashes.is_empty());
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
