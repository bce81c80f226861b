//! Column types of change events and the conversion of Debezium's JSON encodings into typed
//! Polars columns.
//!
//! A column's type comes, in this order, from the spec's `[source.types]`, from the envelope's
//! schema wrapper (Kafka Connect types and Debezium logical names), or from the JSON values
//! themselves (integers, floats, strings, booleans; anything else as JSON text).

use base64::Engine;
use polars::prelude::*;
use serde_json::Value;

/// How a column's values are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 64-bit integer.
    Int64,
    /// 32-bit integer (Connect int8/int16/int32).
    Int32,
    /// Double.
    Float64,
    /// Text (also uuid, json, enums, and anything without a better mapping).
    String,
    /// Boolean.
    Bool,
    /// Days since the epoch (`io.debezium.time.Date`) or `YYYY-MM-DD`.
    Date,
    /// Timestamp without time zone; integers are in the given unit
    /// (`MicroTimestamp` µs, `Timestamp` ms, `NanoTimestamp` ns), strings are parsed.
    Timestamp(IntUnit),
    /// Timestamp with time zone (`io.debezium.time.ZonedTimestamp`, ISO-8601 text), kept in UTC.
    TimestampTz,
    /// Fixed-point decimal: `decimal.handling.mode` precise (base64 of the unscaled
    /// big-endian two's complement), string, or double.
    Decimal(usize, usize),
    /// No value seen yet (every value null).
    Null,
}

/// The unit of a timestamp written as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntUnit {
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl ColumnType {
    /// Parses a type as written in `[source.types]`.
    pub fn parse(text: &str) -> Option<ColumnType> {
        let t = text.trim().to_ascii_lowercase();
        Some(match t.as_str() {
            "int64" | "bigint" | "int8" => ColumnType::Int64,
            "int32" | "integer" | "int" | "int4" | "smallint" | "int2" | "int16" => {
                ColumnType::Int32
            }
            "float64" | "double" | "float" | "float8" | "real" | "float4" => ColumnType::Float64,
            "string" | "text" | "varchar" | "uuid" | "json" | "jsonb" => ColumnType::String,
            "bool" | "boolean" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp_us" => ColumnType::Timestamp(IntUnit::Micros),
            "timestamp_ms" => ColumnType::Timestamp(IntUnit::Millis),
            "timestamp_ns" => ColumnType::Timestamp(IntUnit::Nanos),
            "timestamptz" => ColumnType::TimestampTz,
            _ => {
                let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                let (p, s): (usize, usize) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
                if p == 0 || p > 38 || s > p {
                    return None;
                }
                ColumnType::Decimal(p, s)
            }
        })
    }

    /// The type of a Kafka Connect schema field (`type`, logical `name`, `parameters`).
    pub fn of_connect_field(field: &Value) -> ColumnType {
        let ty = field.get("type").and_then(Value::as_str).unwrap_or("");
        let name = field.get("name").and_then(Value::as_str).unwrap_or("");
        match name {
            "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
                return ColumnType::Date;
            }
            "io.debezium.time.MicroTimestamp" => return ColumnType::Timestamp(IntUnit::Micros),
            "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
                return ColumnType::Timestamp(IntUnit::Millis);
            }
            "io.debezium.time.NanoTimestamp" => return ColumnType::Timestamp(IntUnit::Nanos),
            "io.debezium.time.ZonedTimestamp" => return ColumnType::TimestampTz,
            "org.apache.kafka.connect.data.Decimal" => {
                let params = field.get("parameters");
                let param = |k: &str| {
                    params.and_then(|p| p.get(k)).and_then(|v| match v {
                        Value::String(s) => s.parse::<usize>().ok(),
                        Value::Number(n) => n.as_u64().map(|n| n as usize),
                        _ => None,
                    })
                };
                let scale = param("scale").unwrap_or(0);
                let precision = param("connect.decimal.precision")
                    .unwrap_or(38)
                    .clamp(1, 38);
                return ColumnType::Decimal(precision.max(scale), scale);
            }
            _ => {}
        }
        match ty {
            "int8" | "int16" | "int32" => ColumnType::Int32,
            "int64" => ColumnType::Int64,
            "float" | "float32" | "double" | "float64" => ColumnType::Float64,
            "boolean" => ColumnType::Bool,
            _ => ColumnType::String,
        }
    }

    /// The type a JSON value suggests (for envelopes without a schema).
    pub fn of_value(v: &Value) -> ColumnType {
        match v {
            Value::Null => ColumnType::Null,
            Value::Bool(_) => ColumnType::Bool,
            Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int64,
            Value::Number(_) => ColumnType::Float64,
            _ => ColumnType::String,
        }
    }

    /// The common type of two inferred types (integers widen to floats; any other
    /// disagreement is text).
    pub fn unify(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Null, x) | (x, Null) => x,
            (Int64 | Int32, Float64) | (Float64, Int64 | Int32) => Float64,
            (Int64, Int32) | (Int32, Int64) => Int64,
            _ => String,
        }
    }
}

/// Builds a typed column named `name` from JSON values (`None`: the field was absent).
/// A value that does not fit the type is an error naming the column and the value.
pub fn column(name: &str, ty: ColumnType, values: &[Option<&Value>]) -> Result<Column, String> {
    let bad = |v: &Value| format!("column `{name}`: {v} is not a valid {ty:?}");
    let series = match ty {
        ColumnType::Null => Series::full_null(name.into(), values.len(), &DataType::Null),
        ColumnType::Int64 | ColumnType::Int32 => {
            let mut out: Vec<Option<i64>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(v) => Some(as_i64(v).ok_or_else(|| bad(v))?),
                });
            }
            let s = Series::new(name.into(), out);
            if ty == ColumnType::Int32 {
                s.cast(&DataType::Int32)
                    .map_err(|e| format!("column `{name}`: {e}"))?
            } else {
                s
            }
        }
        ColumnType::Float64 => {
            let mut out: Vec<Option<f64>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(Value::String(s)) => Some(
                        s.trim()
                            .parse()
                            .map_err(|_| bad(&Value::String(s.clone())))?,
                    ),
                    Some(v) => return Err(bad(v)),
                });
            }
            Series::new(name.into(), out)
        }
        ColumnType::Bool => {
            let mut out: Vec<Option<bool>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(Value::String(s)) if s == "true" || s == "false" => Some(s == "true"),
                    Some(v) => return Err(bad(v)),
                });
            }
            Series::new(name.into(), out)
        }
        ColumnType::String => {
            let out: Vec<Option<String>> = values
                .iter()
                .map(|v| match present(v) {
                    None => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                })
                .collect();
            Series::new(name.into(), out)
        }
        ColumnType::Date => {
            let mut out: Vec<Option<i32>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(Value::Number(n)) => {
                        Some(n.as_i64().ok_or_else(|| bad(&Value::Number(n.clone())))? as i32)
                    }
                    Some(Value::String(s)) => {
                        let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                            .map_err(|_| bad(&Value::String(s.clone())))?;
                        Some((d - chrono::NaiveDate::default()).num_days() as i32)
                    }
                    Some(v) => return Err(bad(v)),
                });
            }
            Series::new(name.into(), out)
                .cast(&DataType::Date)
                .map_err(|e| format!("column `{name}`: {e}"))?
        }
        ColumnType::Timestamp(unit) => {
            let mut out: Vec<Option<i64>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(Value::Number(n)) => {
                        let i = n.as_i64().ok_or_else(|| bad(&Value::Number(n.clone())))?;
                        Some(match unit {
                            IntUnit::Millis => i.saturating_mul(1000),
                            IntUnit::Micros => i,
                            IntUnit::Nanos => i.div_euclid(1000),
                        })
                    }
                    Some(Value::String(s)) => Some(
                        crate::cursor::parse_timestamp(s)
                            .ok_or_else(|| bad(&Value::String(s.clone())))?,
                    ),
                    Some(v) => return Err(bad(v)),
                });
            }
            Series::new(name.into(), out)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .map_err(|e| format!("column `{name}`: {e}"))?
        }
        ColumnType::TimestampTz => {
            let mut out: Vec<Option<i64>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(Value::String(s)) => Some(
                        crate::cursor::parse_timestamp(s)
                            .ok_or_else(|| bad(&Value::String(s.clone())))?,
                    ),
                    Some(Value::Number(n)) => n.as_i64(),
                    Some(v) => return Err(bad(v)),
                });
            }
            Series::new(name.into(), out)
                .cast(&DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(polars::prelude::TimeZone::UTC),
                ))
                .map_err(|e| format!("column `{name}`: {e}"))?
        }
        ColumnType::Decimal(precision, scale) => {
            let mut out: Vec<Option<i128>> = Vec::with_capacity(values.len());
            for v in values.iter() {
                out.push(match present(v) {
                    None => None,
                    Some(v) => Some(decimal_unscaled(v, scale).ok_or_else(|| bad(v))?),
                });
            }
            let ca: Int128Chunked = out.into_iter().collect();
            ca.with_name(name.into())
                .into_decimal(precision, scale)
                .map_err(|e| format!("column `{name}`: {e}"))?
                .into_series()
        }
    };
    Ok(series.into())
}

fn present<'v>(v: &Option<&'v Value>) -> Option<&'v Value> {
    v.filter(|v| !v.is_null())
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

/// The unscaled value of a decimal at `scale`: from Debezium's precise encoding (base64 of
/// the big-endian two's-complement unscaled integer), a decimal string, or a JSON number.
fn decimal_unscaled(v: &Value, scale: usize) -> Option<i128> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if let Some(n) = parse_decimal_text(s, scale) {
                return Some(n);
            }
            let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
            if bytes.is_empty() || bytes.len() > 16 {
                return None;
            }
            let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
            let mut buf = [fill; 16];
            buf[16 - bytes.len()..].copy_from_slice(&bytes);
            Some(i128::from_be_bytes(buf))
        }
        Value::Number(n) => match n.as_i64() {
            Some(i) => (i as i128).checked_mul(10i128.checked_pow(scale as u32)?),
            None => parse_decimal_text(&n.to_string(), scale),
        },
        _ => None,
    }
}

/// Parses `-12.345` (or `1e3`-free plain text) into an unscaled integer at `scale`,
/// rounding half away from zero when the text has more digits.
fn parse_decimal_text(s: &str, scale: usize) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut digits = String::with_capacity(int.len() + scale);
    digits.push_str(if int.is_empty() { "0" } else { int });
    let kept: String = frac.chars().take(scale).collect();
    digits.push_str(&kept);
    digits.extend(std::iter::repeat_n('0', scale - kept.len()));
    let mut n: i128 = digits.parse().ok()?;
    if frac.len() > scale && frac.as_bytes()[scale] >= b'5' {
        n = n.checked_add(1)?;
    }
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_decode_from_every_debezium_mode() {
        // 12.34 at scale 2 = 1234 = 0x04D2 → base64 "BNI=".
        assert_eq!(decimal_unscaled(&json!("BNI="), 2), Some(1234));
        assert_eq!(decimal_unscaled(&json!("12.34"), 2), Some(1234));
        assert_eq!(decimal_unscaled(&json!("-0.5"), 2), Some(-50));
        assert_eq!(decimal_unscaled(&json!(7), 2), Some(700));
        assert_eq!(decimal_unscaled(&json!(12.345), 2), Some(1235));
        // -1 as one byte 0xFF → "/w==".
        assert_eq!(decimal_unscaled(&json!("/w=="), 0), Some(-1));
    }

    #[test]
    fn connect_schema_fields_map_to_types() {
        let f = json!({"type": "int64", "name": "io.debezium.time.MicroTimestamp"});
        assert_eq!(
            ColumnType::of_connect_field(&f),
            ColumnType::Timestamp(IntUnit::Micros)
        );
        let f = json!({"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
                       "parameters": {"scale": "2", "connect.decimal.precision": "10"}});
        assert_eq!(ColumnType::of_connect_field(&f), ColumnType::Decimal(10, 2));
        assert_eq!(
            ColumnType::parse("decimal(12, 3)"),
            Some(ColumnType::Decimal(12, 3))
        );
        assert_eq!(ColumnType::parse("decimal(2,3)"), None);
    }

    #[test]
    fn timestamps_and_dates_decode_to_microseconds_and_days() {
        let vals = [json!(1_000_000), json!("2026-01-01T00:00:01Z")];
        let refs: Vec<Option<&Value>> = vals.iter().map(Some).collect();
        let c = column("t", ColumnType::Timestamp(IntUnit::Micros), &refs).unwrap();
        let ints = c.cast(&DataType::Int64).unwrap();
        assert_eq!(ints.i64().unwrap().get(0), Some(1_000_000));
        assert_eq!(ints.i64().unwrap().get(1), Some(1_767_225_601_000_000));
        let d = column(
            "d",
            ColumnType::Date,
            &[Some(&json!(20_000)), Some(&json!("1970-01-02")), None],
        )
        .unwrap();
        let days = d.cast(&DataType::Int32).unwrap();
        assert_eq!(days.i32().unwrap().get(1), Some(1));
        assert_eq!(days.null_count(), 1);
        assert!(column("n", ColumnType::Int64, &[Some(&json!("x"))]).is_err());
    }
}
