//! PostgreSQL plumbing shared by the PostgreSQL source and target: connecting (the URL from
//! the spec or the worker's environment; TLS and passwords the way libpq does them, in
//! [`conninfo`], [`passfile`] and [`tls`]), quoting, and the type mapping between Polars
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

pub mod conninfo;
pub mod passfile;
pub mod tls;

use conninfo::{ConnInfo, SslMode};

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

/// The connection string without its password, for messages: `postgres://user:***@host/db`
/// (a `password` query parameter or `password=` pair masked too).
pub fn redact(conn: &str) -> String {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let (base, query) = match conn.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (conn, None),
        };
        // userinfo is what comes between `//` and the last `@` before the path.
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let authority_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        let authority = &base[scheme_end..authority_end];
        let masked = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hosts}"),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let mut out = format!("{}{masked}{}", &base[..scheme_end], &base[authority_end..]);
        if let Some(q) = query {
            let pairs: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push('?');
            out.push_str(&pairs.join("&"));
        }
        out
    } else {
        redact_key_values(conn)
    }
}

/// `text` with every `postgres://` / `postgresql://` URL in it redacted (error messages
/// that quote a line of a spec).
pub fn redact_in_text(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("postgres") {
        let tail = &rest[i..];
        if !(tail.starts_with("postgres://") || tail.starts_with("postgresql://")) {
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
            continue;
        }
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        out.push_str(&rest[..i]);
        out.push_str(&redact(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    if out.contains("password") {
        redact_key_values(&out)
    } else {
        out
    }
}

/// `password=...` (quoted or not) masked in libpq's key=value form.
fn redact_key_values(conn: &str) -> String {
    let mut out = String::new();
    let mut rest = conn;
    while let Some(i) = find_password_key(rest) {
        out.push_str(&rest[..i]);
        out.push_str("password=***");
        let mut after = rest[i + "password".len()..].trim_start();
        after = after.strip_prefix('=').unwrap_or(after).trim_start();
        let value_len = if let Some(q) = after.strip_prefix('\'') {
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((j, c)) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else if c == '\'' {
                    end = j + 1;
                    break;
                }
            }
            end + 1
        } else {
            after.find(char::is_whitespace).unwrap_or(after.len())
        };
        rest = &after[value_len.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// The byte offset of a `password` key (at the start or after whitespace, before `=`).
fn find_password_key(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("password").map(|i| from + i) {
        let at_start = i == 0 || s[..i].ends_with(char::is_whitespace);
        let then_eq = s[i + "password".len()..].trim_start().starts_with('=');
        if at_start && then_eq {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Whether a connection string written in a spec carries a password (which then sits in
/// the spec file and the workflow history: `validate` and `run` warn).
pub fn embeds_password(conn: &str) -> bool {
    match conninfo::parse(conn) {
        Ok(p) => p.config.get_password().is_some(),
        Err(_) => redact(conn) != conn,
    }
}

/// Connects (10 s timeout) and drives the connection on a background task. TLS follows
/// `sslmode` as libpq does (default `prefer`); the password comes from the string, else
/// `PGPASSWORD`, else the password file, all read on the worker now.
pub async fn connect(conn: &ConnSpec) -> Result<Client> {
    let url = resolve_url(conn)?;
    let shown = redact(&url);
    let info = conninfo::parse(&url)
        .and_then(|p| ConnInfo::resolve(p, &conninfo::ProcessEnv))
        .map_err(|e| EngineError::Spec(format!("postgres connection {shown}: {e}")))?;
    let context = format!("connect to {shown}");
    match tokio::time::timeout(Duration::from_secs(10), connect_info(&info, &context)).await {
        Ok(r) => r,
        Err(_) => Err(EngineError::io(
            context,
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 10 s"),
        )),
    }
}

/// One connection by `info`'s mode, with libpq's fallbacks: `allow` tries plain text first
/// and TLS when the server refuses it; `prefer` tries TLS and falls back to plain text when
/// the handshake fails or the server refuses the TLS session.
async fn connect_info(info: &ConnInfo, context: &str) -> Result<Client> {
    let mode = if info.only_sockets() {
        SslMode::Disable
    } else {
        info.mode
    };
    match mode {
        SslMode::Disable => plain(info).await.map_err(|e| EngineError::pg(context, e)),
        SslMode::Allow => match plain(info).await {
            Ok(c) => Ok(c),
            Err(e) if e.as_db_error().is_some() => {
                with_tls(info, tokio_postgres::config::SslMode::Prefer, context).await
            }
            Err(e) => Err(EngineError::pg(context, e)),
        },
        SslMode::Prefer => {
            let tls = tls::MakeTls::new(
                tls::client_config(info)
                    .map_err(|e| EngineError::Spec(format!("{context}: {e}")))?,
            );
            let seen = tls.seen.clone();
            let mut config = info.config.clone();
            config.ssl_mode(tokio_postgres::config::SslMode::Prefer);
            match config.connect(tls).await {
                Ok((client, connection)) => {
                    drive(connection);
                    Ok(client)
                }
                Err(e) => {
                    let retry_plain = {
                        let h = seen.lock().expect("handshake record");
                        (h.attempted && !h.established)
                            || (h.established && e.as_db_error().is_some())
                    };
                    if retry_plain {
                        tracing::debug!(error = %e, "TLS did not work (sslmode=prefer): trying plain text");
                        plain(info).await.map_err(|e| EngineError::pg(context, e))
                    } else {
                        Err(EngineError::pg(context, e))
                    }
                }
            }
        }
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            with_tls(info, tokio_postgres::config::SslMode::Require, context).await
        }
    }
}

async fn plain(info: &ConnInfo) -> std::result::Result<Client, tokio_postgres::Error> {
    let mut config = info.config.clone();
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, connection) = config.connect(NoTls).await?;
    drive(connection);
    Ok(client)
}

async fn with_tls(
    info: &ConnInfo,
    ssl_mode: tokio_postgres::config::SslMode,
    context: &str,
) -> Result<Client> {
    let tls = tls::MakeTls::new(
        tls::client_config(info).map_err(|e| EngineError::Spec(format!("{context}: {e}")))?,
    );
    let seen = tls.seen.clone();
    let mut config = info.config.clone();
    config.ssl_mode(ssl_mode);
    match config.connect(tls).await {
        Ok((client, connection)) => {
            drive(connection);
            Ok(client)
        }
        Err(e) => {
            let h = seen.lock().expect("handshake record");
            let host = first_host(info);
            if let Some(failure) = &h.failure {
                // A certificate or protocol problem does not heal by retrying.
                return Err(EngineError::Tls(format!(
                    "{context}: {}",
                    tls::explain(failure, info, &host)
                )));
            }
            if !h.attempted && e.to_string().contains("TLS") && e.as_db_error().is_none() {
                let detail = std::error::Error::source(&e).map(|s| s.to_string());
                if detail.as_deref() == Some("server does not support TLS") {
                    return Err(EngineError::Tls(format!(
                        "{context}: the server does not accept TLS connections, but sslmode={} requires TLS: turn ssl on at the server, or choose sslmode=prefer or disable",
                        info.mode.as_str()
                    )));
                }
            }
            drop(h);
            Err(EngineError::pg(context, e))
        }
    }
}

fn first_host(info: &ConnInfo) -> String {
    match info.config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    }
}

fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
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

/// The Polars type of a column as `format_type` spells it (what the schema contract compares
/// a batch with). Types tidemark does not map (json, uuid, `numeric` without a precision, ...)
/// are opaque: any batch type fits them (the server casts on insert), none widens them.
pub fn polars_type_of(format_type: &str) -> DataType {
    let base = format_type.split('(').next().unwrap_or(format_type).trim();
    match base {
        "boolean" => DataType::Boolean,
        "smallint" => DataType::Int16,
        "integer" => DataType::Int32,
        "bigint" => DataType::Int64,
        "real" => DataType::Float32,
        "double precision" => DataType::Float64,
        "text" | "character varying" | "character" | "citext" => DataType::String,
        "bytea" => DataType::Binary,
        "date" => DataType::Date,
        "timestamp with time zone" => {
            DataType::Datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        }
        "timestamp without time zone" => DataType::Datetime(TimeUnit::Microseconds, None),
        "time without time zone" => DataType::Time,
        "numeric" => {
            let args = format_type
                .split_once('(')
                .and_then(|(_, a)| a.strip_suffix(')'))
                .map(|a| {
                    a.split(',')
                        .map(|p| p.trim().parse::<usize>())
                        .collect::<Vec<_>>()
                });
            match args.as_deref() {
                Some([Ok(p), Ok(s)]) => DataType::Decimal(*p, *s),
                Some([Ok(p)]) => DataType::Decimal(*p, 0),
                _ => DataType::Unknown(Default::default()),
            }
        }
        _ => DataType::Unknown(Default::default()),
    }
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
        assert_eq!(
            redact("postgres://u:p%40ss@h1:5432,h2:5433/db?password=again&sslmode=require"),
            "postgres://u:***@h1:5432,h2:5433/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact("host=h password='it\\'s secret' user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(redact("password=plain host=h"), "password=*** host=h");
        assert!(embeds_password("postgres://u:pw@h/db"));
        assert!(embeds_password("host=h password=pw"));
        assert!(!embeds_password("postgres://u@h/db?sslmode=verify-full"));
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
