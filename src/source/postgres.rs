//! The PostgreSQL source: a query (or table) read window by window.
//!
//! One `REPEATABLE READ READ ONLY` transaction per run: the cursor column's type is read from
//! the query's description, the window's upper bound `high = max(cursor)` is computed, and
//! the rows `low <= cursor <= high` (plus null cursors, for `on_null_cursor`) are streamed
//! through a server-side cursor in chunks of [`FETCH_ROWS`], all in that one snapshot. A row
//! committed during the read is either in the snapshot or invisible to it — never half read —
//! and, since it is not in this run's window, it is read by the next run (its cursor is at or
//! above this run's watermark, assuming the cursor is stamped at commit time or the lookback
//! covers the longest transaction; see docs/targets.md).
//!
//! The cursor predicate is pushed into SQL, so an index on the cursor column (a B-tree on
//! `updated_at`) turns each run into an index range scan.

use super::Source;
use crate::batch::cut::Cut;
use crate::batch::{
    CURSOR_COL, Extracted, FILE_COL, ROW_COL, Reach, RunContext, check_cursor_type, rows,
    window_low,
};
use crate::error::{EngineError, Result};
use crate::pg::{self, qi, rows_to_frame};

use crate::state::watermark::Watermark;
use polars::prelude::*;
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::ProcessManifest;
use tidemark_workflows::spec::PipelineSpec;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::Type;

/// Rows per FETCH: bounds the rows held in the driver's form at once.
pub const FETCH_ROWS: usize = 10_000;

/// The PostgreSQL-query source.
pub struct PostgresQuery;

impl Source for PostgresQuery {
    fn build(&self, run: &RunContext<'_>) -> Result<ProcessManifest> {
        rows::finish(
            run,
            extract_blocking(run.spec, run.store, Some(run.reach()))?,
        )
    }

    fn preview(
        &self,
        spec: &PipelineSpec,
        _store: Option<&Watermark>,
    ) -> Result<Option<super::Preview>> {
        let columns = tokio::runtime::Handle::current().block_on(describe(spec))?;
        Ok(Some(super::Preview {
            columns,
            origins: Vec::new(),
            unified: None,
            from: "the source query".into(),
        }))
    }
}

/// [`extract`] from a blocking thread of the runtime (where `process` builds batches).
pub fn extract_blocking(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    reach: Option<Reach>,
) -> Result<Extracted> {
    tokio::runtime::Handle::current().block_on(extract(spec, store, reach))
}

/// Reads the run's window from the source query; a window bigger than `reach`'s budget is
/// cut (see [`crate::batch::cut`]).
pub async fn extract(
    spec: &PipelineSpec,
    store: Option<&Watermark>,
    reach: Option<Reach>,
) -> Result<Extracted> {
    let src = &spec.source;
    let conn = src
        .conn
        .as_ref()
        .ok_or_else(|| EngineError::Spec("a PostgreSQL source needs `url` or `url_env`".into()))?;
    let query = src
        .query
        .as_deref()
        .ok_or_else(|| EngineError::Spec("a PostgreSQL source needs `query` or `table`".into()))?;
    let origin = format!(
        "PostgreSQL query of {}",
        pg::redact(&pg::resolve_url(conn)?)
    );
    let mut client = pg::connect(conn).await?;
    let err = |what: &'static str| move |e| EngineError::pg(what, e);
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err("begin the read transaction"))?;

    // The query's columns, and the cursor's type.
    let described = tx
        .prepare(&format!("SELECT * FROM ({query}) AS q LIMIT 0"))
        .await
        .map_err(|e| match e.as_db_error() {
            Some(_) => EngineError::Spec(format!(
                "{}: `source.query` does not run: {}",
                spec.spec_path,
                e.as_db_error().map(|d| d.message()).unwrap_or_default()
            )),
            None => EngineError::pg("describe the source query", e),
        })?;
    let columns: Vec<(String, Type)> = described
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let cursor_pg = columns
        .iter()
        .find(|(n, _)| n == &src.cursor)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| {
            EngineError::Schema(format!(
                "cursor column `{}` is not among the source query's columns ({})",
                src.cursor,
                columns
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let found = match cursor_pg {
        Type::INT2 | Type::INT4 | Type::INT8 => CursorType::Integer,
        Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::DATE => CursorType::Timestamp,
        ref other => {
            return Err(EngineError::Schema(format!(
                "cursor column `{}` is {other} in PostgreSQL; use an integer, date or timestamp column",
                src.cursor
            )));
        }
    };
    for k in spec.target.key.iter().chain(src.event_time.iter()) {
        if !columns.iter().any(|(n, _)| n == k) {
            return Err(EngineError::Schema(format!(
                "column `{k}` named in the spec is not among the source query's columns"
            )));
        }
    }
    let cursor_type = check_cursor_type(spec, store, found, &origin)?;
    let low = window_low(spec, store, cursor_type)?;

    // The window's upper bound, in this snapshot.
    let c = qi(&src.cursor);
    let low_pred = match low {
        Some(v) => format!("q.{c} >= {}", literal(v, &cursor_pg)),
        None => "true".to_string(),
    };
    let high_row = tx
        .query_one(
            &format!("SELECT max(q.{c})::text FROM ({query}) AS q WHERE {low_pred}"),
            &[],
        )
        .await
        .map_err(err("compute the window's upper bound"))?;
    let high_text: Option<String> = high_row.get(0);
    let cut = match (reach, &high_text) {
        (Some(reach), Some(_)) => {
            let upper = reach.upper(cursor_type);
            let watermark = store.and_then(|w| w.value);
            find_cut(
                &tx, query, &c, &cursor_pg, &low_pred, upper, watermark, reach,
            )
            .await?
        }
        _ => None,
    };
    let window = match (&cut, &high_text) {
        (Some(cut), _) => format!(
            "(({low_pred}) AND q.{c} <= {}) OR q.{c} IS NULL",
            literal(cut.high, &cursor_pg)
        ),
        (None, Some(h)) => format!(
            "(({low_pred}) AND q.{c} <= {}::{}) OR q.{c} IS NULL",
            quote_literal(h),
            cursor_pg.name()
        ),
        (None, None) => format!("q.{c} IS NULL"),
    };
    let (select, read_types) = pg::read_select(&columns, "q.");
    tx.batch_execute(&format!(
        "DECLARE tidemark_window NO SCROLL CURSOR FOR SELECT {} FROM ({query}) AS q WHERE {window}",
        select.join(", ")
    ))
    .await
    .map_err(err("open the window cursor"))?;
    let mut frames = Vec::new();
    loop {
        let rows = tx
            .query(
                &format!("FETCH FORWARD {FETCH_ROWS} FROM tidemark_window"),
                &[],
            )
            .await
            .map_err(err("fetch rows"))?;
        let n = rows.len();
        if n > 0 {
            frames.push(rows_to_frame(&read_types, &rows)?);
        }
        if n < FETCH_ROWS {
            break;
        }
    }
    tx.commit().await.map_err(err("end the read transaction"))?;

    let mut df = match frames.len() {
        0 => rows_to_frame(&read_types, &[])?,
        _ => {
            let mut it = frames.into_iter();
            let mut first = it.next().expect("one frame");
            for f in it {
                first.vstack_mut_owned(f)?;
            }
            first
        }
    };
    df.rechunk_mut();
    let cursor_i64 = match cursor_type {
        CursorType::Integer => col(src.cursor.as_str()).cast(DataType::Int64),
        CursorType::Timestamp => col(src.cursor.as_str())
            .cast(DataType::Datetime(TimeUnit::Microseconds, None))
            .dt()
            .timestamp(TimeUnit::Microseconds),
    };
    let df = df
        .lazy()
        .with_row_index(ROW_COL, None)
        .with_columns([lit(0u32).alias(FILE_COL), cursor_i64.alias(CURSOR_COL)])
        .collect()?;
    Ok(Extracted {
        df,
        cursor_type,
        window_low: low,
        files_total: 0,
        files_skipped: 0,
        batch_from: origin.clone(),
        origins: vec![origin],
        column_origins: Vec::new(),
        schema_resolution: None,
        cut,
    })
}

/// The cursor column as a bigint in cursor units (µs since the epoch for dates and
/// timestamps, whose `timestamp` values are read as UTC).
fn as_cursor_units(c: &str, t: &Type) -> String {
    match *t {
        Type::INT2 | Type::INT4 | Type::INT8 => format!("q.{c}::bigint"),
        Type::DATE => format!("(extract(epoch from q.{c}::timestamp) * 1000000)::bigint"),
        _ => format!("(extract(epoch from q.{c}) * 1000000)::bigint"),
    }
}

/// Where this batch ends when the window holds more rows than the budget, computed in the
/// run's snapshot: the value past the budget's last row (`ORDER BY cursor OFFSET budget`, a
/// top-N sort or an index range scan), the greatest value below it, and what remains above.
#[allow(clippy::too_many_arguments)]
async fn find_cut(
    tx: &tokio_postgres::Transaction<'_>,
    query: &str,
    c: &str,
    cursor_pg: &Type,
    low_pred: &str,
    upper: Option<i64>,
    watermark: Option<i64>,
    reach: Reach,
) -> Result<Option<Cut>> {
    let err = |what: &'static str| move |e| EngineError::pg(what, e);
    let units = as_cursor_units(c, cursor_pg);
    let up_pred = match upper {
        Some(u) => format!("q.{c} <= {}", literal(u, cursor_pg)),
        None => "true".into(),
    };
    let from = format!("FROM ({query}) AS q WHERE ({low_pred}) AND {up_pred}");
    let limit = reach.max_rows.max(1);
    let one = |sql: String, what: &'static str| async move {
        tx.query_opt(&sql, &[])
            .await
            .map_err(err(what))
            .map(|r| r.and_then(|r| r.get::<_, Option<i64>>(0)))
    };
    // The value past the budget's last row, and the greatest value below it (None: that
    // value alone holds more rows than the budget).
    let cut_in = |extra: String| {
        let from = &from;
        let units = &units;
        async move {
            let over = one(
                format!(
                    "SELECT {units} {from}{extra} AND q.{c} IS NOT NULL ORDER BY q.{c} OFFSET {limit} LIMIT 1"
                ),
                "find where the batch ends",
            )
            .await?;
            let Some(over) = over else {
                return Ok::<_, EngineError>(None);
            };
            let below = one(
                format!(
                    "SELECT max({units}) {from}{extra} AND q.{c} < {}",
                    literal(over, cursor_pg)
                ),
                "find where the batch ends",
            )
            .await?;
            Ok(Some(match below {
                Some(b) => (b, false),
                None => (over, true),
            }))
        }
    };
    let Some((mut high, mut single)) = cut_in(String::new()).await? else {
        return Ok(None); // the window fits
    };
    let mut over_by_lookback = false;
    if let Some(w) = watermark
        && high <= w
    {
        // The rows the lookback re-reads fill the budget: count the new rows only.
        let past = format!(" AND q.{c} > {}", literal(w, cursor_pg));
        let Some((h, s)) = cut_in(past).await? else {
            return Ok(None);
        };
        (high, single, over_by_lookback) = (h, s, true);
    }
    let remaining = one(
        format!(
            "SELECT count(*)::bigint {from} AND q.{c} > {}",
            literal(high, cursor_pg)
        ),
        "count the rows past the batch",
    )
    .await?
    .unwrap_or(0);
    if remaining <= 0 {
        return Ok(None);
    }
    Ok(Some(Cut {
        high,
        rows_remaining: remaining as u64,
        oversized: single.then_some(high),
        over_by_lookback,
    }))
}

/// The source query's columns in the types a run reads them in (no row is read): what
/// `validate --against-target` compares with the target.
pub async fn describe(spec: &PipelineSpec) -> Result<Vec<(String, DataType)>> {
    let src = &spec.source;
    let conn = src
        .conn
        .as_ref()
        .ok_or_else(|| EngineError::Spec("a PostgreSQL source needs `url` or `url_env`".into()))?;
    let query = src
        .query
        .as_deref()
        .ok_or_else(|| EngineError::Spec("a PostgreSQL source needs `query` or `table`".into()))?;
    let client = pg::connect(conn).await?;
    let described = client
        .prepare(&format!("SELECT * FROM ({query}) AS q LIMIT 0"))
        .await
        .map_err(|e| EngineError::pg("describe the source query", e))?;
    let columns: Vec<(String, Type)> = described
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let (_, read_types) = pg::read_select(&columns, "q.");
    let empty = rows_to_frame(&read_types, &[])?;
    Ok(empty
        .schema()
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect())
}

/// A cursor value as a typed SQL literal.
fn literal(v: i64, t: &Type) -> String {
    match *t {
        Type::INT2 | Type::INT4 | Type::INT8 => format!("{v}::bigint"),
        _ => {
            let ts = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(v).unwrap_or_default();
            match *t {
                Type::DATE => format!("'{}'::date", ts.format("%Y-%m-%d")),
                Type::TIMESTAMPTZ => {
                    format!("'{}'::timestamptz", ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
                }
                _ => format!("'{}'::timestamp", ts.format("%Y-%m-%d %H:%M:%S%.6f")),
            }
        }
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
