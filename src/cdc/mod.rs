//! Change data capture: Debezium change events, from `*.jsonl` files or Kafka, reduced to the
//! last change per key and applied by the targets in one commit with the source positions.
//!
//! A run reads at most `max_events` events past the positions its watermark stores (file byte
//! offsets, Kafka partition offsets), orders the changes of each key by their position
//! (`source.lsn` when the stream carries one, else arrival order), keeps the last one, and
//! writes one batch: the row image of each surviving change plus `_tidemark_op` (`u`/`d`) and
//! `_tidemark_pos`. The targets apply a change only when its position is newer than the one
//! the row holds, so replays and duplicate deliveries are no-ops. The positions travel inside
//! the watermark document that the target commit embeds, so they are committed with the data.

pub mod decode;
pub mod envelope;
pub mod jsonl;
pub mod kafka;
pub mod kafka_conn;
pub mod sim;

use crate::batch::{RunContext, schema_of, write_next_watermark};
use crate::error::{EngineError, Result};
use crate::state::watermark::Watermark;
use decode::ColumnType;
use envelope::{Op, Parsed};
use polars::prelude::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::payloads::{CdcStats, ProcessManifest};
use tidemark_workflows::spec::{CDC_DELETED_COL, CDC_OP_COL, CDC_POS_COL, CdcSpec, OnBadEvent};

/// Where an event was read: a file and line, or a topic partition and offset.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The file, or `topic/partition`.
    pub source: &'a str,
    /// The line number or offset.
    pub at: i64,
    /// `line` or `offset`.
    pub unit: &'static str,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.source, self.unit, self.at)
    }
}

/// What a reader consumed.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// The positions after the consumed events (every source's, consumed or not).
    pub positions: BTreeMap<String, i64>,
    /// Files or partitions considered.
    pub sources: u64,
    /// Events handed over (tombstones and bad events included, blank lines not).
    pub events: u64,
    /// The read stopped at the batch's limits with events left: the run goes on with another
    /// batch.
    pub limited: bool,
}

/// How much one batch of change events may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events: `max_events` and `max_batch_rows`, whichever is smaller.
    pub events: u64,
    /// Raw event bytes (`max_batch_bytes`).
    pub bytes: u64,
}

impl Limits {
    /// The limits of a change-event source's batch.
    pub fn of(spec: &tidemark_workflows::spec::PipelineSpec, cdc: &CdcSpec) -> Limits {
        Limits {
            events: cdc.max_events.min(spec.source.max_batch_rows).max(1),
            bytes: spec.source.max_batch_bytes.max(1),
        }
    }

    /// Whether a batch that read `events` events of `bytes` bytes is full.
    pub fn reached(&self, events: u64, bytes: u64) -> bool {
        events >= self.events || bytes >= self.bytes
    }
}

/// How a pipeline orders the changes of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By `source.lsn` (PostgreSQL connectors): duplicates re-emitted after a connector
    /// restart carry their original position.
    Lsn,
    /// By arrival: file order then line, or partition offset order (a key's changes share a
    /// partition).
    Arrival,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::Lsn => "lsn",
            Order::Arrival => "arrival",
        }
    }

    fn parse(s: &str) -> Option<Order> {
        match s {
            "lsn" => Some(Order::Lsn),
            "arrival" => Some(Order::Arrival),
            _ => None,
        }
    }
}

struct Kept {
    delete: bool,
    row: Map<String, Value>,
    pos: i64,
    ts_ms: Option<i64>,
}

/// A malformed event set aside.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadEvent {
    /// File or `topic/partition`.
    pub source: String,
    /// Line or offset.
    pub at: i64,
    /// `line` or `offset`.
    pub unit: &'static str,
    /// Why it was refused.
    pub reason: String,
    /// The event as read (lossy UTF-8, at most 64 KiB).
    pub event: String,
}

/// Accumulates the events of one run into the last change per key.
pub struct Collector<'a> {
    cdc: &'a CdcSpec,
    order: Option<Order>,
    arrival: u64,
    by_key: HashMap<String, usize>,
    kept: Vec<Kept>,
    /// Counts so far.
    pub stats: CdcStats,
    applied: u64,
    ts_max_ms: Option<i64>,
    schema_types: HashMap<String, ColumnType>,
    schema_order: Vec<String>,
    /// Events set aside (dead_letter policy).
    pub bad: Vec<BadEvent>,
    key_buf: String,
    /// The event each row column first appeared in (`file line 12`), for schema errors.
    first_seen: HashMap<String, String>,
}

impl<'a> Collector<'a> {
    /// A collector continuing from the stored watermark (its order and arrival count).
    pub fn new(cdc: &'a CdcSpec, store: Option<&Watermark>) -> Self {
        Collector {
            cdc,
            order: store
                .and_then(|w| w.cdc_order.as_deref())
                .and_then(Order::parse),
            arrival: store.map_or(0, |w| w.events_seen),
            by_key: HashMap::new(),
            kept: Vec::new(),
            stats: CdcStats::default(),
            applied: 0,
            ts_max_ms: None,
            schema_types: HashMap::new(),
            schema_order: Vec::new(),
            bad: Vec::new(),
            key_buf: String::new(),
            first_seen: HashMap::new(),
        }
    }

    /// Takes one event (in arrival order).
    pub fn push(&mut self, origin: Origin<'_>, bytes: &[u8]) -> Result<()> {
        self.arrival += 1;
        self.stats.events += 1;
        let event = match envelope::parse(bytes, &self.cdc.key) {
            Ok(Parsed::Tombstone) => {
                self.stats.tombstones += 1;
                return Ok(());
            }
            Ok(Parsed::Event(e)) => e,
            Err(reason) => return self.refuse(origin, bytes, reason),
        };
        let order = *self.order.get_or_insert(if event.lsn.is_some() {
            Order::Lsn
        } else {
            Order::Arrival
        });
        let pos = match (order, event.lsn) {
            (Order::Lsn, Some(lsn)) => lsn,
            (Order::Lsn, None) => {
                return self.refuse(
                    origin,
                    bytes,
                    "no `source.lsn`, but this pipeline orders changes by source.lsn (its first event carried one)".into(),
                );
            }
            (Order::Arrival, _) => self.arrival as i64,
        };
        if let Some(ts) = event.ts_ms {
            self.ts_max_ms = Some(self.ts_max_ms.map_or(ts, |m| m.max(ts)));
        }
        if let Some(Value::Array(fields)) = &event.schema_fields {
            for f in fields {
                if let Some(name) = f.get("field").and_then(Value::as_str)
                    && !self.schema_types.contains_key(name)
                {
                    self.schema_types
                        .insert(name.to_string(), ColumnType::of_connect_field(f));
                    self.schema_order.push(name.to_string());
                }
            }
        }
        self.applied += 1;
        if event.op == Op::Truncate {
            // Everything before the truncate is gone; the target is emptied in this commit.
            self.by_key.clear();
            self.kept.clear();
            self.stats.truncate = true;
            return Ok(());
        }
        self.key_buf.clear();
        for k in &self.cdc.key {
            let v = &event.row[k];
            match v {
                Value::String(s) => self.key_buf.push_str(s),
                other => self.key_buf.push_str(&other.to_string()),
            }
            self.key_buf.push('\u{1f}');
        }
        if event.op != Op::Delete {
            for name in event.row.keys() {
                if !self.first_seen.contains_key(name) {
                    self.first_seen
                        .insert(name.clone(), format!("the change event at {origin}"));
                }
            }
        }
        let kept = Kept {
            delete: event.op == Op::Delete,
            row: event.row,
            pos,
            ts_ms: event.ts_ms,
        };
        match self.by_key.get(self.key_buf.as_str()) {
            // Ties go to the later arrival (the same position delivered again).
            Some(&i) if self.kept[i].pos <= pos => self.kept[i] = kept,
            Some(_) => {} // an older change than the one already kept
            None => {
                self.by_key.insert(self.key_buf.clone(), self.kept.len());
                self.kept.push(kept);
            }
        }
        Ok(())
    }

    fn refuse(&mut self, origin: Origin<'_>, bytes: &[u8], reason: String) -> Result<()> {
        if self.cdc.on_bad_event == OnBadEvent::Fail {
            return Err(EngineError::BadEvent {
                at: origin.to_string(),
                reason,
            });
        }
        self.stats.bad_events += 1;
        let keep = bytes.len().min(64 * 1024);
        self.bad.push(BadEvent {
            source: origin.source.to_string(),
            at: origin.at,
            unit: origin.unit,
            reason,
            event: String::from_utf8_lossy(&bytes[..keep]).into_owned(),
        });
        Ok(())
    }

    /// Changes superseded within the batch (by a later change of the same key, or a truncate).
    pub fn superseded(&self) -> u64 {
        self.applied - self.kept.len() as u64 - u64::from(self.stats.truncate)
    }

    /// The order in force (None: no event yet).
    pub fn order(&self) -> Option<Order> {
        self.order
    }

    /// The greatest `ts_ms` seen.
    pub fn ts_max_ms(&self) -> Option<i64> {
        self.ts_max_ms
    }

    /// The reduced batch: key columns, the row images' other columns, `_tidemark_pos`,
    /// `_tidemark_op` and, for soft deletes, `_tidemark_deleted_at`.
    pub fn into_frame(mut self) -> Result<(DataFrame, CdcStats, ColumnOrigins)> {
        self.stats.upserts = self.kept.iter().filter(|k| !k.delete).count() as u64;
        self.stats.deletes = self.kept.len() as u64 - self.stats.upserts;
        let mut names: Vec<String> = self.cdc.key.clone();
        for n in &self.schema_order {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut rest: Vec<&String> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = names.iter().map(|s| s.as_str()).collect();
        for k in &self.kept {
            for n in k.row.keys() {
                if seen.insert(n.as_str()) {
                    rest.push(n);
                }
            }
        }
        rest.sort();
        let rest: Vec<String> = rest.into_iter().cloned().collect();
        names.extend(rest);
        let mut columns = Vec::with_capacity(names.len() + 3);
        for name in &names {
            if name.starts_with("_tidemark_") {
                return Err(EngineError::Schema(format!(
                    "the captured table has a column `{name}`: names starting with _tidemark_ are tidemark's own"
                )));
            }
            let values: Vec<Option<&Value>> = self.kept.iter().map(|k| k.row.get(name)).collect();
            let ty = match self
                .cdc
                .types
                .get(name)
                .and_then(|t| ColumnType::parse(t))
                .or_else(|| self.schema_types.get(name).copied())
            {
                Some(t) => t,
                None => values
                    .iter()
                    .flatten()
                    .fold(ColumnType::Null, |t, v| t.unify(ColumnType::of_value(v))),
            };
            // A column null in every event of the batch is typed as text; the targets cast
            // it to the column's type in the table.
            let ty = if ty == ColumnType::Null {
                ColumnType::String
            } else {
                ty
            };
            columns.push(decode::column(name, ty, &values).map_err(EngineError::Schema)?);
        }
        let pos: Vec<i64> = self.kept.iter().map(|k| k.pos).collect();
        columns.push(Column::new(CDC_POS_COL.into(), pos));
        let ops: Vec<&str> = self
            .kept
            .iter()
            .map(|k| if k.delete { "d" } else { "u" })
            .collect();
        columns.push(Column::new(CDC_OP_COL.into(), ops));
        if self.cdc.soft_delete {
            let now_us = chrono::Utc::now().timestamp_micros();
            let at: Vec<Option<i64>> = self
                .kept
                .iter()
                .map(|k| k.delete.then(|| k.ts_ms.map_or(now_us, |ms| ms * 1000)))
                .collect();
            columns.push(
                Series::new(CDC_DELETED_COL.into(), at)
                    .cast(&DataType::Datetime(
                        TimeUnit::Microseconds,
                        Some(polars::prelude::TimeZone::UTC),
                    ))?
                    .into(),
            );
        }
        let origins = self.first_seen.into_iter().collect();
        Ok((DataFrame::new_infer_height(columns)?, self.stats, origins))
    }
}

/// Where each column of a batch first appeared: (column, the event in words).
pub type ColumnOrigins = Vec<(String, String)>;

/// Reads a change-event source: hands each event to the callback, from `positions` on, until
/// the batch's limits.
pub type ReadEvents<'r> = &'r dyn Fn(
    &CdcSpec,
    &BTreeMap<String, i64>,
    Limits,
    &mut dyn FnMut(Origin<'_>, &[u8]) -> Result<()>,
) -> Result<ReadOutcome>;

/// `process` for a change-event source: read (with `read`), reduce, write the batch, the
/// dead-letter file and the watermark document the run publishes.
pub fn build_batch(run: &RunContext<'_>, read: ReadEvents<'_>) -> Result<ProcessManifest> {
    let RunContext {
        spec,
        store,
        run_seq,
        ..
    } = *run;
    let cdc =
        spec.source.cdc.as_ref().ok_or_else(|| {
            EngineError::Spec("a change-event source needs its [source] keys".into())
        })?;
    let empty = BTreeMap::new();
    let positions = store.map_or(&empty, |w| &w.positions);
    let mut collector = Collector::new(cdc, store);
    let outcome = {
        let mut each = |o: Origin<'_>, b: &[u8]| collector.push(o, b);
        read(cdc, positions, Limits::of(spec, cdc), &mut each)?
    };
    let dead_letter = if collector.bad.is_empty() {
        None
    } else {
        let mut text = String::new();
        for b in &collector.bad {
            text.push_str(&serde_json::to_string(b).expect("serialisable"));
            text.push('\n');
        }
        let path = run.state.write_dead_letter(run_seq, text.as_bytes())?;
        tracing::warn!(
            pipeline = %spec.name,
            run_seq,
            bad_events = collector.bad.len(),
            path = %path,
            "malformed change events set aside in the dead-letter file"
        );
        Some(path)
    };
    let order = collector.order();
    let ts_max_us = collector.ts_max_ms().map(|ms| ms.saturating_mul(1000));
    let superseded = collector.superseded();
    let events = collector.stats.events;
    let (frame, mut stats, origins) = if collector.kept.is_empty() {
        (None, collector.stats.clone(), Vec::new())
    } else {
        let (df, st, origins) = collector.into_frame()?;
        (Some(df), st, origins)
    };
    let mut batch_file = None;
    let mut schema = Vec::new();
    let mut rows_batch = 0;
    if let Some(mut df) = frame {
        schema = schema_of(&df, &origins, "the change events of the run");
        rows_batch = df.height() as u64;
        batch_file = Some(run.write_batch(&mut df, "batch.parquet")?);
    }
    stats.dead_letter = dead_letter;

    let watermark_before = store.and_then(|w| w.value);
    let watermark_after = match (watermark_before, ts_max_us) {
        (Some(b), Some(h)) => Some(b.max(h)),
        (b, h) => b.or(h),
    };
    let next = Watermark {
        pipeline: spec.name.clone(),
        value: watermark_after,
        value_type: CursorType::Timestamp,
        updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        row_count: rows_batch,
        run_seq,
        target_version: None,
        event_time_high: None,
        boundary_hashes: Vec::new(),
        positions: outcome.positions,
        events_seen: store.map_or(0, |w| w.events_seen) + outcome.events,
        cdc_order: order.map(|o| o.as_str().to_string()),
    };
    let next_watermark_path = write_next_watermark(run, &next)?;
    Ok(ProcessManifest {
        run_seq,
        cursor_type: CursorType::Timestamp,
        watermark_before,
        window_low: None,
        window_high: ts_max_us,
        watermark_after,
        files_total: outcome.sources,
        files_skipped: 0,
        rows_extracted: events,
        rows_null_cursor: 0,
        rows_boundary_skipped: 0,
        rows_deduplicated: superseded,
        rows_late: 0,
        rows_after_as_of: 0,
        rows_quarantined: 0,
        rows_batch,
        batch: batch_file,
        quarantine: None,
        schema,
        next_watermark_path,
        duration_ms: run.started.elapsed().as_millis() as u64,
        attempt: 0,
        cdc: Some(stats),
        schema_resolution: None,
        more: outcome.limited,
        rows_remaining_estimate: None,
        oversized_value: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdc(types: &[(&str, &str)]) -> CdcSpec {
        CdcSpec {
            key: vec!["id".into()],
            max_events: 100,
            on_bad_event: OnBadEvent::Fail,
            brokers: None,
            topics: Vec::new(),
            group_id: None,
            types: types
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            soft_delete: false,
            security: Default::default(),
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            source: "t",
            at: 1,
            unit: "line",
        }
    }

    #[test]
    fn the_schema_wrapper_types_debezium_encodings() {
        let spec = cdc(&[]);
        let mut c = Collector::new(&spec, None);
        let ev = r#"{"schema":{"type":"struct","fields":[{"field":"after","type":"struct","fields":[
            {"field":"id","type":"int32"},
            {"field":"price","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"}},
            {"field":"created","type":"int64","name":"io.debezium.time.MicroTimestamp"},
            {"field":"day","type":"int32","name":"io.debezium.time.Date"},
            {"field":"at","type":"string","name":"io.debezium.time.ZonedTimestamp"}]}]},
            "payload":{"op":"c","after":{"id":1,"price":"BNI=","created":1000000,"day":20000,"at":"2026-01-01T00:00:00Z"},"source":{"lsn":5}}}"#;
        c.push(origin(), ev.as_bytes()).unwrap();
        let (df, stats, _) = c.into_frame().unwrap();
        assert_eq!(stats.upserts, 1);
        let types: Vec<String> = df.dtypes().iter().map(|t| t.to_string()).collect();
        assert_eq!(
            types,
            vec![
                "i32",
                "decimal[10,2]",
                "datetime[μs]",
                "date",
                "datetime[μs, UTC]",
                "i64",
                "str"
            ]
        );
        let price = df.column("price").unwrap().get(0).unwrap().to_string();
        assert!(price.contains("12.34"), "{price}");
    }

    #[test]
    fn the_last_change_per_key_wins_by_lsn_and_a_truncate_drops_what_came_before() {
        let spec = cdc(&[("v", "int64")]);
        let mut c = Collector::new(&spec, None);
        let ev = |op: &str, id: i64, v: i64, lsn: i64| {
            format!(
                r#"{{"op":"{op}","before":{{"id":{id}}},"after":{{"id":{id},"v":{v}}},"source":{{"lsn":{lsn}}}}}"#
            )
        };
        for e in [
            ev("c", 1, 1, 10),
            ev("u", 1, 3, 30),
            ev("u", 1, 2, 20), // older, delivered later
            ev("c", 2, 1, 11),
            ev("d", 2, 0, 40),
        ] {
            c.push(origin(), e.as_bytes()).unwrap();
        }
        assert_eq!(c.superseded(), 3);
        let (df, stats, _) = c.into_frame().unwrap();
        assert_eq!((stats.upserts, stats.deletes), (1, 1));
        let v = df.column("v").unwrap().i64().unwrap().get(0);
        assert_eq!(v, Some(3), "lsn 30 wins over the later-delivered lsn 20");

        let mut c = Collector::new(&spec, None);
        c.push(origin(), ev("c", 1, 1, 10).as_bytes()).unwrap();
        c.push(origin(), br#"{"op":"t","source":{"lsn":11}}"#)
            .unwrap();
        c.push(origin(), ev("c", 2, 1, 12).as_bytes()).unwrap();
        let (df, stats, _) = c.into_frame().unwrap();
        assert!(stats.truncate);
        assert_eq!(df.height(), 1);
        // Without an lsn after the first event had one: a bad event, named.
        let mut c = Collector::new(&spec, None);
        c.push(origin(), ev("c", 1, 1, 10).as_bytes()).unwrap();
        let err = c
            .push(origin(), br#"{"op":"c","after":{"id":3,"v":1}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("t line 1"), "{err}");
    }
}
