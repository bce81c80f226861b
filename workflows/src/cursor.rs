//! Cursor values: the watermark column's value as an `i64` with its type.
//!
//! Timestamps are microseconds since the Unix epoch (UTC); integers are themselves. Keeping a
//! single integer representation makes window arithmetic exact and deterministic.

use serde::{Deserialize, Serialize};

/// The type of a cursor column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorType {
    /// A timestamp or date column; values are microseconds since the epoch, UTC.
    Timestamp,
    /// An integer column (sequence numbers, versions, epoch seconds...).
    Integer,
}

impl CursorType {
    /// The spec / JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CursorType::Timestamp => "timestamp",
            CursorType::Integer => "integer",
        }
    }
}

/// A lookback as written in the spec, before the cursor type is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Lookback {
    /// A duration in microseconds ("6h", "30m", "0s").
    Duration(i64),
    /// An integer distance, for integer cursors.
    Integer(i64),
}

impl Lookback {
    /// The lookback in the cursor's units, or `None` if it does not fit the cursor type.
    /// A zero duration fits either type.
    pub fn in_units_of(self, cursor_type: CursorType) -> Option<i64> {
        match (self, cursor_type) {
            (Lookback::Duration(us), CursorType::Timestamp) => Some(us),
            (Lookback::Duration(0), CursorType::Integer) => Some(0),
            (Lookback::Integer(n), CursorType::Integer) => Some(n),
            _ => None,
        }
    }

    /// Whether the lookback re-reads nothing.
    pub fn is_zero(self) -> bool {
        matches!(self, Lookback::Duration(0) | Lookback::Integer(0))
    }
}
