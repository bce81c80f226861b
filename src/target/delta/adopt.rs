//! Write once: a staged batch whose every row is an insert becomes one of the table's data
//! files as it is, hard-linked into the table directory, instead of being read back and
//! written again.
//!
//! `process` writes the batch as Parquet, `stage` links it into the table's staging area, and
//! a commit that is pure inserts (a first load, an append, a MERGE none of whose keys the
//! table holds) adds that very file to the Delta log. The file qualifies only when readers
//! cannot tell it from one the writer would make: a local, unpartitioned table without column
//! mapping, and the file's columns exactly the table's, of the same physical types (strings
//! and binaries in any Arrow flavour, timestamps in microseconds with the same time-zone
//! kind). Anything else goes through the normal writer; [`refusal`] says why, for the log.
//!
//! The add action's statistics (row count, null counts, min and max per column) are computed
//! from the batch in memory, in Delta's JSON form: timestamps at millisecond precision with
//! the minimum rounded down and the maximum rounded up (so the bounds still hold every
//! value), strings only up to 32 characters, no bounds for types whose ordering readers may
//! disagree on (decimals, binaries, floats holding NaN).
//!
//! Crash safety is the writer's: the link is made before the commit, under a fresh name, so a
//! crash leaves an unreferenced file that vacuum removes. Nothing ever writes a batch file in
//! place (every write is a temporary file renamed over), so the committed file's inode is
//! never changed by a retried step.

use crate::error::{EngineError, Result};
use crate::state::fsio;
use deltalake::arrow::datatypes::{DataType as ArrowType, SchemaRef, TimeUnit as ArrowUnit};
use deltalake::kernel::{Action, Add};
use polars::prelude::*;
use std::path::Path;

/// Strings longer than this get no bounds in the statistics (Delta's own writers truncate
/// there).
const MAX_STRING_STAT_CHARS: usize = 32;

/// Why the staged file cannot be adopted as it is (None: it can).
pub fn refusal(
    staged: &SchemaRef,
    table: &SchemaRef,
    partition_cols: &[String],
    column_mapping: bool,
) -> Option<String> {
    if !partition_cols.is_empty() {
        return Some("the table is partitioned".into());
    }
    if column_mapping {
        return Some("the table uses column mapping".into());
    }
    if staged.fields().len() != table.fields().len() {
        return Some(format!(
            "the batch has {} columns, the table {}",
            staged.fields().len(),
            table.fields().len()
        ));
    }
    for t in table.fields() {
        let Ok(s) = staged.field_with_name(t.name()) else {
            return Some(format!("the batch lacks column `{}`", t.name()));
        };
        if !same_physical_type(s.data_type(), t.data_type()) {
            return Some(format!(
                "column `{}` is {} in the batch, {} in the table",
                t.name(),
                s.data_type(),
                t.data_type()
            ));
        }
    }
    None
}

/// Whether a Parquet column written as `file` reads back as `table` in every Delta reader.
fn same_physical_type(file: &ArrowType, table: &ArrowType) -> bool {
    use ArrowType::*;
    match (file, table) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Timestamp(ArrowUnit::Microsecond, a), Timestamp(ArrowUnit::Microsecond, b)) => {
            a.is_some() == b.is_some()
        }
        (
            Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Date32 | Decimal128(..),
            _,
        ) => file == table,
        _ => false,
    }
}

/// Links the staged file into the table directory under a new data file name and returns its
/// add action, with statistics from `batch` (the file's rows, in memory). None when the file
/// cannot be adopted after all (a null in a column the table declares non-null, which the
/// writer's own check reports, or a file system that cannot link): the caller writes the rows.
pub fn adopt(
    table_dir: &Path,
    staged: &Path,
    batch: &DataFrame,
    table: &SchemaRef,
) -> Result<Option<Action>> {
    adopt_as(batch, table, |name| {
        let dest = table_dir.join(name);
        if let Err(e) = std::fs::hard_link(staged, &dest) {
            tracing::info!(staged = %staged.display(), error = %e, "cannot link the staged batch; writing it");
            return Ok(None);
        }
        fsio::sync_dir(table_dir)?;
        let size = std::fs::metadata(&dest)
            .map_err(|e| EngineError::io(format!("stat {}", dest.display()), e))?
            .len();
        Ok(Some(size))
    })
}

/// [`adopt`] into a table on object storage: the staged file (the checked local copy) is
/// uploaded under a fresh data-file name, as it is (no decoding, no encoding). An upload
/// that dies leaves no object or an unreferenced one, as any writer's does.
pub fn adopt_remote(
    remote: &crate::storage::Remote,
    staged: &Path,
    batch: &DataFrame,
    table: &SchemaRef,
) -> Result<Option<Action>> {
    adopt_as(batch, table, |name| {
        remote.upload(name, staged, None).map(Some)
    })
}

/// The adoption of a batch file whose rows are `batch`: `place` puts the file in the table
/// under the fresh data-file name it is given and returns its size (None: it could not).
fn adopt_as(
    batch: &DataFrame,
    table: &SchemaRef,
    place: impl FnOnce(&str) -> Result<Option<u64>>,
) -> Result<Option<Action>> {
    if null_in_required(batch, table, &[]) {
        return Ok(None);
    }
    let name = format!("part-00000-{}-c000.parquet", uuid::Uuid::new_v4());
    let Some(size) = place(&name)? else {
        return Ok(None);
    };
    add_action(name, Default::default(), size, batch).map(Some)
}

/// Whether `rows` (a new data file's) hold a null in a column the table declares non-null,
/// the columns `skip` aside: the writer's own check reports it, so such rows are written.
pub fn null_in_required(rows: &DataFrame, table: &SchemaRef, skip: &[String]) -> bool {
    table.fields().iter().any(|f| {
        !f.is_nullable()
            && !skip.contains(f.name())
            && rows.column(f.name()).map_or(true, |c| c.null_count() > 0)
    })
}

/// The add action of a new data file at `path` (relative to the table) of `size` bytes,
/// holding `rows` (its own columns: statistics are computed from them).
pub fn add_action(
    path: String,
    partition_values: std::collections::HashMap<String, Option<String>>,
    size: u64,
    rows: &DataFrame,
) -> Result<Action> {
    Ok(Action::Add(Add {
        path,
        partition_values,
        size: size as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats_json(rows)?.to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }))
}

/// Delta's file statistics of a frame: `numRecords`, and per top-level column its null count
/// and, where the type has portable bounds, its minimum and maximum.
pub fn stats_json(df: &DataFrame) -> Result<serde_json::Value> {
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    let mut nulls = serde_json::Map::new();
    for c in df.columns() {
        let s = c.as_materialized_series();
        let name = s.name().to_string();
        nulls.insert(name.clone(), s.null_count().into());
        if s.null_count() == s.len() {
            continue;
        }
        if let Some((lo, hi)) = bounds(s)? {
            min.insert(name.clone(), lo);
            max.insert(name, hi);
        }
    }
    Ok(serde_json::json!({
        "numRecords": df.height(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    }))
}

/// A column's minimum and maximum in Delta's JSON form (None: no portable bounds).
fn bounds(s: &Series) -> Result<Option<(serde_json::Value, serde_json::Value)>> {
    use serde_json::Value;
    let pair = |lo: AnyValue, hi: AnyValue| -> Option<(Value, Value)> {
        let num = |v: &AnyValue| -> Option<Value> {
            match v {
                AnyValue::Int8(x) => Some((*x).into()),
                AnyValue::Int16(x) => Some((*x).into()),
                AnyValue::Int32(x) => Some((*x).into()),
                AnyValue::Int64(x) => Some((*x).into()),
                AnyValue::UInt8(x) => Some((*x).into()),
                AnyValue::UInt16(x) => Some((*x).into()),
                AnyValue::UInt32(x) => Some((*x).into()),
                AnyValue::Float32(x) if x.is_finite() => Some((*x as f64).into()),
                AnyValue::Float64(x) if x.is_finite() => Some((*x).into()),
                AnyValue::Boolean(x) => Some((*x).into()),
                _ => None,
            }
        };
        Some((num(&lo)?, num(&hi)?))
    };
    let dtype = s.dtype().clone();
    let out = match &dtype {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => pair(
            s.min_reduce()?.as_any_value(),
            s.max_reduce()?.as_any_value(),
        ),
        DataType::Float32 | DataType::Float64 => {
            if s.is_nan()?.any() {
                None
            } else {
                pair(
                    s.min_reduce()?.as_any_value(),
                    s.max_reduce()?.as_any_value(),
                )
            }
        }
        DataType::String => {
            let text = |v: AnyValue| match v {
                AnyValue::String(x) => Some(x.to_string()),
                AnyValue::StringOwned(x) => Some(x.to_string()),
                _ => None,
            };
            let (lo, hi) = (s.min_reduce()?, s.max_reduce()?);
            match (text(lo.as_any_value()), text(hi.as_any_value())) {
                (Some(lo), Some(hi))
                    if lo.chars().count() <= MAX_STRING_STAT_CHARS
                        && hi.chars().count() <= MAX_STRING_STAT_CHARS =>
                {
                    Some((lo.into(), hi.into()))
                }
                _ => None,
            }
        }
        DataType::Date => {
            let days = s.to_physical_repr();
            let days = days.i32()?;
            match (days.min(), days.max()) {
                (Some(lo), Some(hi)) => Some((date_string(lo).into(), date_string(hi).into())),
                _ => None,
            }
        }
        DataType::Datetime(unit, tz) => {
            let phys = s.to_physical_repr();
            let v = phys.i64()?;
            let per_ms = match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            };
            match (v.min(), v.max()) {
                (Some(lo), Some(hi)) => {
                    let lo_ms = lo.div_euclid(per_ms);
                    let hi_ms = hi.div_euclid(per_ms) + i64::from(hi.rem_euclid(per_ms) != 0);
                    match (
                        timestamp_string(lo_ms, tz.is_some()),
                        timestamp_string(hi_ms, tz.is_some()),
                    ) {
                        (Some(a), Some(b)) => Some((a.into(), b.into())),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        _ => None,
    };
    Ok(out)
}

fn date_string(days: i32) -> String {
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch")
        + chrono::Duration::days(days as i64))
    .format("%Y-%m-%d")
    .to_string()
}

/// A millisecond timestamp as Delta's statistics write it: UTC with a `Z` for `timestamp`,
/// without a zone for `timestamp_ntz`.
fn timestamp_string(ms: i64, utc: bool) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(ms)?.naive_utc();
    Some(if utc {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{Field, Schema as ArrowSchema};
    use std::sync::Arc;

    #[test]
    fn statistics_hold_every_value_at_millisecond_precision() {
        let ts = Series::new("ts".into(), [1_000_001i64, 2_999_000, 1_500_500])
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(polars::prelude::TimeZone::UTC),
            ))
            .unwrap();
        let df = DataFrame::new_infer_height(vec![
            Series::new("id".into(), [3i64, 1, 2]).into(),
            Series::new("s".into(), [Some("b"), None, Some("a")]).into(),
            Series::new("long".into(), ["x".repeat(40), "y".into(), "z".into()]).into(),
            Series::new("f".into(), [1.0f64, f64::NAN, 0.5]).into(),
            ts.into(),
        ])
        .unwrap();
        let s = stats_json(&df).unwrap();
        assert_eq!(s["numRecords"], 3);
        assert_eq!(s["minValues"]["id"], 1);
        assert_eq!(s["maxValues"]["id"], 3);
        assert_eq!(s["minValues"]["s"], "a");
        assert_eq!(s["maxValues"]["s"], "b");
        assert_eq!(s["nullCount"]["s"], 1);
        assert_eq!(s["nullCount"]["id"], 0);
        // No bounds: a string past 32 characters, a float column holding NaN.
        assert!(s["minValues"].get("long").is_none());
        assert!(s["maxValues"].get("f").is_none());
        // 1.000001 s rounds down, 2.999 s stays, the maximum is never below a value.
        assert_eq!(s["minValues"]["ts"], "1970-01-01T00:00:01.000Z");
        assert_eq!(s["maxValues"]["ts"], "1970-01-01T00:00:02.999Z");
        let up = DataFrame::new_infer_height(vec![
            Series::new("t".into(), [2_999_001i64])
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .unwrap()
                .into(),
        ])
        .unwrap();
        assert_eq!(
            stats_json(&up).unwrap()["maxValues"]["t"],
            "1970-01-01 00:00:03.000"
        );
    }

    #[test]
    fn only_a_file_of_the_table_s_own_columns_and_types_is_adopted() {
        let schema = |fields: Vec<(&str, ArrowType)>| {
            Arc::new(ArrowSchema::new(
                fields
                    .into_iter()
                    .map(|(n, t)| Field::new(n, t, true))
                    .collect::<Vec<_>>(),
            ))
        };
        let utc = ArrowType::Timestamp(ArrowUnit::Microsecond, Some("UTC".into()));
        let table = schema(vec![
            ("id", ArrowType::Int64),
            ("name", ArrowType::Utf8),
            ("ts", utc.clone()),
        ]);
        let file = schema(vec![
            (
                "ts",
                ArrowType::Timestamp(ArrowUnit::Microsecond, Some("+00:00".into())),
            ),
            ("id", ArrowType::Int64),
            ("name", ArrowType::Utf8View),
        ]);
        assert_eq!(refusal(&file, &table, &[], false), None);
        assert!(refusal(&file, &table, &["id".into()], false).is_some());
        assert!(refusal(&file, &table, &[], true).is_some());
        let narrower = schema(vec![
            ("id", ArrowType::Int32),
            ("name", ArrowType::Utf8),
            ("ts", utc.clone()),
        ]);
        assert!(
            refusal(&narrower, &table, &[], false)
                .unwrap()
                .contains("`id`")
        );
        let naive = schema(vec![
            ("id", ArrowType::Int64),
            ("name", ArrowType::Utf8),
            ("ts", ArrowType::Timestamp(ArrowUnit::Microsecond, None)),
        ]);
        assert!(refusal(&naive, &table, &[], false).is_some());
        let nanos = schema(vec![
            ("id", ArrowType::Int64),
            ("name", ArrowType::Utf8),
            (
                "ts",
                ArrowType::Timestamp(ArrowUnit::Nanosecond, Some("UTC".into())),
            ),
        ]);
        assert!(refusal(&nanos, &table, &[], false).is_some());
        let fewer = schema(vec![("id", ArrowType::Int64), ("name", ArrowType::Utf8)]);
        assert!(refusal(&fewer, &table, &[], false).is_some());
    }
}
