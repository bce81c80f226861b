//! The `[source]` section: kind, location (files, PostgreSQL query, Kafka topics), cursor,
//! lookback and initial value, and the keys of change-event (CDC) sources.

use super::SpecError;
use super::raw::{RawSource, RawSpec, RawTarget};
use super::resolve::{Paths, conn_of, quote_table, valid_table_name};
use crate::cursor::{parse_cursor, parse_duration_micros};
use std::path::Path;
use tidemark_workflows::cursor::{CursorType, Lookback};
use tidemark_workflows::spec::{
    CDC_POS_COL, CdcSpec, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_ROWS, OnBadEvent,
    OnNullCursor, SourceKind, SourceSpec,
};

/// Validates and resolves `[source]` (and refuses the spec's keys that its kind does not use).
pub(super) fn source_of(
    file: &Path,
    raw: &RawSpec,
    paths: &Paths,
) -> Result<SourceSpec, SpecError> {
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
        Some(cdc_of(file, kind, s, raw)?)
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
            let resolved = paths.resolve(path);
            super::resolve::check_location(file, "source.path", &resolved)?;
            (resolved, None, None)
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
            let resolved = paths.resolve(path);
            (resolved, None, None)
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
    let (max_batch_rows, max_batch_bytes) = budget_of(file, s)?;
    Ok(SourceSpec {
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
        max_batch_rows,
        max_batch_bytes,
    })
}

/// `source.max_batch_rows` and `source.max_batch_bytes`: the batch budget.
fn budget_of(file: &Path, s: &RawSource) -> Result<(u64, u64), SpecError> {
    let rows = match s.max_batch_rows {
        None => DEFAULT_MAX_BATCH_ROWS,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            return Err(SpecError::at(
                file,
                "source.max_batch_rows",
                format!("{n} is not a positive number of rows"),
                "write e.g. max_batch_rows = 2000000 (a bigger window is read in several batches)",
            ));
        }
    };
    let bytes = match &s.max_batch_bytes {
        None => DEFAULT_MAX_BATCH_BYTES,
        Some(v) => match size_bytes(v) {
            Some(n) if n > 0 => n,
            _ => {
                return Err(SpecError::at(
                    file,
                    "source.max_batch_bytes",
                    format!("{v} is not a size"),
                    "write a size such as \"512MiB\", \"2GiB\" or a number of bytes",
                ));
            }
        },
    };
    Ok((rows, bytes))
}

/// A size: a number of bytes, or a number with a unit (`B`, `kB`/`KiB`, `MB`/`MiB`,
/// `GB`/`GiB`, `TB`/`TiB`; case-insensitive, `K`/`M`/`G`/`T` alone are binary).
pub(super) fn size_bytes(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(text) => {
            let t = text.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let number: f64 = number.replace('_', "").parse().ok()?;
            let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" => 1_000,
                "k" | "kib" => 1 << 10,
                "mb" => 1_000_000,
                "m" | "mib" => 1 << 20,
                "gb" => 1_000_000_000,
                "g" | "gib" => 1 << 30,
                "tb" => 1_000_000_000_000,
                "t" | "tib" => 1 << 40,
                _ => return None,
            };
            let bytes = number * factor as f64;
            (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
        }
        _ => None,
    }
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
        ]
        .into_iter()
        .chain(super::kafka::keys_set(s))
        {
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
        security: if kind == SourceKind::KafkaDebezium {
            super::kafka::security_of(file, s)?
        } else {
            Default::default()
        },
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
    ]
    .into_iter()
    .chain(super::kafka::keys_set(s))
    {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{CDC, GOOD, err};
    use super::super::parse;
    use std::path::Path;
    use tidemark_workflows::spec::{CDC_POS_COL, OnBadEvent};

    #[test]
    fn the_batch_budget_has_defaults_and_reads_sizes() {
        use tidemark_workflows::spec::{DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_ROWS};
        let spec = parse(GOOD, Path::new("/x/p.toml")).unwrap();
        assert_eq!(
            (spec.source.max_batch_rows, spec.source.max_batch_bytes),
            (DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_BATCH_BYTES)
        );
        for (text, bytes) in [
            ("\"256MiB\"", 256u64 << 20),
            ("\"1.5 GiB\"", 3 << 29),
            ("\"100kB\"", 100_000),
            ("4096", 4096),
        ] {
            let t = GOOD.replace(
                "lookback = \"6h\"",
                &format!("lookback = \"6h\"\nmax_batch_rows = 10\nmax_batch_bytes = {text}"),
            );
            let spec = parse(&t, Path::new("/x/p.toml")).unwrap();
            assert_eq!(
                (spec.source.max_batch_rows, spec.source.max_batch_bytes),
                (10, bytes)
            );
        }
        let e = err(&GOOD.replace("lookback = \"6h\"", "max_batch_rows = 0"));
        assert!(e.contains("source.max_batch_rows"), "{e}");
        let e = err(&GOOD.replace("lookback = \"6h\"", "max_batch_bytes = \"lots\""));
        assert!(
            e.contains("source.max_batch_bytes") && e.contains("512MiB"),
            "{e}"
        );
        let spec = parse(CDC, Path::new("/x/p.toml")).unwrap();
        assert_eq!(spec.source.max_batch_rows, DEFAULT_MAX_BATCH_ROWS);
    }

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
