//! Pipeline spec files (TOML): parsing, validation with precise errors, and resolution into
//! the [`PipelineSpec`] that runs embed in their workflow input.
//!
//! Every error names the file, the key and the fix. Relative paths are resolved against the
//! spec file's directory, so a spec means the same thing from any working directory.

use crate::cursor::{parse_cursor, parse_duration_micros};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tidemark_workflows::cursor::{CursorType, Lookback};
use tidemark_workflows::spec::{
    CDC_POS_COL, CdcSpec, ConnSpec, LatePolicy, LateSpec, MonitorSpec, OnBadEvent, OnNullCursor,
    Overlap, PipelineSpec, ScheduleSpec, SourceKind, SourceSpec, TargetKind, TargetSpec,
    TransformSpec, WriteMode,
};

/// A spec that could not be loaded; the message names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    message: String,
}

impl SpecError {
    fn at(file: &Path, key: &str, problem: impl std::fmt::Display, fix: &str) -> Self {
        SpecError {
            message: format!("{}: `{key}`: {problem}; {fix}", file.display()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    state_dir: Option<String>,
    source: RawSource,
    transform: Option<RawTransform>,
    target: RawTarget,
    late: Option<RawLate>,
    monitor: Option<RawMonitor>,
    schedule: Option<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    max_lag: Option<String>,
    empty_runs_alert: Option<u32>,
    spike_factor: Option<toml::Value>,
    sla: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<String>,
    every: Option<String>,
    paused: Option<bool>,
    catchup_window: Option<String>,
    overlap: Option<String>,
    timezone: Option<String>,
    jitter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: String,
    path: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    query: Option<String>,
    table: Option<String>,
    cursor: Option<String>,
    cursor_type: Option<String>,
    lookback: Option<toml::Value>,
    initial: Option<toml::Value>,
    on_null_cursor: Option<String>,
    event_time: Option<String>,
    // CDC sources.
    key: Option<Vec<String>>,
    max_events: Option<i64>,
    on_bad_event: Option<String>,
    brokers: Option<String>,
    topic: Option<String>,
    topics: Option<Vec<String>>,
    group_id: Option<String>,
    types: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransform {
    sql: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: String,
    path: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    table: Option<String>,
    range_column: Option<String>,
    mode: Option<String>,
    key: Option<Vec<String>>,
    partition_by: Option<Vec<String>>,
    partition_stable: Option<bool>,
    soft_delete: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLate {
    policy: Option<String>,
    quarantine_path: Option<String>,
}

/// Reads, validates and resolves a spec file.
pub fn load(path: &Path) -> Result<PipelineSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        message: format!("{}: cannot read spec file: {e}", path.display()),
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse(&text, &abs)
}

/// Validates and resolves spec text that was read from `file` (used for messages and paths).
pub fn parse(text: &str, file: &Path) -> Result<PipelineSpec, SpecError> {
    let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError {
        message: format!(
            "{}: {}",
            file.display(),
            e.to_string().trim_end().replace('\n', "\n  ")
        ),
    })?;
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let resolve = |p: &str| -> String {
        let p = PathBuf::from(p);
        let joined = if p.is_absolute() { p } else { base.join(p) };
        normalize(&joined).to_string_lossy().into_owned()
    };

    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(SpecError::at(
            file,
            "name",
            format!("{:?} is not a valid pipeline name", raw.name),
            "use letters, digits, `_` and `-` only (e.g. name = \"orders\")",
        ));
    }

    let s = &raw.source;
    let kind = match s.kind.as_str() {
        "parquet" => SourceKind::Parquet,
        "postgres" => SourceKind::Postgres,
        "debezium-jsonl" | "debezium_jsonl" => SourceKind::DebeziumJsonl,
        "kafka-debezium" | "kafka_debezium" => SourceKind::KafkaDebezium,
        other => {
            return Err(SpecError::at(
                file,
                "source.kind",
                format!("unsupported source kind {other:?}"),
                "use kind = \"parquet\", \"postgres\", \"debezium-jsonl\" or \"kafka-debezium\"",
            ));
        }
    };
    let cdc = if kind.is_cdc() {
        Some(cdc_of(file, kind, s, &raw)?)
    } else {
        check_not_cdc_keys(file, s, &raw.target)?;
        None
    };
    let cursor_name = match (&cdc, s.cursor.as_deref()) {
        (Some(_), _) => CDC_POS_COL.to_string(),
        (None, Some(c)) if !c.trim().is_empty() => c.to_string(),
        (None, Some(_)) => {
            return Err(SpecError::at(
                file,
                "source.cursor",
                "is empty",
                "give a value",
            ));
        }
        (None, None) => {
            return Err(SpecError::at(
                file,
                "source.cursor",
                "is required",
                "name the column whose value only grows, e.g. cursor = \"updated_at\"",
            ));
        }
    };
    let (source_path, source_conn, source_query) = match kind {
        SourceKind::Parquet => {
            for (key, set) in [
                ("source.url", s.url.is_some()),
                ("source.url_env", s.url_env.is_some()),
                ("source.query", s.query.is_some()),
                ("source.table", s.table.is_some()),
            ] {
                if set {
                    return Err(SpecError::at(
                        file,
                        key,
                        "is a key of kind = \"postgres\" sources",
                        "remove it, or set kind = \"postgres\"",
                    ));
                }
            }
            let path = s.path.as_deref().unwrap_or("");
            if path.trim().is_empty() {
                return Err(SpecError::at(
                    file,
                    "source.path",
                    "is required for a Parquet source",
                    "give the directory or glob of the Parquet files, e.g. path = \"data/orders\"",
                ));
            }
            (resolve(path), None, None)
        }
        SourceKind::DebeziumJsonl => {
            let path = s.path.as_deref().unwrap_or("");
            if path.trim().is_empty() {
                return Err(SpecError::at(
                    file,
                    "source.path",
                    "is required for a debezium-jsonl source",
                    "give the directory or glob of the event files, e.g. path = \"events/orders\"",
                ));
            }
            (resolve(path), None, None)
        }
        SourceKind::KafkaDebezium => (String::new(), None, None),
        SourceKind::Postgres => {
            if s.path.is_some() {
                return Err(SpecError::at(
                    file,
                    "source.path",
                    "is a key of Parquet sources",
                    "remove it; a PostgreSQL source reads `query` or `table`",
                ));
            }
            let conn = conn_of(file, "source", &s.url, &s.url_env)?;
            let query = match (&s.query, &s.table) {
                (Some(q), None) if !q.trim().is_empty() => {
                    q.trim().trim_end_matches(';').to_string()
                }
                (None, Some(t)) if valid_table_name(t) => {
                    format!("SELECT * FROM {}", quote_table(t))
                }
                (None, Some(t)) => {
                    return Err(SpecError::at(
                        file,
                        "source.table",
                        format!("{t:?} is not a table name"),
                        "write table = \"schema.table\" or table = \"table\"",
                    ));
                }
                _ => {
                    return Err(SpecError::at(
                        file,
                        "source.query",
                        "a PostgreSQL source needs exactly one of `query` and `table`",
                        "write query = \"SELECT * FROM orders\" or table = \"public.orders\"",
                    ));
                }
            };
            (String::new(), Some(conn), Some(query))
        }
    };
    let cursor_type = match s.cursor_type.as_deref() {
        None => None,
        Some("timestamp") => Some(CursorType::Timestamp),
        Some("integer") => Some(CursorType::Integer),
        Some(other) => {
            return Err(SpecError::at(
                file,
                "source.cursor_type",
                format!("unknown cursor type {other:?}"),
                "use \"timestamp\" or \"integer\" (or omit it to infer from the schema)",
            ));
        }
    };
    let lookback = match &s.lookback {
        None => Lookback::Duration(0),
        Some(toml::Value::String(text)) => match parse_duration_micros(text) {
            Some(us) if us >= 0 => Lookback::Duration(us),
            _ => {
                return Err(SpecError::at(
                    file,
                    "source.lookback",
                    format!("{text:?} is not a duration"),
                    "write a duration such as \"6h\", \"30m\" or \"0s\" (or an integer for integer cursors)",
                ));
            }
        },
        Some(toml::Value::Integer(n)) if *n >= 0 => Lookback::Integer(*n),
        Some(other) => {
            return Err(SpecError::at(
                file,
                "source.lookback",
                format!("{other} is neither a duration string nor a non-negative integer"),
                "write e.g. lookback = \"6h\" for timestamps or lookback = 100 for integer cursors",
            ));
        }
    };
    if let Some(t) = cursor_type
        && lookback.in_units_of(t).is_none()
    {
        let fix = match t {
            CursorType::Timestamp => "a timestamp cursor takes a duration, e.g. lookback = \"6h\"",
            CursorType::Integer => "an integer cursor takes an integer, e.g. lookback = 100",
        };
        return Err(SpecError::at(
            file,
            "source.lookback",
            format!("does not fit cursor_type = {:?}", t.as_str()),
            fix,
        ));
    }
    let initial = match &s.initial {
        None => None,
        Some(toml::Value::String(v)) => Some(v.clone()),
        Some(toml::Value::Integer(v)) => Some(v.to_string()),
        Some(toml::Value::Datetime(v)) => Some(v.to_string()),
        Some(other) => {
            return Err(SpecError::at(
                file,
                "source.initial",
                format!("{other} is not a cursor value"),
                "write a timestamp such as \"2026-01-01T00:00:00Z\" or an integer",
            ));
        }
    };
    if let (Some(text), Some(t)) = (&initial, cursor_type)
        && parse_cursor(text, t).is_none()
    {
        return Err(SpecError::at(
            file,
            "source.initial",
            format!("{text:?} is not a valid {}", t.as_str()),
            "write e.g. \"2026-01-01T00:00:00Z\" for timestamps or an integer for integer cursors",
        ));
    }
    let on_null_cursor = match s.on_null_cursor.as_deref() {
        None | Some("error") => OnNullCursor::Error,
        Some("exclude") => OnNullCursor::Exclude,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "source.on_null_cursor",
                format!("unknown policy {other:?}"),
                "use \"error\" or \"exclude\"",
            ));
        }
    };

    let t = &raw.target;
    let target_kind = match t.kind.as_str() {
        "delta" => TargetKind::Delta,
        "parquet" => TargetKind::Parquet,
        "postgres" => TargetKind::Postgres,
        other => {
            return Err(SpecError::at(
                file,
                "target.kind",
                format!("unsupported target kind {other:?}"),
                "use kind = \"delta\", \"parquet\" or \"postgres\"",
            ));
        }
    };
    let (target_path, target_conn, target_table) = if target_kind == TargetKind::Postgres {
        if t.path.is_some() {
            return Err(SpecError::at(
                file,
                "target.path",
                "is a key of file targets",
                "remove it; a PostgreSQL target names its `table`",
            ));
        }
        let conn = conn_of(file, "target", &t.url, &t.url_env)?;
        let table = match &t.table {
            Some(tb) if valid_table_name(tb) => tb.clone(),
            Some(tb) => {
                return Err(SpecError::at(
                    file,
                    "target.table",
                    format!("{tb:?} is not a table name"),
                    "write table = \"schema.table\" or table = \"table\"",
                ));
            }
            None => {
                return Err(SpecError::at(
                    file,
                    "target.table",
                    "is required for a PostgreSQL target",
                    "write table = \"public.orders\"",
                ));
            }
        };
        (String::new(), Some(conn), Some(table))
    } else {
        for (key, set) in [
            ("target.url", t.url.is_some()),
            ("target.url_env", t.url_env.is_some()),
            ("target.table", t.table.is_some()),
            ("target.range_column", t.range_column.is_some()),
        ] {
            if set {
                return Err(SpecError::at(
                    file,
                    key,
                    "is a key of kind = \"postgres\" targets",
                    "remove it, or set kind = \"postgres\"",
                ));
            }
        }
        match t.path.as_deref() {
            Some(p) if !p.trim().is_empty() => (resolve(p), None, None),
            _ => {
                return Err(SpecError::at(
                    file,
                    "target.path",
                    "is required",
                    "give the table's or dataset's directory, e.g. path = \"lake/orders\"",
                ));
            }
        }
    };
    let mode = match (target_kind, t.mode.as_deref()) {
        (TargetKind::Delta | TargetKind::Postgres, None) => WriteMode::Merge,
        (TargetKind::Parquet, None) => WriteMode::PartitionOverwrite,
        (_, Some("merge")) => WriteMode::Merge,
        (_, Some("append")) => WriteMode::Append,
        (_, Some("partition_overwrite")) => WriteMode::PartitionOverwrite,
        (_, Some("delete_insert")) => WriteMode::DeleteInsert,
        (_, Some(other)) => {
            return Err(SpecError::at(
                file,
                "target.mode",
                format!("unknown mode {other:?}"),
                "use \"merge\", \"append\", \"delete_insert\" (PostgreSQL) or \"partition_overwrite\" (Parquet)",
            ));
        }
    };
    match (target_kind, mode) {
        (TargetKind::Delta | TargetKind::Parquet, WriteMode::DeleteInsert) => {
            return Err(SpecError::at(
                file,
                "target.mode",
                "delete_insert is a mode of the PostgreSQL target",
                "use kind = \"postgres\", or mode = \"merge\" for a Delta table",
            ));
        }
        (TargetKind::Postgres, WriteMode::PartitionOverwrite) => {
            return Err(SpecError::at(
                file,
                "target.mode",
                "partition_overwrite is a mode of the Parquet dataset target",
                "use mode = \"delete_insert\" with a range_column to replace a range of rows",
            ));
        }
        (TargetKind::Delta, WriteMode::PartitionOverwrite) => {
            return Err(SpecError::at(
                file,
                "target.mode",
                "partition_overwrite is a mode of the Parquet dataset target",
                "use kind = \"parquet\", or mode = \"merge\" for a Delta table (its MERGE touches only the matching rows)",
            ));
        }
        (TargetKind::Parquet, m) if m != WriteMode::PartitionOverwrite => {
            return Err(SpecError::at(
                file,
                "target.mode",
                format!(
                    "{:?} is not supported by the Parquet dataset target: plain Parquet files cannot be updated row by row",
                    m.as_str()
                ),
                "use mode = \"partition_overwrite\", or kind = \"delta\" for merge/append",
            ));
        }
        _ => {}
    }
    let key = match (kind.is_cdc(), &t.key, &s.key) {
        (true, None, Some(k)) => k.clone(),
        _ => t.key.clone().unwrap_or_default(),
    };
    if kind.is_cdc() {
        check_cdc_target(file, target_kind, mode, &key, &s.key)?;
    }
    if mode == WriteMode::Merge && key.is_empty() {
        return Err(SpecError::at(
            file,
            "target.key",
            "is required for mode = \"merge\"",
            "list the key columns, e.g. key = [\"order_id\"]",
        ));
    }
    if let Some(k) = key.iter().find(|k| k.trim().is_empty()) {
        return Err(SpecError::at(
            file,
            "target.key",
            format!("{k:?} is not a column name"),
            "remove it",
        ));
    }
    if has_duplicate(&key) {
        return Err(SpecError::at(
            file,
            "target.key",
            "lists a column twice",
            "list each key column once",
        ));
    }
    let partition_by = t.partition_by.clone().unwrap_or_default();
    if has_duplicate(&partition_by) {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            "lists a column twice",
            "list each partition column once",
        ));
    }
    if target_kind == TargetKind::Postgres && !partition_by.is_empty() {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            "is not used by the PostgreSQL target",
            "remove it (partition the table in PostgreSQL itself if you need to)",
        ));
    }
    let range_column = t.range_column.clone();
    match (mode, &range_column) {
        (WriteMode::DeleteInsert, None) => {
            return Err(SpecError::at(
                file,
                "target.range_column",
                "is required for mode = \"delete_insert\" (it names the range a run replaces)",
                "write range_column = \"order_date\"",
            ));
        }
        (m, Some(_)) if m != WriteMode::DeleteInsert => {
            return Err(SpecError::at(
                file,
                "target.range_column",
                "is only used with mode = \"delete_insert\"",
                "remove it, or set mode = \"delete_insert\"",
            ));
        }
        _ => {}
    }
    if mode == WriteMode::PartitionOverwrite && partition_by.is_empty() {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            "is required for mode = \"partition_overwrite\" (it names what a run replaces)",
            "list the partition columns, e.g. partition_by = [\"order_date\"]",
        ));
    }
    let partition_stable = t.partition_stable.unwrap_or(false);
    if partition_stable {
        let why = if target_kind != TargetKind::Delta {
            Some("is only used by Delta targets")
        } else if partition_by.is_empty() {
            Some("needs partition_by (it promises each key stays in its partition)")
        } else if mode != WriteMode::Merge {
            Some("is only used with mode = \"merge\"")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SpecError::at(
                file,
                "target.partition_stable",
                why,
                "remove it",
            ));
        }
    }
    if let Some(p) = partition_by.iter().find(|p| p.trim().is_empty()) {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            format!("{p:?} is not a column name"),
            "remove it",
        ));
    }
    if mode == WriteMode::Append && !lookback.is_zero() {
        return Err(SpecError::at(
            file,
            "source.lookback",
            "a lookback re-reads rows, which append mode would load twice",
            "use mode = \"merge\" with a key, or set lookback = \"0s\"",
        ));
    }

    let late = match &raw.late {
        None => LateSpec {
            policy: LatePolicy::Merge,
            quarantine_path: None,
        },
        Some(l) => {
            let policy = match l.policy.as_deref() {
                None | Some("merge") => LatePolicy::Merge,
                Some("quarantine") => LatePolicy::Quarantine,
                Some(other) => {
                    return Err(SpecError::at(
                        file,
                        "late.policy",
                        format!("unknown policy {other:?}"),
                        "use \"merge\" or \"quarantine\"",
                    ));
                }
            };
            if s.event_time.is_none() {
                return Err(SpecError::at(
                    file,
                    "late",
                    "late rows are defined by an event time, and [source] has no `event_time`",
                    "add event_time = \"<column>\" to [source], or remove [late]",
                ));
            }
            if policy == LatePolicy::Quarantine && l.quarantine_path.is_none() {
                return Err(SpecError::at(
                    file,
                    "late.quarantine_path",
                    "is required for policy = \"quarantine\"",
                    "give the side Delta table's directory, e.g. quarantine_path = \"lake/orders_late\"",
                ));
            }
            if policy == LatePolicy::Merge && l.quarantine_path.is_some() {
                return Err(SpecError::at(
                    file,
                    "late.quarantine_path",
                    "is only used with policy = \"quarantine\"",
                    "set policy = \"quarantine\" or remove quarantine_path",
                ));
            }
            LateSpec {
                policy,
                quarantine_path: l.quarantine_path.as_deref().map(resolve),
            }
        }
    };
    if late.quarantine_path.as_deref() == Some(target_path.as_str()) {
        return Err(SpecError::at(
            file,
            "late.quarantine_path",
            "is the target table itself",
            "give the quarantine table its own directory",
        ));
    }

    let monitor = match &raw.monitor {
        None => MonitorSpec::default(),
        Some(m) => monitor_of(file, m)?,
    };
    let schedule = raw
        .schedule
        .as_ref()
        .map(|s| schedule_of(file, s))
        .transpose()?;

    let state_dir = resolve(raw.state_dir.as_deref().unwrap_or(".tidemark"));
    Ok(PipelineSpec {
        name: raw.name.clone(),
        spec_path: file.to_string_lossy().into_owned(),
        state_dir,
        source: SourceSpec {
            kind,
            path: source_path,
            conn: source_conn,
            query: source_query,
            cursor: cursor_name,
            cursor_type: if cdc.is_some() {
                Some(CursorType::Integer)
            } else {
                cursor_type
            },
            lookback,
            initial,
            on_null_cursor,
            event_time: s.event_time.clone(),
            cdc,
        },
        transform: raw
            .transform
            .as_ref()
            .map(|t| TransformSpec { sql: t.sql.clone() }),
        target: TargetSpec {
            kind: target_kind,
            path: target_path,
            mode,
            key,
            partition_by,
            partition_stable,
            conn: target_conn,
            table: target_table,
            range_column,
        },
        late,
        monitor,
        schedule,
    })
}

/// A duration key (`"90s"`, `"15m"`, `"2h"`, `"1d"`) in milliseconds; `"0"` or `"off"` is None.
fn duration_ms(file: &Path, key: &str, text: &str) -> Result<Option<u64>, SpecError> {
    if matches!(text.trim(), "0" | "off" | "none") {
        return Ok(None);
    }
    match parse_duration_micros(text) {
        Some(us) if us > 0 => Ok(Some((us / 1000) as u64)),
        _ => Err(SpecError::at(
            file,
            key,
            format!("{text:?} is not a duration"),
            "write a number and a unit: ms, s, m, h or d (e.g. \"15m\", \"2h\"), or \"off\"",
        )),
    }
}

fn monitor_of(file: &Path, m: &RawMonitor) -> Result<MonitorSpec, SpecError> {
    let defaults = MonitorSpec::default();
    let max_lag_ms = match &m.max_lag {
        Some(t) => duration_ms(file, "monitor.max_lag", t)?,
        None => defaults.max_lag_ms,
    };
    let sla_ms = match &m.sla {
        Some(t) => duration_ms(file, "monitor.sla", t)?,
        None => defaults.sla_ms,
    };
    let spike_factor = match &m.spike_factor {
        None => defaults.spike_factor,
        Some(toml::Value::Integer(n)) if *n >= 0 => *n as f64,
        Some(toml::Value::Float(f)) if *f >= 0.0 && f.is_finite() => *f,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "monitor.spike_factor",
                format!("{other} is not a non-negative number"),
                "give a factor such as 10 (0 turns the rule off)",
            ));
        }
    };
    if spike_factor > 0.0 && spike_factor <= 1.0 {
        return Err(SpecError::at(
            file,
            "monitor.spike_factor",
            format!("{spike_factor} would flag ordinary batches"),
            "give a factor above 1 (e.g. 10), or 0 to turn the rule off",
        ));
    }
    Ok(MonitorSpec {
        max_lag_ms,
        empty_runs_alert: m.empty_runs_alert.unwrap_or(defaults.empty_runs_alert),
        spike_factor,
        sla_ms,
    })
}

fn schedule_of(file: &Path, s: &RawSchedule) -> Result<ScheduleSpec, SpecError> {
    let every_ms = match &s.every {
        Some(t) => match duration_ms(file, "schedule.every", t)? {
            Some(ms) if ms >= 1000 => Some(ms),
            _ => {
                return Err(SpecError::at(
                    file,
                    "schedule.every",
                    format!("{t:?} is shorter than a second"),
                    "give an interval of at least 1s (e.g. every = \"15m\")",
                ));
            }
        },
        None => None,
    };
    let cron = s.cron.as_ref().map(|c| c.trim().to_string());
    if let Some(c) = &cron
        && !c.starts_with('@')
        && !(5..=7).contains(&c.split_whitespace().count())
    {
        return Err(SpecError::at(
            file,
            "schedule.cron",
            format!("{c:?} does not have 5 fields"),
            "write minute hour day-of-month month day-of-week, e.g. cron = \"*/15 * * * *\"",
        ));
    }
    if cron.is_some() == every_ms.is_some() {
        return Err(SpecError::at(
            file,
            "schedule",
            "needs exactly one of `cron` and `every`",
            "e.g. cron = \"*/15 * * * *\" or every = \"15m\"",
        ));
    }
    let catchup_window_ms = match &s.catchup_window {
        Some(t) => duration_ms(file, "schedule.catchup_window", t)?.unwrap_or(0),
        None => 60 * 60 * 1000,
    };
    if catchup_window_ms < 10_000 {
        return Err(SpecError::at(
            file,
            "schedule.catchup_window",
            "is below Temporal's minimum of 10s",
            "give at least \"10s\" (default \"1h\")",
        ));
    }
    let overlap = match s.overlap.as_deref().unwrap_or("skip") {
        "skip" => Overlap::Skip,
        "buffer_one" => Overlap::BufferOne,
        other => {
            return Err(SpecError::at(
                file,
                "schedule.overlap",
                format!("{other:?} would let two runs of one pipeline overlap or is unknown"),
                "use \"skip\" (default) or \"buffer_one\"",
            ));
        }
    };
    let jitter_ms = match &s.jitter {
        Some(t) => duration_ms(file, "schedule.jitter", t)?,
        None => None,
    };
    Ok(ScheduleSpec {
        cron,
        every_ms,
        paused: s.paused.unwrap_or(false),
        catchup_window_ms,
        overlap,
        timezone: s.timezone.clone(),
        jitter_ms,
    })
}

/// `url` or `url_env` (exactly one) of a PostgreSQL source or target.
fn conn_of(
    file: &Path,
    section: &str,
    url: &Option<String>,
    url_env: &Option<String>,
) -> Result<ConnSpec, SpecError> {
    match (url, url_env) {
        (Some(u), None) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(ConnSpec::Url(u.clone()))
        }
        (Some(u), None) => Err(SpecError::at(
            file,
            &format!("{section}.url"),
            format!("{u:?} is not a postgres:// URL"),
            "write url = \"postgres://user@host:5432/db\", or url_env = \"VAR\" to read it from the worker's environment",
        )),
        (None, Some(v)) if !v.trim().is_empty() => Ok(ConnSpec::UrlEnv(v.clone())),
        _ => Err(SpecError::at(
            file,
            &format!("{section}.url"),
            "a PostgreSQL connection needs exactly one of `url` and `url_env`",
            "write url_env = \"TIDEMARK_PG_URL\" (read by the worker; keeps passwords out of the workflow history) or url = \"postgres://...\"",
        )),
    }
}

/// `schema.table` or `table`, plain identifiers (letters, digits, `_`, `$`).
fn valid_table_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

/// A valid table name as a quoted SQL identifier.
fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

fn has_duplicate(items: &[String]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    items.iter().any(|i| !seen.insert(i))
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Validates the CDC keys of a `debezium-jsonl` / `kafka-debezium` source.
fn cdc_of(
    file: &Path,
    kind: SourceKind,
    s: &RawSource,
    raw: &RawSpec,
) -> Result<CdcSpec, SpecError> {
    let kind_name = match kind {
        SourceKind::KafkaDebezium => "kafka-debezium",
        _ => "debezium-jsonl",
    };
    let not_cdc: [(&str, bool, &str); 9] = [
        (
            "source.cursor",
            s.cursor.is_some(),
            "the event's position is the cursor",
        ),
        (
            "source.cursor_type",
            s.cursor_type.is_some(),
            "the event's position is the cursor",
        ),
        (
            "source.lookback",
            s.lookback.is_some(),
            "events are applied by position, never re-read",
        ),
        (
            "source.initial",
            s.initial.is_some(),
            "a CDC pipeline starts at the stream's beginning",
        ),
        (
            "source.on_null_cursor",
            s.on_null_cursor.is_some(),
            "use on_bad_event",
        ),
        (
            "source.event_time",
            s.event_time.is_some(),
            "late rows do not apply to change events",
        ),
        (
            "source.query",
            s.query.is_some(),
            "it is a key of PostgreSQL sources",
        ),
        (
            "source.table",
            s.table.is_some(),
            "it is a key of PostgreSQL sources",
        ),
        (
            "source.url",
            s.url.is_some() || s.url_env.is_some(),
            "it is a key of PostgreSQL sources",
        ),
    ];
    for (key, set, why) in not_cdc {
        if set {
            return Err(SpecError::at(
                file,
                key,
                format!("is not used by a {kind_name} source ({why})"),
                "remove it",
            ));
        }
    }
    if raw.transform.is_some() {
        return Err(SpecError::at(
            file,
            "transform",
            format!("a {kind_name} source applies change events as they are"),
            "remove [transform] (transform the target table downstream instead)",
        ));
    }
    if raw.late.is_some() {
        return Err(SpecError::at(
            file,
            "late",
            format!("is not used by a {kind_name} source"),
            "remove [late]: change events are ordered by their source position",
        ));
    }
    let key = s.key.clone().unwrap_or_default();
    if key.is_empty() || key.iter().any(|k| k.trim().is_empty()) {
        return Err(SpecError::at(
            file,
            "source.key",
            "is required for a change-event source (it identifies a row across its changes)",
            "list the captured table's primary key, e.g. key = [\"order_id\"]",
        ));
    }
    let max_events = match s.max_events {
        None => 100_000,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            return Err(SpecError::at(
                file,
                "source.max_events",
                format!("{n} is not a positive number"),
                "write e.g. max_events = 100000",
            ));
        }
    };
    let on_bad_event = match s.on_bad_event.as_deref() {
        None | Some("fail") => OnBadEvent::Fail,
        Some("dead_letter") | Some("dead-letter") => OnBadEvent::DeadLetter,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "source.on_bad_event",
                format!("unknown policy {other:?}"),
                "use \"fail\" (stop the run) or \"dead_letter\" (write the event aside and go on)",
            ));
        }
    };
    let types = s.types.clone().unwrap_or_default();
    for (column, t) in &types {
        if crate::cdc::decode::ColumnType::parse(t).is_none() {
            return Err(SpecError::at(
                file,
                &format!("source.types.{column}"),
                format!("unknown type {t:?}"),
                "use int64, int32, float64, string, bool, date, timestamp, timestamptz or decimal(p,s)",
            ));
        }
    }
    let mut topics = Vec::new();
    if kind == SourceKind::KafkaDebezium {
        if s.path.is_some() {
            return Err(SpecError::at(
                file,
                "source.path",
                "is a key of file sources",
                "remove it; a kafka-debezium source reads `topic` or `topics` from `brokers`",
            ));
        }
        match s.brokers.as_deref() {
            Some(b) if !b.trim().is_empty() => {}
            _ => {
                return Err(SpecError::at(
                    file,
                    "source.brokers",
                    "is required for a kafka-debezium source",
                    "write brokers = \"127.0.0.1:9092\"",
                ));
            }
        }
        topics = match (&s.topic, &s.topics) {
            (Some(t), None) if !t.trim().is_empty() => vec![t.clone()],
            (None, Some(ts)) if !ts.is_empty() && ts.iter().all(|t| !t.trim().is_empty()) => {
                ts.clone()
            }
            _ => {
                return Err(SpecError::at(
                    file,
                    "source.topic",
                    "a kafka-debezium source needs exactly one of `topic` and `topics`",
                    "write topic = \"dbserver1.public.orders\"",
                ));
            }
        };
    } else {
        for (key, set) in [
            ("source.brokers", s.brokers.is_some()),
            ("source.topic", s.topic.is_some()),
            ("source.topics", s.topics.is_some()),
            ("source.group_id", s.group_id.is_some()),
        ] {
            if set {
                return Err(SpecError::at(
                    file,
                    key,
                    "is a key of kind = \"kafka-debezium\" sources",
                    "remove it, or set kind = \"kafka-debezium\"",
                ));
            }
        }
    }
    Ok(CdcSpec {
        key,
        max_events,
        on_bad_event,
        brokers: s.brokers.clone(),
        topics,
        group_id: s.group_id.clone(),
        types,
        soft_delete: raw.target.soft_delete.unwrap_or(false),
    })
}

/// Refuses the CDC keys in the spec of a row source.
fn check_not_cdc_keys(file: &Path, s: &RawSource, t: &RawTarget) -> Result<(), SpecError> {
    for (key, set) in [
        ("source.key", s.key.is_some()),
        ("source.max_events", s.max_events.is_some()),
        ("source.on_bad_event", s.on_bad_event.is_some()),
        ("source.brokers", s.brokers.is_some()),
        ("source.topic", s.topic.is_some()),
        ("source.topics", s.topics.is_some()),
        ("source.group_id", s.group_id.is_some()),
        ("source.types", s.types.is_some()),
        ("target.soft_delete", t.soft_delete.is_some()),
    ] {
        if set {
            return Err(SpecError::at(
                file,
                key,
                "is a key of change-event sources (kind = \"debezium-jsonl\" or \"kafka-debezium\")",
                "remove it (row sources name their key in [target] key = [...])",
            ));
        }
    }
    Ok(())
}

/// A CDC source applies to a Delta table or a PostgreSQL table, by key, in merge mode.
fn check_cdc_target(
    file: &Path,
    kind: TargetKind,
    mode: WriteMode,
    key: &[String],
    source_key: &Option<Vec<String>>,
) -> Result<(), SpecError> {
    if kind == TargetKind::Parquet {
        return Err(SpecError::at(
            file,
            "target.kind",
            "a Parquet dataset cannot apply row-level changes",
            "use kind = \"delta\" or kind = \"postgres\" for a change-event source",
        ));
    }
    if mode != WriteMode::Merge {
        return Err(SpecError::at(
            file,
            "target.mode",
            format!("{:?} does not apply change events", mode.as_str()),
            "remove `mode` (change events are merged by key)",
        ));
    }
    if let Some(sk) = source_key
        && sk.as_slice() != key
    {
        return Err(SpecError::at(
            file,
            "target.key",
            format!("{key:?} differs from source.key {sk:?}"),
            "remove target.key: a change-event source's key is the target's",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "orders"
[source]
kind = "parquet"
path = "data/orders"
cursor = "updated_at"
lookback = "6h"
[target]
kind = "delta"
path = "lake/orders"
key = ["order_id"]
"#;

    fn err(text: &str) -> String {
        parse(text, Path::new("/x/spec.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn monitor_and_schedule_tables_resolve_with_defaults_and_name_bad_keys() {
        let s = parse(GOOD, Path::new("/x/spec.toml")).unwrap();
        assert_eq!(s.monitor, MonitorSpec::default());
        assert_eq!(s.schedule, None);
        let text = format!(
            "{GOOD}[monitor]\nmax_lag = \"off\"\nsla = \"90s\"\nspike_factor = 4.5\n[schedule]\nevery = \"15m\"\n"
        );
        let s = parse(&text, Path::new("/x/spec.toml")).unwrap();
        assert_eq!(s.monitor.max_lag_ms, None);
        assert_eq!(s.monitor.sla_ms, Some(90_000));
        assert_eq!(s.monitor.spike_factor, 4.5);
        assert_eq!(s.monitor.empty_runs_alert, 3);
        let sched = s.schedule.unwrap();
        assert_eq!(sched.every_ms, Some(900_000));
        assert_eq!(sched.overlap, Overlap::Skip);
        assert_eq!(sched.catchup_window_ms, 3_600_000);
        for (extra, needle) in [
            ("[schedule]\n", "exactly one of `cron` and `every`"),
            ("[schedule]\ncron = \"* *\"\n", "does not have 5 fields"),
            (
                "[schedule]\nevery = \"1m\"\noverlap = \"allow_all\"\n",
                "schedule.overlap",
            ),
            ("[schedule]\nevery = \"soon\"\n", "is not a duration"),
            ("[monitor]\nspike_factor = 1\n", "monitor.spike_factor"),
            ("[monitor]\nmax_lagg = \"1h\"\n", "unknown field"),
        ] {
            let e = err(&format!("{GOOD}{extra}"));
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn a_good_spec_resolves_paths_against_its_directory() {
        let s = parse(GOOD, Path::new("/x/y/spec.toml")).unwrap();
        assert_eq!(s.source.path, "/x/y/data/orders");
        assert_eq!(s.target.path, "/x/y/lake/orders");
        assert_eq!(s.state_dir, "/x/y/.tidemark");
        assert_eq!(s.source.lookback, Lookback::Duration(6 * 3_600_000_000));
        assert_eq!(s.target.mode, WriteMode::Merge);
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let e = err(&GOOD.replace("cursor = ", "cursr = \"x\"\ncursor = "));
        assert!(e.contains("/x/spec.toml") && e.contains("cursr"), "{e}");
    }

    #[test]
    fn merge_without_key_is_refused_with_a_fix() {
        let e = err(&GOOD.replace("key = [\"order_id\"]", ""));
        assert!(
            e.contains("target.key") && e.contains("key = [\"order_id\"]"),
            "{e}"
        );
    }

    #[test]
    fn append_with_lookback_is_refused() {
        let e = err(&GOOD.replace("key = [", "mode = \"append\"\nkey = ["));
        assert!(e.contains("source.lookback") && e.contains("append"), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_are_named() {
        assert!(err(&GOOD.replace("\"6h\"", "\"6 hours\"")).contains("source.lookback"));
        assert!(err(&GOOD.replace("name = \"orders\"", "name = \"or ders\"")).contains("`name`"));
        assert!(err(&GOOD.replace("kind = \"delta\"", "kind = \"mysql\"")).contains("target.kind"));
        let e = err(&GOOD.replace("key = [\"order_id\"]", "key = \"order_id\""));
        assert!(e.contains("key"), "{e}");
        let e = err(&GOOD.replace(
            "lookback = \"6h\"",
            "lookback = \"6h\"\ncursor_type = \"integer\"",
        ));
        assert!(e.contains("source.lookback"), "{e}");
    }

    #[test]
    fn partition_stable_needs_partitions_and_a_delta_merge() {
        let stable = GOOD.replace("key = [", "partition_stable = true\nkey = [");
        let e = err(&stable);
        assert!(
            e.contains("target.partition_stable") && e.contains("partition_by"),
            "{e}"
        );
        let with_parts = stable.replace("key = [", "partition_by = [\"order_date\"]\nkey = [");
        let s = parse(&with_parts, Path::new("/x/spec.toml")).unwrap();
        assert!(s.target.partition_stable);
        assert!(
            !parse(GOOD, Path::new("/x/spec.toml"))
                .unwrap()
                .target
                .partition_stable
        );
        let e = err(&with_parts.replace("key = [", "mode = \"append\"\nkey = ["));
        assert!(e.contains("target.partition_stable"), "{e}");
    }

    #[test]
    fn late_quarantine_needs_event_time_and_a_path() {
        let e = err(&format!("{GOOD}\n[late]\npolicy = \"quarantine\"\n"));
        assert!(e.contains("event_time"), "{e}");
        let with_event = GOOD.replace("lookback", "event_time = \"created_at\"\nlookback");
        let e = err(&format!("{with_event}\n[late]\npolicy = \"quarantine\"\n"));
        assert!(e.contains("late.quarantine_path"), "{e}");
    }

    #[test]
    fn the_parquet_target_defaults_to_partition_overwrite_and_needs_partitions() {
        let parquet = GOOD.replace("kind = \"delta\"", "kind = \"parquet\"");
        let e = err(&parquet);
        assert!(e.contains("target.partition_by"), "{e}");
        let s = parse(
            &format!("{parquet}partition_by = [\"order_date\"]\n"),
            Path::new("/x/spec.toml"),
        )
        .unwrap();
        assert_eq!(s.target.mode, WriteMode::PartitionOverwrite);
        let e = err(&parquet.replace("key = [", "mode = \"merge\"\nkey = ["));
        assert!(
            e.contains("target.mode") && e.contains("partition_overwrite"),
            "{e}"
        );
        let e = err(&GOOD.replace("key = [", "mode = \"partition_overwrite\"\nkey = ["));
        assert!(e.contains("kind = \"parquet\""), "{e}");
    }

    const CDC: &str = r#"
name = "orders_cdc"
[source]
kind = "kafka-debezium"
brokers = "127.0.0.1:9092"
topic = "dbserver1.public.orders"
group_id = "tidemark-orders"
key = ["order_id"]
max_events = 5000
[target]
kind = "delta"
path = "lake/orders"
"#;

    #[test]
    fn change_event_sources_validate_their_keys() {
        let spec = parse(CDC, Path::new("/x/p.toml")).unwrap();
        let cdc = spec.source.cdc.as_ref().unwrap();
        assert_eq!(spec.target.key, vec!["order_id".to_string()]);
        assert_eq!(spec.source.cursor, CDC_POS_COL);
        assert_eq!((cdc.max_events, cdc.topics.len()), (5000, 1));
        assert_eq!(cdc.on_bad_event, OnBadEvent::Fail);
        let e = err(&CDC.replace("brokers = \"127.0.0.1:9092\"\n", ""));
        assert!(
            e.contains("source.brokers") && e.contains("required"),
            "{e}"
        );
        let e = err(&CDC.replace("kind = \"delta\"", "kind = \"parquet\""));
        assert!(e.contains("cannot apply row-level changes"), "{e}");
        let e = err(&format!(
            "{CDC}[transform]\nsql = \"SELECT * FROM batch\"\n"
        ));
        assert!(e.contains("`transform`"), "{e}");
        let e = err(&CDC.replace("max_events = 5000", "lookback = \"1h\""));
        assert!(
            e.contains("source.lookback") && e.contains("never re-read"),
            "{e}"
        );
        let e = err(&CDC.replace("max_events = 5000", "on_bad_event = \"skip\""));
        assert!(e.contains("dead_letter"), "{e}");
        let e = err(&CDC.replace("key = [\"order_id\"]", "types = { x = \"blob\" }"));
        assert!(e.contains("source.key"), "{e}");
        let e = err(&GOOD.replace("lookback = \"6h\"", "max_events = 5"));
        assert!(e.contains("change-event sources"), "{e}");
    }
}
