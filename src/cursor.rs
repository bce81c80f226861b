//! Formatting and parsing of cursor values for people and files (RFC 3339 timestamps in UTC,
//! plain integers), and parsing of durations such as `6h`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tidemark_workflows::cursor::CursorType;

/// Formats a cursor value: RFC 3339 (UTC, microseconds when needed) or the integer.
pub fn format_cursor(value: i64, cursor_type: CursorType) -> String {
    match cursor_type {
        CursorType::Integer => value.to_string(),
        CursorType::Timestamp => match DateTime::<Utc>::from_timestamp_micros(value) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            None => format!("{value}us"),
        },
    }
}

/// Formats an optional cursor value, `-` when absent.
pub fn format_opt(value: Option<i64>, cursor_type: Option<CursorType>) -> String {
    match (value, cursor_type) {
        (Some(v), Some(t)) => format_cursor(v, t),
        (Some(v), None) => v.to_string(),
        _ => "-".to_string(),
    }
}

/// Parses a timestamp: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` (UTC) or a date `YYYY-MM-DD`.
/// Returns microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// Parses a cursor value of a known type.
pub fn parse_cursor(text: &str, cursor_type: CursorType) -> Option<i64> {
    match cursor_type {
        CursorType::Timestamp => parse_timestamp(text),
        CursorType::Integer => text.trim().parse().ok(),
    }
}

/// Parses a duration such as `0s`, `90s`, `30m`, `6h`, `2d`, `1w`, or `1h30m`, in microseconds.
pub fn parse_duration_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            unit = "ms".into();
        }
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        let us_per_unit: i64 = match unit.as_str() {
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "w" => 7 * 86_400_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(us_per_unit)?)?;
    }
    if !digits.is_empty() {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_combinations() {
        assert_eq!(parse_duration_micros("0s"), Some(0));
        assert_eq!(parse_duration_micros("6h"), Some(6 * 3_600_000_000));
        assert_eq!(parse_duration_micros("1h30m"), Some(90 * 60_000_000));
        assert_eq!(parse_duration_micros("250ms"), Some(250_000));
        assert_eq!(parse_duration_micros("6"), None);
        assert_eq!(parse_duration_micros("6x"), None);
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let v = parse_timestamp("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            format_cursor(v, CursorType::Timestamp),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(parse_timestamp("2026-01-01"), Some(v));
        assert_eq!(parse_timestamp("2026-01-01 00:00:00"), Some(v));
        let v2 = parse_timestamp("2026-01-01T02:00:00+02:00").unwrap();
        assert_eq!(v, v2);
    }
}
