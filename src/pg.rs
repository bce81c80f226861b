//! PostgreSQL plumbing shared by the PostgreSQL source and target: connecting (the URL from
//! the spec or the worker's environment), quoting, and the type mapping between Polars
//! columns and PostgreSQL values in both directions (binary COPY in, rows out).
//!
//! | Polars | PostgreSQL |
//! | --- | --- |
//! | Boolean | boolean |
//! | Int8, Int16, UInt8 | smallint |
//! | Int32, UInt16 | integer |
//! | Int64, UInt32, UInt64 (≤ i64::MAX) | bigint |
//! | Float32 / Float64 | real / double precision |
//! | String | text |
//! | Binary | bytea |
//! | Date | date |
//! | Datetime with a time zone / without | timestamp with time zone / timestamp |
//! | Time | time |
//!
//! Reading, the reverse; `numeric` is read as double precision, and types without a Polars
//! counterpart (uuid, json, arrays, ...) as their text form.

use crate::error::{EngineError, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use polars::prelude::*;
use std::time::Duration;
use tidemark_workflows::spec::ConnSpec;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

/// Days from 0001-01-01 (CE) to 1970-01-01.
const EPOCH_DAYS_CE: i32 = 719_163;

/// The URL a connection spec names (reads the worker's environment for `url_env`).
pub fn resolve_url(conn: &ConnSpec) -> Result<String> {
    match conn {
        ConnSpec::Url(u) => Ok(u.clone()),
        ConnSpec::UrlEnv(var) => std::env::var(var).map_err(|_| {
            EngineError::Spec(format!(
                "environment variable {var} (the spec's url_env) is not set in the worker's environment; export it before starting `tidemark worker`"
            ))
        }),
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

/// Connects (10 s timeout) and drives the connection on a background task.
pub async fn connect(conn: &ConnSpec) -> Result<Client> {
    let url = resolve_url(conn)?;
    let shown = redact(&url);
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(&url, NoTls),
    );
    let (client, connection) = match attempt.await {
        Ok(r) => r.map_err(|e| EngineError::pg(format!("connect to {shown}"), e))?,
        Err(_) => {
            return Err(EngineError::io(
                format!("connect to {shown}"),
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 10 s"),
            ));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// A quoted identifier.
pub fn qi(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` (schema defaults to `public`) as (schema, table).
pub fn split_table(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

/// The PostgreSQL type of a Polars column (for tables tidemark creates and binary COPY).
pub fn pg_type(column: &str, dtype: &DataType) -> Result<Type> {
    Ok(match dtype {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::String => Type::TEXT,
        DataType::Binary => Type::BYTEA,
        DataType::Date => Type::DATE,
        DataType::Datetime(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Datetime(_, None) => Type::TIMESTAMP,
        DataType::Time => Type::TIME,
        other => {
            return Err(EngineError::Schema(format!(
                "column `{column}` has type {other}, which has no PostgreSQL mapping; cast it in [transform] (e.g. CAST({column} AS VARCHAR))"
            )));
        }
    })
}

/// The SQL spelling of a type, as `format_type` prints it.
pub fn sql_type(t: &Type) -> &'static str {
    match *t {
        Type::BOOL => "boolean",
        Type::INT2 => "smallint",
        Type::INT4 => "integer",
        Type::INT8 => "bigint",
        Type::FLOAT4 => "real",
        Type::FLOAT8 => "double precision",
        Type::TEXT => "text",
        Type::BYTEA => "bytea",
        Type::DATE => "date",
        Type::TIMESTAMPTZ => "timestamp with time zone",
        Type::TIMESTAMP => "timestamp without time zone",
        Type::TIME => "time without time zone",
        _ => "text",
    }
}

/// One column's values, typed for binary COPY.
pub enum Values {
    /// boolean
    Bool(Vec<Option<bool>>),
    /// smallint
    I16(Vec<Option<i16>>),
    /// integer
    I32(Vec<Option<i32>>),
    /// bigint
    I64(Vec<Option<i64>>),
    /// real
    F32(Vec<Option<f32>>),
    /// double precision
    F64(Vec<Option<f64>>),
    /// text
    Text(Vec<Option<String>>),
    /// bytea
    Bytes(Vec<Option<Vec<u8>>>),
    /// date
    Date(Vec<Option<NaiveDate>>),
    /// timestamp
    Ts(Vec<Option<NaiveDateTime>>),
    /// timestamptz
    TsTz(Vec<Option<DateTime<Utc>>>),
    /// time
    Time(Vec<Option<NaiveTime>>),
}

impl Values {
    /// Converts a Polars column to the values of its PostgreSQL type.
    pub fn from_column(c: &Column) -> Result<Values> {
        let name = c.name().to_string();
        let s = c.as_materialized_series();
        let ty = pg_type(&name, s.dtype())?;
        let int = |dt: DataType| -> Result<Series> { Ok(s.cast(&dt)?) };
        Ok(match ty {
            Type::BOOL => Values::Bool(s.bool()?.iter().collect()),
            Type::INT2 => Values::I16(int(DataType::Int16)?.i16()?.iter().collect()),
            Type::INT4 => Values::I32(int(DataType::Int32)?.i32()?.iter().collect()),
            Type::INT8 => {
                if s.dtype() == &DataType::UInt64
                    && s.u64()?.max().is_some_and(|m| m > i64::MAX as u64)
                {
                    return Err(EngineError::Schema(format!(
                        "column `{name}` holds UInt64 values above bigint's range"
                    )));
                }
                Values::I64(int(DataType::Int64)?.i64()?.iter().collect())
            }
            Type::FLOAT4 => Values::F32(s.f32()?.iter().collect()),
            Type::FLOAT8 => Values::F64(s.f64()?.iter().collect()),
            Type::TEXT => Values::Text(s.str()?.iter().map(|v| v.map(str::to_string)).collect()),
            Type::BYTEA => {
                Values::Bytes(s.binary()?.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
            }
            Type::DATE => Values::Date(
                int(DataType::Int32)?
                    .i32()?
                    .iter()
                    .map(|d| {
                        d.and_then(|d| NaiveDate::from_num_days_from_ce_opt(d + EPOCH_DAYS_CE))
                    })
                    .collect(),
            ),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let tz = match s.dtype() {
                    DataType::Datetime(_, tz) => tz.clone(),
                    _ => None,
                };
                let us = s
                    .cast(&DataType::Datetime(TimeUnit::Microseconds, tz))?
                    .cast(&DataType::Int64)?;
                let times = us
                    .i64()?
                    .iter()
                    .map(|v| v.and_then(DateTime::<Utc>::from_timestamp_micros));
                if ty == Type::TIMESTAMPTZ {
                    Values::TsTz(times.collect())
                } else {
                    Values::Ts(times.map(|t| t.map(|t| t.naive_utc())).collect())
                }
            }
            Type::TIME => Values::Time(
                int(DataType::Int64)?
                    .i64()?
                    .iter()
                    .map(|ns| {
                        ns.and_then(|ns| {
                            NaiveTime::from_num_seconds_from_midnight_opt(
                                (ns / 1_000_000_000) as u32,
                                (ns % 1_000_000_000) as u32,
                            )
                        })
                    })
                    .collect(),
            ),
            _ => unreachable!("pg_type returns only the types above"),
        })
    }

    /// Value `i` for a driver call.
    pub fn at(&self, i: usize) -> &(dyn ToSql + Sync) {
        match self {
            Values::Bool(v) => &v[i],
            Values::I16(v) => &v[i],
            Values::I32(v) => &v[i],
            Values::I64(v) => &v[i],
            Values::F32(v) => &v[i],
            Values::F64(v) => &v[i],
            Values::Text(v) => &v[i],
            Values::Bytes(v) => &v[i],
            Values::Date(v) => &v[i],
            Values::Ts(v) => &v[i],
            Values::TsTz(v) => &v[i],
            Values::Time(v) => &v[i],
        }
    }
}

/// How a result column is read: natively, or through a cast in the SELECT list.
pub fn read_cast(t: &Type) -> Option<&'static str> {
    match *t {
        Type::BOOL
        | Type::INT2
        | Type::INT4
        | Type::INT8
        | Type::FLOAT4
        | Type::FLOAT8
        | Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::BYTEA
        | Type::DATE
        | Type::TIMESTAMP
        | Type::TIMESTAMPTZ
        | Type::TIME => None,
        Type::NUMERIC => Some("double precision"),
        _ => Some("text"),
    }
}

/// The select list that reads `columns` (of a relation aliased `prefix`, e.g. `q.`) in types
/// [`rows_to_frame`] takes, and the types the rows then carry.
pub fn read_select(columns: &[(String, Type)], prefix: &str) -> (Vec<String>, Vec<(String, Type)>) {
    columns
        .iter()
        .map(|(n, t)| match read_cast(t) {
            Some(cast) => {
                let ty = if cast == "double precision" {
                    Type::FLOAT8
                } else {
                    Type::TEXT
                };
                (
                    format!("{prefix}{}::{cast} AS {}", qi(n), qi(n)),
                    (n.clone(), ty),
                )
            }
            None => (format!("{prefix}{}", qi(n)), (n.clone(), t.clone())),
        })
        .unzip()
}

/// Builds Polars columns from rows (whose types are native after [`read_cast`]).
pub fn rows_to_frame(
    columns: &[(String, Type)],
    rows: &[tokio_postgres::Row],
) -> Result<DataFrame> {
    let mut out = Vec::with_capacity(columns.len());
    for (i, (name, ty)) in columns.iter().enumerate() {
        let get_err = |e: tokio_postgres::Error| EngineError::pg(format!("read column {name}"), e);
        let name: PlSmallStr = name.as_str().into();
        macro_rules! col_of {
            ($t:ty) => {{
                let mut v: Vec<Option<$t>> = Vec::with_capacity(rows.len());
                for r in rows {
                    v.push(r.try_get::<_, Option<$t>>(i).map_err(get_err)?);
                }
                v
            }};
        }
        let series = match *ty {
            Type::BOOL => Series::new(name, col_of!(bool)),
            Type::INT2 => Series::new(name, col_of!(i16)),
            Type::INT4 => Series::new(name, col_of!(i32)),
            Type::INT8 => Series::new(name, col_of!(i64)),
            Type::FLOAT4 => Series::new(name, col_of!(f32)),
            Type::FLOAT8 | Type::NUMERIC => Series::new(name, col_of!(f64)),
            Type::BYTEA => Series::new(name, col_of!(Vec<u8>)),
            Type::DATE => Series::new(
                name,
                col_of!(NaiveDate)
                    .into_iter()
                    .map(|d| d.map(|d| d.num_days_from_ce() - EPOCH_DAYS_CE))
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Date)?,
            Type::TIMESTAMP => Series::new(
                name,
                col_of!(NaiveDateTime)
                    .into_iter()
                    .map(|t| t.map(|t| t.and_utc().timestamp_micros()))
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))?,
            Type::TIMESTAMPTZ => Series::new(
                name,
                col_of!(DateTime<Utc>)
                    .into_iter()
                    .map(|t| t.map(|t| t.timestamp_micros()))
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))?,
            Type::TIME => Series::new(
                name,
                col_of!(NaiveTime)
                    .into_iter()
                    .map(|t| {
                        t.map(|t| {
                            use chrono::Timelike;
                            t.num_seconds_from_midnight() as i64 * 1_000_000_000
                                + t.nanosecond() as i64
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Time)?,
            _ => Series::new(name, col_of!(String)),
        };
        out.push(series.into_column());
    }
    Ok(DataFrame::new_infer_height(out)?)
}

use chrono::Datelike;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn dates_and_times_survive_the_conversion() {
        let df = df!(
            "d" => [Some(20_000i32), None],
        )
        .unwrap();
        let d = df.column("d").unwrap().cast(&DataType::Date).unwrap();
        match Values::from_column(&d).unwrap() {
            Values::Date(v) => {
                assert_eq!(v[0], NaiveDate::from_ymd_opt(2024, 10, 4));
                assert_eq!(v[1], None);
            }
            _ => panic!("a date column maps to date"),
        }
    }
}
