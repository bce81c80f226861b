//! The watermark store: one JSON document per pipeline, replaced atomically, never moved
//! backwards except by an explicit reset.
//!
//! The document holds the reference design's fields (pipeline, value, value type, updated_at,
//! row count) plus the run that wrote it (`run_seq`), the Delta version that carries that run's
//! commit, the event-time high mark for late-row detection, and the identity hashes of the
//! rows sitting exactly at the watermark value (append mode's boundary set).

use super::fsio::write_atomic_at;
use crate::cursor::{format_cursor, parse_cursor};
use crate::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tidemark_workflows::cursor::CursorType;

/// A watermark as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Pipeline name.
    pub pipeline: String,
    /// The cursor high mark of committed data (None until a run loads a row).
    pub value: Option<i64>,
    /// Cursor type.
    pub value_type: CursorType,
    /// When it was written (RFC 3339).
    pub updated_at: String,
    /// Rows the run that wrote it committed.
    pub row_count: u64,
    /// The run that wrote it.
    pub run_seq: u64,
    /// Target version carrying that run's commit.
    pub target_version: Option<i64>,
    /// Event-time high mark of committed rows.
    pub event_time_high: Option<i64>,
    /// Identity hashes of committed rows whose cursor equals `value` (append mode).
    pub boundary_hashes: Vec<String>,
    /// Change-event sources: where the next run resumes — Kafka `topic/partition` → next
    /// offset, event file → next byte offset.
    pub positions: std::collections::BTreeMap<String, i64>,
    /// Change-event sources: events consumed so far (numbers arrival positions).
    pub events_seen: u64,
    /// Change-event sources: how changes are ordered (`lsn` or `arrival`), fixed by the first
    /// event.
    pub cdc_order: Option<String>,
}

/// The file format; values are human-readable (RFC 3339 for timestamps).
#[derive(Debug, Serialize, Deserialize)]
struct WatermarkFile {
    pipeline: String,
    value: Option<serde_json::Value>,
    value_type: CursorType,
    updated_at: String,
    row_count: u64,
    run_seq: u64,
    #[serde(default)]
    delta_version: Option<i64>,
    #[serde(default)]
    event_time_high: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    boundary_hashes: Vec<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    positions: std::collections::BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    events_seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cdc_order: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn encode_value(v: i64, t: CursorType) -> serde_json::Value {
    match t {
        CursorType::Integer => serde_json::Value::from(v),
        CursorType::Timestamp => serde_json::Value::from(format_cursor(v, t)),
    }
}

fn decode_value(v: &serde_json::Value, t: CursorType) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => parse_cursor(s, t),
        _ => None,
    }
}

impl Watermark {
    /// A watermark of pipeline `p` for tests: `value` committed by run `run_seq` at version
    /// `run_seq`, no event-time mark, no boundary rows.
    pub fn sample(run_seq: u64, value: i64, value_type: CursorType) -> Self {
        Watermark {
            pipeline: "p".into(),
            value: Some(value),
            value_type,
            updated_at: "2026-01-01T00:00:00Z".into(),
            row_count: 1,
            run_seq,
            target_version: Some(run_seq as i64),
            event_time_high: None,
            boundary_hashes: Vec::new(),
            positions: Default::default(),
            events_seen: 0,
            cdc_order: None,
        }
    }

    /// Serialises to the JSON document.
    pub fn to_json(&self) -> String {
        let file = WatermarkFile {
            pipeline: self.pipeline.clone(),
            value: self.value.map(|v| encode_value(v, self.value_type)),
            value_type: self.value_type,
            updated_at: self.updated_at.clone(),
            row_count: self.row_count,
            run_seq: self.run_seq,
            delta_version: self.target_version,
            event_time_high: self
                .event_time_high
                .map(|v| format_cursor(v, CursorType::Timestamp)),
            boundary_hashes: self.boundary_hashes.clone(),
            positions: self.positions.clone(),
            events_seen: self.events_seen,
            cdc_order: self.cdc_order.clone(),
        };
        serde_json::to_string_pretty(&file).expect("watermark serialises")
    }

    /// Parses the JSON document.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let f: WatermarkFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let value = match &f.value {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(decode_value(v, f.value_type).ok_or_else(|| format!("bad value {v}"))?),
        };
        let event_time_high = match &f.event_time_high {
            None => None,
            Some(s) => Some(
                parse_cursor(s, CursorType::Timestamp)
                    .ok_or_else(|| format!("bad event_time_high {s}"))?,
            ),
        };
        Ok(Watermark {
            pipeline: f.pipeline,
            value,
            value_type: f.value_type,
            updated_at: f.updated_at,
            row_count: f.row_count,
            run_seq: f.run_seq,
            target_version: f.delta_version,
            event_time_high,
            boundary_hashes: f.boundary_hashes,
            positions: f.positions,
            events_seen: f.events_seen,
            cdc_order: f.cdc_order,
        })
    }
}

/// Reads the stored watermark, `None` if the pipeline never committed.
pub fn read(path: &Path) -> Result<Option<Watermark>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Watermark::from_json(&text)
            .map(Some)
            .map_err(|e| EngineError::Watermark(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io(format!("read {}", path.display()), e)),
    }
}

/// Outcome of [`advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The document was written.
    Written,
    /// The store already holds this run (or a later one): nothing to do.
    AlreadyCurrent,
}

/// Installs `next` if it belongs to a later run than the stored one. Refuses a document whose
/// value is below the stored value: the watermark only moves backwards through a reset.
pub fn advance(path: &Path, next: &Watermark) -> Result<Advance> {
    if check_advance(read(path)?.as_ref(), next)? == Advance::AlreadyCurrent {
        return Ok(Advance::AlreadyCurrent);
    }
    write_atomic_at(
        path,
        next.to_json().as_bytes(),
        Some("watermark_temp_written"),
    )?;
    Ok(Advance::Written)
}

/// The rule of [`advance`], for every store: `AlreadyCurrent` when `current` holds this run or
/// a later one, `Written` when `next` may replace it, an error when `next` would move the
/// value backwards or clear it.
pub fn check_advance(current: Option<&Watermark>, next: &Watermark) -> Result<Advance> {
    let Some(current) = current else {
        return Ok(Advance::Written);
    };
    if current.run_seq >= next.run_seq {
        return Ok(Advance::AlreadyCurrent);
    }
    if let (Some(cur), Some(new)) = (current.value, next.value)
        && new < cur
    {
        return Err(EngineError::Watermark(format!(
            "refusing to move the watermark of {} backwards from {} to {} (run {}); use a reset",
            next.pipeline,
            format_cursor(cur, current.value_type),
            format_cursor(new, next.value_type),
            next.run_seq
        )));
    }
    if current.value.is_some() && next.value.is_none() {
        return Err(EngineError::Watermark(format!(
            "refusing to clear the watermark of {} (run {})",
            next.pipeline, next.run_seq
        )));
    }
    Ok(Advance::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(run_seq: u64, value: i64) -> Watermark {
        Watermark {
            boundary_hashes: vec!["ab".into()],
            ..Watermark::sample(run_seq, value, CursorType::Timestamp)
        }
    }

    #[test]
    fn round_trips_and_is_readable() {
        let w = wm(3, 1_767_225_600_000_000);
        let json = w.to_json();
        assert!(json.contains("\"2026-01-01T00:00:00Z\""), "{json}");
        assert_eq!(Watermark::from_json(&json).unwrap(), w);
    }

    #[test]
    fn advance_is_monotonic_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.json");
        assert_eq!(advance(&p, &wm(1, 10)).unwrap(), Advance::Written);
        assert_eq!(advance(&p, &wm(1, 10)).unwrap(), Advance::AlreadyCurrent);
        assert!(matches!(
            advance(&p, &wm(2, 5)),
            Err(EngineError::Watermark(_))
        ));
        assert_eq!(read(&p).unwrap().unwrap().value, Some(10));
        assert_eq!(advance(&p, &wm(2, 10)).unwrap(), Advance::Written);
    }
}
