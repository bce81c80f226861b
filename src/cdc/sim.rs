//! A simulated captured table that writes the Debezium change events of its own changes and
//! keeps the table's true state: the oracle of the CDC tests, the chaos harness and the
//! benchmark. Rows are `(order_id, status, updated_at)`; events carry a growing `source.lsn`
//! (optional) and `ts_ms`.

use std::collections::BTreeMap;

/// The state of the simulated table: `order_id -> (updated_at µs, status)`.
pub type Rows = BTreeMap<i64, (i64, String)>;

/// A table whose every change is written as a Debezium envelope.
#[derive(Debug, Clone)]
pub struct SimTable {
    /// The table's state after the changes so far.
    pub rows: Rows,
    lsn: i64,
    /// `source.lsn` is written.
    pub with_lsn: bool,
    /// Events are wrapped in `{"schema", "payload"}`.
    pub with_schema: bool,
}

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

impl SimTable {
    /// An empty table.
    pub fn new(with_lsn: bool, with_schema: bool) -> Self {
        SimTable {
            rows: BTreeMap::new(),
            lsn: 1000,
            with_lsn,
            with_schema,
        }
    }

    fn row_json(id: i64, (ts, status): &(i64, String)) -> String {
        format!(r#"{{"order_id":{id},"status":"{status}","updated_at":{ts}}}"#)
    }

    fn envelope(
        &mut self,
        op: &str,
        before: Option<String>,
        after: Option<String>,
        lsn: i64,
    ) -> String {
        let ts_ms = BASE_MS + lsn;
        let source = if self.with_lsn {
            format!(
                r#"{{"connector":"postgresql","db":"shop","table":"orders","lsn":{lsn},"ts_ms":{ts_ms}}}"#
            )
        } else {
            format!(r#"{{"connector":"mysql","db":"shop","table":"orders","ts_ms":{ts_ms}}}"#)
        };
        let payload = format!(
            r#"{{"before":{},"after":{},"source":{source},"op":"{op}","ts_ms":{ts_ms}}}"#,
            before.as_deref().unwrap_or("null"),
            after.as_deref().unwrap_or("null"),
        );
        if self.with_schema {
            let fields = r#"[{"type":"int64","optional":false,"field":"order_id"},{"type":"string","optional":true,"field":"status"},{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","field":"updated_at"}]"#;
            format!(
                r#"{{"schema":{{"type":"struct","fields":[{{"type":"struct","optional":true,"field":"before","fields":{fields}}},{{"type":"struct","optional":true,"field":"after","fields":{fields}}}],"name":"shop.orders.Envelope"}},"payload":{payload}}}"#
            )
        } else {
            payload
        }
    }

    fn next_lsn(&mut self) -> i64 {
        self.lsn += 8;
        self.lsn
    }

    /// A snapshot read (`r`) of a row, at the snapshot's shared position `lsn`.
    pub fn snapshot_read(&mut self, id: i64, status: &str, updated_at_us: i64, lsn: i64) -> String {
        let row = (updated_at_us, status.to_string());
        let after = Self::row_json(id, &row);
        self.rows.insert(id, row);
        self.lsn = self.lsn.max(lsn);
        self.envelope("r", None, Some(after), lsn)
    }

    /// Inserts (`c`) or updates (`u`) a row, as the table would report it.
    pub fn upsert(&mut self, id: i64, status: &str, updated_at_us: i64) -> String {
        let lsn = self.next_lsn();
        let row = (updated_at_us, status.to_string());
        let after = Self::row_json(id, &row);
        match self.rows.insert(id, row) {
            Some(old) => {
                let before = Self::row_json(id, &old);
                self.envelope("u", Some(before), Some(after), lsn)
            }
            None => self.envelope("c", None, Some(after), lsn),
        }
    }

    /// Deletes a row (`d`, before image = key only, as with REPLICA IDENTITY DEFAULT); None
    /// when the row does not exist.
    pub fn delete(&mut self, id: i64) -> Option<String> {
        self.rows.remove(&id)?;
        let lsn = self.next_lsn();
        Some(self.envelope("d", Some(format!(r#"{{"order_id":{id}}}"#)), None, lsn))
    }

    /// Truncates the table (`t`).
    pub fn truncate(&mut self) -> String {
        self.rows.clear();
        let lsn = self.next_lsn();
        self.envelope("t", None, None, lsn)
    }
}

/// A reproducible stream of `n` changes over keys `0..keys` (about 30% inserts, 55% updates,
/// 15% deletes), with a Kafka-style tombstone (`null`) after some deletes and some events
/// delivered twice (the duplicate a connector restart or a producer retry writes), so that
/// applying the lines in order must give `table.rows`.
pub fn random_stream(table: &mut SimTable, seed: u64, n: usize, keys: i64) -> Vec<String> {
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let statuses = ["new", "paid", "shipped", "cancelled"];
    let mut out = Vec::with_capacity(n + n / 8);
    let mut clock_us = 1_767_225_600_000_000i64;
    while out.len() < n {
        let id = (next() % keys as u64) as i64;
        let roll = next() % 100;
        clock_us += 1_000_000;
        let status = statuses[(next() % 4) as usize];
        let line = if roll < 15 && table.rows.contains_key(&id) {
            let d = table.delete(id).expect("exists");
            if next() % 2 == 0 {
                out.push(d.clone());
                "null".to_string()
            } else {
                d
            }
        } else {
            table.upsert(id, status, clock_us)
        };
        if next() % 20 == 0 {
            out.push(line.clone()); // delivered twice
        }
        out.push(line);
    }
    out
}
