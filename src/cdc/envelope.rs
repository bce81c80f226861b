//! The Debezium change-event envelope: parsing one JSON document (with or without the
//! `{"schema", "payload"}` wrapper) into an [`Event`], or saying precisely why it is bad.

use serde_json::{Map, Value};

/// A change operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`: insert.
    Create,
    /// `u`: update.
    Update,
    /// `d`: delete.
    Delete,
    /// `r`: a snapshot read.
    Read,
    /// `t`: truncate of the whole table.
    Truncate,
}

/// One parsed change event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The operation.
    pub op: Op,
    /// The row image the target should hold (`after` for c/u/r, `before` for d; empty for t).
    pub row: Map<String, Value>,
    /// `source.lsn`, when the connector gives one (PostgreSQL).
    pub lsn: Option<i64>,
    /// `ts_ms` of the envelope (when the connector processed the change), else `source.ts_ms`.
    pub ts_ms: Option<i64>,
    /// The `after` (or `before`) field list of the schema wrapper, when present.
    pub schema_fields: Option<Value>,
}

/// What one document holds.
#[derive(Debug)]
pub enum Parsed {
    /// A change.
    Event(Event),
    /// A tombstone (null value after a delete, for log compaction): skipped.
    Tombstone,
}

/// Parses one document. `key` are the key columns each row image must carry.
pub fn parse(bytes: &[u8], key: &[String]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(Parsed::Tombstone);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    let Value::Object(mut top) = v else {
        return Err("not a JSON object".into());
    };
    // With the schema wrapper, the envelope is `payload` (null: a tombstone).
    let mut schema = None;
    let mut env = if top.contains_key("payload") && top.contains_key("schema") {
        schema = top.remove("schema");
        match top.remove("payload") {
            Some(Value::Object(p)) => p,
            Some(Value::Null) | None => return Ok(Parsed::Tombstone),
            Some(_) => return Err("`payload` is not an object".into()),
        }
    } else {
        top
    };
    let op = match env.get("op").and_then(Value::as_str) {
        Some("c") => Op::Create,
        Some("u") => Op::Update,
        Some("d") => Op::Delete,
        Some("r") => Op::Read,
        Some("t") => Op::Truncate,
        Some(other) => return Err(format!("unknown op {other:?}")),
        None => return Err("no `op` field".into()),
    };
    let source = env.remove("source");
    let lsn = source
        .as_ref()
        .and_then(|s| s.get("lsn"))
        .and_then(Value::as_i64);
    let ts_ms = env.get("ts_ms").and_then(Value::as_i64).or_else(|| {
        source
            .as_ref()
            .and_then(|s| s.get("ts_ms"))
            .and_then(Value::as_i64)
    });
    let image = match op {
        Op::Truncate => None,
        Op::Delete => Some("before"),
        _ => Some("after"),
    };
    let row = match image {
        None => Map::new(),
        Some(field) => match env.remove(field) {
            Some(Value::Object(row)) => row,
            Some(Value::Null) | None => {
                return Err(format!(
                    "op {:?} without a `{field}` row image",
                    op_char(op)
                ));
            }
            Some(_) => return Err(format!("`{field}` is not an object")),
        },
    };
    if op != Op::Truncate {
        for k in key {
            match row.get(k) {
                None | Some(Value::Null) => {
                    return Err(format!("key column `{k}` is missing from the row image"));
                }
                Some(_) => {}
            }
        }
    }
    let schema_fields = match (schema, image) {
        (Some(s), Some(field)) => s
            .get("fields")
            .and_then(Value::as_array)
            .and_then(|fs| {
                fs.iter()
                    .find(|f| f.get("field").and_then(Value::as_str) == Some(field))
            })
            .and_then(|f| f.get("fields"))
            .cloned(),
        _ => None,
    };
    Ok(Parsed::Event(Event {
        op,
        row,
        lsn,
        ts_ms,
        schema_fields,
    }))
}

/// The envelope's letter of an op.
pub fn op_char(op: Op) -> &'static str {
    match op {
        Op::Create => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Read => "r",
        Op::Truncate => "t",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<String> {
        vec!["id".into()]
    }

    fn event(text: &str) -> Event {
        match parse(text.as_bytes(), &key()).unwrap() {
            Parsed::Event(e) => e,
            Parsed::Tombstone => panic!("tombstone"),
        }
    }

    #[test]
    fn bare_and_wrapped_envelopes_parse_alike() {
        let bare = event(
            r#"{"op":"u","before":null,"after":{"id":1,"v":"x"},"source":{"lsn":42},"ts_ms":7}"#,
        );
        assert_eq!(
            (bare.op, bare.lsn, bare.ts_ms),
            (Op::Update, Some(42), Some(7))
        );
        let wrapped = event(
            r#"{"schema":{"type":"struct","fields":[{"field":"after","fields":[{"field":"id","type":"int64"}]}]},
                "payload":{"op":"c","after":{"id":1,"v":"x"},"source":{"ts_ms":5}}}"#,
        );
        assert_eq!(wrapped.op, Op::Create);
        assert_eq!(wrapped.ts_ms, Some(5));
        assert!(wrapped.schema_fields.is_some());
        assert_eq!(bare.row, wrapped.row);
    }

    #[test]
    fn deletes_use_before_and_tombstones_are_skipped() {
        let d = event(r#"{"op":"d","before":{"id":3},"after":null}"#);
        assert_eq!((d.op, d.row.get("id")), (Op::Delete, Some(&Value::from(3))));
        assert!(matches!(parse(b"null", &key()), Ok(Parsed::Tombstone)));
        assert!(matches!(
            parse(br#"{"schema":{},"payload":null}"#, &key()),
            Ok(Parsed::Tombstone)
        ));
        assert_eq!(event(r#"{"op":"t","source":{"lsn":9}}"#).op, Op::Truncate);
    }

    #[test]
    fn bad_events_say_why() {
        let err = |t: &str| parse(t.as_bytes(), &key()).unwrap_err();
        assert!(err("{nope").contains("bad JSON"));
        assert!(err(r#"{"op":"x","after":{"id":1}}"#).contains("unknown op \"x\""));
        assert!(err(r#"{"op":"c","after":{"v":1}}"#).contains("key column `id`"));
        assert!(err(r#"{"op":"u","after":null}"#).contains("without a `after`"));
        assert!(err(r#"{"after":{"id":1}}"#).contains("no `op`"));
    }
}
