//! Chaos cases: generated data and faults (proptest strategies), and their materialisation
//! into source files plus the reference model, computed independently of tidemark's code.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tidemark::crash::POINTS;
use tidemark::demo::{BASE_US, Order};

const MINUTE_US: i64 = 60_000_000;
/// The lookback of merge cases, minutes.
pub const LOOKBACK_MIN: i64 = 120;

/// How the case's pipeline writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Merge on `order_id`, lookback 2 h.
    Merge,
    /// Append, lookback 0, key `order_id` for the boundary set.
    Append,
    /// Partition overwrite by `order_date` (the Parquet dataset target), key `order_id`,
    /// lookback 2 h: each run rewrites the partitions of its batch, merging the batch's rows
    /// into the live ones by key, so the model is merge's.
    PartitionOverwrite,
    /// Change events (`debezium-jsonl`, ordered by `source.lsn`) applied by key: `New` is an
    /// insert, `Update` an update, `Late`/`Stale` an older change of a key delivered late
    /// (must never win), `TieAtMark` a delete followed by a tombstone, `Duplicate` an earlier
    /// line of the file delivered again.
    Cdc,
}

/// Where a case's pipeline writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A Delta table (merge or append).
    #[default]
    Delta,
    /// A PostgreSQL table (merge or append) on the fleet's throwaway cluster.
    Postgres,
    /// A hive-partitioned Parquet dataset (partition overwrite).
    Parquet,
    /// A Delta table on the fleet's S3 server (moto), with the pipeline's `state_dir` there
    /// too: the workers share nothing but the bucket, PostgreSQL and Temporal.
    DeltaS3,
}

impl Target {
    /// Parses a `--targets` item.
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "delta" => Some(Target::Delta),
            "postgres" => Some(Target::Postgres),
            "parquet" => Some(Target::Parquet),
            "delta-s3" | "delta_s3" => Some(Target::DeltaS3),
            _ => None,
        }
    }

    /// The product's target kind.
    pub fn kind(self) -> tidemark::workflows::spec::TargetKind {
        use tidemark::workflows::spec::TargetKind;
        match self {
            Target::Delta | Target::DeltaS3 => TargetKind::Delta,
            Target::Postgres => TargetKind::Postgres,
            Target::Parquet => TargetKind::Parquet,
        }
    }

    /// Whether the target takes change events (the product's own rule for its kind).
    pub fn accepts_change_events(self) -> bool {
        tidemark::target::rules(self.kind()).accepts_change_events
    }

    /// The case's mode on this target (the Parquet dataset has only partition overwrite).
    pub fn mode_for(self, generated: Mode) -> Mode {
        match self {
            Target::Parquet => Mode::PartitionOverwrite,
            _ if generated == Mode::Cdc => Mode::Cdc,
            _ if generated == Mode::PartitionOverwrite => Mode::Merge,
            _ => generated,
        }
    }
}

/// One generated source row, relative to the generator's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowOp {
    /// A new order, newer than everything.
    New,
    /// A newer version of an existing order.
    Update(u8),
    /// A version of an existing order `minutes` before the watermark: inside the lookback up
    /// to 120, beyond it above.
    Late(u8, u16),
    /// A version one minute older than the order's newest: must never win.
    Stale(u8),
    /// A new order whose cursor equals the watermark (a strict `>` would lose it).
    TieAtMark,
    /// The same order and cursor as an earlier row of this file, other contents: the later
    /// row must win.
    Duplicate(u8),
}

/// Faults of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Faults {
    /// Crash points (index into `POINTS`) and how many times each fires, fleet-wide.
    pub crashes: Vec<(u8, u8)>,
    /// SIGKILL a worker this many ms into each round's run.
    pub kill_after_ms: Option<u16>,
    /// Pause a worker past the heartbeat timeout in each round, then resume it (a zombie).
    pub zombie: bool,
    /// Restart the server during the first round.
    pub server_restart: bool,
    /// Start each run twice (the second must be refused).
    pub start_twice: bool,
    /// S3 cases: an object-store fault between the workers and the store in each round's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreFaultPlan>,
    /// The crash plan is armed from this round on (0: from the first). A pipeline's first run
    /// takes `process` as a regular activity; later small runs take it as a local one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crash_from_round: u8,
    /// Crash points of the maintenance (index into `MAINTAIN_POINTS`) and their counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintain_crashes: Vec<(u8, u8)>,
    /// The first hits of each crash point pass: with runs in batches, the crash lands in a
    /// later batch (or between two).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crash_skip: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// An object-store fault of an S3 case: `fault` from `after_ms` into the run, for `for_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFaultPlan {
    /// What the store does.
    pub fault: crate::storeproxy::StoreFault,
    /// When it starts, ms into the run.
    pub after_ms: u16,
    /// How long it lasts, ms.
    pub for_ms: u16,
}

fn store_fault() -> impl Strategy<Value = StoreFaultPlan> {
    use crate::storeproxy::StoreFault;
    (
        prop_oneof![
            Just(StoreFault::Down),
            Just(StoreFault::Failing),
            (200u16..1500).prop_map(StoreFault::Slow),
        ],
        0u16..1500,
        500u16..4000,
    )
        .prop_map(|(fault, after_ms, for_ms)| StoreFaultPlan {
            fault,
            after_ms,
            for_ms,
        })
}

impl Faults {
    /// The maintenance's crash plan as (point name, count).
    pub fn maintain_plan(&self) -> Vec<(String, u32)> {
        use tidemark::crash::MAINTAIN_POINTS;
        self.maintain_crashes
            .iter()
            .map(|(p, n)| {
                (
                    MAINTAIN_POINTS[*p as usize % MAINTAIN_POINTS.len()].to_string(),
                    *n as u32,
                )
            })
            .collect()
    }

    /// The crash plan as (point name, count).
    pub fn plan(&self) -> Vec<(String, u32)> {
        self.crashes
            .iter()
            .map(|(p, n)| (POINTS[*p as usize % POINTS.len()].to_string(), *n as u32))
            .collect()
    }
}

/// A whole case: rounds of files of rows, and faults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Target kind (absent in older regression lines: Delta).
    #[serde(default)]
    pub target: Target,
    /// Target mode.
    pub mode: Mode,
    /// Rounds → files → rows.
    pub rounds: Vec<Vec<Vec<RowOp>>>,
    /// Faults.
    pub faults: Faults,
    /// Every step a regular activity (`[execution] local_activities = "off"`); otherwise the
    /// default, where small runs' steps are local activities.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regular_steps: bool,
    /// The source's schema changes after the first round (`[schema] new_columns = "add"`,
    /// and `type_changes = "widen"` where the target widens): from the second round on, rows
    /// carry a new column `channel` (= `c-<status>`), and `customer_id`, written as int32 in
    /// the first round's files, is int64.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schema_change: bool,
    /// Delta targets in merge mode (change events included): `[target] deletion_vectors =
    /// true`, so replaced rows are deleted by deletion vector (merge-on-read) where tidemark
    /// makes the MERGE, and the table carries the feature wherever delta-rs does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_vectors: bool,
    /// After the last round, a table maintenance (`tidemark maintain`: compaction with
    /// thresholds that make it compact, checkpoint, vacuum) through its workflow, with
    /// `faults.maintain_crashes` armed; the table must still equal the model, and a second
    /// maintenance find nothing to compact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintain: bool,
    /// `[source] max_batch_rows`: a tiny budget makes every run several batches (each its own
    /// commit and watermark), and each execution continues as new after two of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_rows: Option<u8>,
    /// A Delta table without `partition_by`: a commit of inserts only (a first batch, an
    /// append, a MERGE of new keys) adopts the staged batch file as its data file (write once)
    /// on a local table.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpartitioned: bool,
    /// A Delta merge partitioned by a string column fixed per order (`region` = `r<id % 3>`)
    /// with `partition_stable = true`: the MERGE looks for a batch's keys in the batch's
    /// partitions only, and a partition's inserts go into the file it rewrites there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stable_partition: bool,
}

impl Case {
    /// Whether the case's table is partitioned by the stable `region` column (Delta merges
    /// of partitioned tables only).
    pub fn by_region(&self) -> bool {
        self.stable_partition
            && !self.unpartitioned
            && matches!(self.target, Target::Delta | Target::DeltaS3)
            && self.mode == Mode::Merge
    }

    /// Whether the case's spec asks for deletion vectors (only Delta merges take them).
    pub fn uses_deletion_vectors(&self) -> bool {
        self.deletion_vectors
            && matches!(self.target, Target::Delta | Target::DeltaS3)
            && matches!(self.mode, Mode::Merge | Mode::Cdc)
    }

    /// Whether the case's type change is applied: the target widens (tidemark rewrites a
    /// widened Delta table's files only on local storage; change events carry no int32).
    pub fn widens(&self) -> bool {
        self.schema_change && self.mode != Mode::Cdc && self.target != Target::DeltaS3
    }
}

/// The new column of schema-change cases, and its value for a row version tagged `status`.
pub const NEW_COLUMN: &str = "channel";

/// `channel` of a row version: `c-<status>` for versions written from the second round on
/// (their tag is `r<round>...`), none for the first round's.
pub fn channel_of(status: &str) -> Option<String> {
    (!status.starts_with("r0")).then(|| format!("c-{status}"))
}

fn row_op() -> impl Strategy<Value = RowOp> {
    prop_oneof![
        4 => Just(RowOp::New),
        3 => any::<u8>().prop_map(RowOp::Update),
        2 => (any::<u8>(), 1u16..200).prop_map(|(i, m)| RowOp::Late(i, m)),
        1 => any::<u8>().prop_map(RowOp::Stale),
        1 => Just(RowOp::TieAtMark),
        1 => any::<u8>().prop_map(RowOp::Duplicate),
    ]
}

/// Strategy of data: 1–3 rounds of 1–2 files of 1–8 rows.
pub fn rounds() -> impl Strategy<Value = Vec<Vec<Vec<RowOp>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(row_op(), 1..8), 1..3),
        1..4,
    )
}

/// Strategy of faults.
pub fn faults() -> impl Strategy<Value = Faults> {
    (
        prop::collection::vec((0u8..POINTS.len() as u8, 1u8..3), 0..3),
        prop::option::weighted(0.3, 0u16..1500),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.4, store_fault()),
        prop_oneof![3 => Just(0u8), 1 => Just(1u8)],
        prop::collection::vec((0u8..2, 1u8..3), 0..2),
        prop_oneof![2 => Just(0u8), 1 => 1u8..4],
    )
        .prop_map(
            |(
                crashes,
                kill_after_ms,
                zombie,
                server_restart,
                start_twice,
                store,
                from,
                m,
                skip,
            )| {
                Faults {
                    crashes,
                    kill_after_ms,
                    zombie,
                    server_restart,
                    start_twice,
                    store,
                    crash_from_round: from,
                    maintain_crashes: m,
                    crash_skip: skip,
                }
            },
        )
}

/// Strategy of whole cases.
pub fn cases() -> impl Strategy<Value = Case> {
    (
        prop_oneof![3 => Just(Mode::Merge), 1 => Just(Mode::Append), 1 => Just(Mode::Cdc)],
        rounds(),
        faults(),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.3, 1u8..5),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(
                mode,
                rounds,
                faults,
                regular_steps,
                schema_change,
                deletion_vectors,
                maintain,
                batch_rows,
                unpartitioned,
                stable_partition,
            )| {
                Case {
                    target: Target::Delta,
                    mode,
                    rounds,
                    faults,
                    regular_steps,
                    schema_change,
                    deletion_vectors,
                    maintain,
                    batch_rows,
                    unpartitioned,
                    stable_partition,
                }
            },
        )
}

/// A materialised case: the files of each round, and the model after each round.
#[derive(Debug, Clone)]
pub struct Materialized {
    /// Per round, per file, the rows.
    pub files: Vec<Vec<Vec<Order>>>,
    /// Per round, the model of the table after it: order_id → (cursor, status) for merge,
    /// every loaded row (unique keys) for append.
    pub models: Vec<BTreeMap<i64, (i64, String)>>,
    /// Per round, the model watermark after it.
    pub watermarks: Vec<Option<i64>>,
    /// Rows that must be in the target after the last round.
    pub rows: usize,
    /// Change-event cases: per round, per file, the event lines (instead of `files`).
    pub lines: Vec<Vec<Vec<String>>>,
}

/// Turns a case into concrete files and the reference model. The model applies the
/// pipeline's documented semantics directly: a round reads rows whose cursor is at or above
/// `watermark − lookback` (append: the watermark), and the table holds the newest version
/// per key, later file then later row winning ties.
pub fn materialize(case: &Case) -> Materialized {
    if case.mode == Mode::Cdc {
        return materialize_cdc(case);
    }
    let lookback = match case.mode {
        Mode::Merge | Mode::PartitionOverwrite => LOOKBACK_MIN * MINUTE_US,
        Mode::Append | Mode::Cdc => 0,
    };

    let mut next_id = 1i64;
    let mut clock = BASE_US;
    let mut newest: BTreeMap<i64, Order> = BTreeMap::new(); // generator's newest per key
    let mut mark: Option<i64> = None; // model watermark
    let mut table: BTreeMap<i64, (i64, String)> = BTreeMap::new();
    let mut out = Materialized {
        files: Vec::new(),
        models: Vec::new(),
        watermarks: Vec::new(),
        rows: 0,
        lines: Vec::new(),
    };
    for (r, round) in case.rounds.iter().enumerate() {
        clock = clock.max(BASE_US + r as i64 * 86_400_000_000);
        let low = mark.map(|m| m - lookback);
        let mut round_files = Vec::new();
        let mut round_high = mark;
        for (f, file) in round.iter().enumerate() {
            let mut rows: Vec<Order> = Vec::new();
            for (k, op) in file.iter().enumerate() {
                let keys: Vec<i64> = newest.keys().copied().collect();
                let pick = |i: u8| keys.get(i as usize % keys.len().max(1)).copied();
                let op = match (case.mode, op) {
                    (Mode::Append, RowOp::Update(_) | RowOp::Stale(_) | RowOp::Duplicate(_)) => {
                        RowOp::New
                    }
                    (_, RowOp::Update(_) | RowOp::Stale(_) | RowOp::Late(..))
                        if keys.is_empty() =>
                    {
                        RowOp::New
                    }
                    (_, RowOp::Late(..)) if mark.is_none() => RowOp::New,
                    (_, RowOp::TieAtMark) if mark.is_none() => RowOp::New,
                    (_, RowOp::Duplicate(_)) if rows.is_empty() => RowOp::New,
                    (_, op) => *op,
                };
                let tag = format!("r{r}f{f}k{k}");
                let row = match op {
                    RowOp::New => {
                        clock += MINUTE_US;
                        next_id += 1;
                        Order::new(next_id, &tag, clock)
                    }
                    RowOp::Update(i) => {
                        clock += MINUTE_US;
                        newest[&pick(i).expect("keys")].version(&tag, clock)
                    }
                    RowOp::Late(i, m) => newest[&pick(i).expect("keys")]
                        .version(&tag, mark.expect("mark") - m as i64 * MINUTE_US),
                    RowOp::Stale(i) => {
                        let o = &newest[&pick(i).expect("keys")];
                        o.version(&tag, o.updated_at_us - MINUTE_US)
                    }
                    RowOp::TieAtMark => {
                        next_id += 1;
                        Order::new(next_id, &tag, mark.expect("mark"))
                    }
                    RowOp::Duplicate(i) => {
                        let prev = &rows[i as usize % rows.len()];
                        prev.version(&tag, prev.updated_at_us)
                    }
                };
                let visible = low.is_none_or(|l| row.updated_at_us >= l);
                if visible {
                    round_high =
                        Some(round_high.map_or(row.updated_at_us, |h| h.max(row.updated_at_us)));
                    let replace = match table.get(&row.order_id) {
                        None => true,
                        Some((c, _)) => row.updated_at_us >= *c,
                    };
                    if case.mode == Mode::Append || replace {
                        table.insert(row.order_id, (row.updated_at_us, row.status.clone()));
                    }
                }
                let entry = newest.entry(row.order_id).or_insert_with(|| row.clone());
                if row.updated_at_us >= entry.updated_at_us {
                    *entry = row.clone();
                }
                rows.push(row);
            }
            round_files.push(rows);
        }
        mark = round_high;
        out.files.push(round_files);
        out.models.push(table.clone());
        out.watermarks.push(mark);
    }
    out.rows = table.len();
    out
}

/// One change event of a key (bare Debezium envelope, PostgreSQL-style `source.lsn`).
fn cdc_event(
    op: &str,
    id: i64,
    row: Option<&(i64, String)>,
    lsn: i64,
    ts_us: i64,
    schema_change: bool,
) -> String {
    let image = match row {
        Some((ts, status)) => match channel_of(status).filter(|_| schema_change) {
            Some(c) => format!(
                r#"{{"order_id":{id},"status":"{status}","updated_at":{ts},"{NEW_COLUMN}":"{c}"}}"#
            ),
            None => format!(r#"{{"order_id":{id},"status":"{status}","updated_at":{ts}}}"#),
        },
        None => format!(r#"{{"order_id":{id}}}"#),
    };
    let (before, after) = if op == "d" {
        (image, "null".to_string())
    } else {
        ("null".to_string(), image)
    };
    let ts_ms = ts_us / 1000;
    format!(
        r#"{{"before":{before},"after":{after},"source":{{"lsn":{lsn},"ts_ms":{ts_ms}}},"op":"{op}","ts_ms":{ts_ms}}}"#
    )
}

/// The change-event reading of a case (see [`Mode::Cdc`]): event lines, and the model — the
/// captured table after each round — written independently of tidemark's reducer: changes
/// apply in lsn order per key, older ones never win, a delete removes the key.
fn materialize_cdc(case: &Case) -> Materialized {
    let sc = case.schema_change;
    let mut lsn = 100i64;
    let mut clock = BASE_US;
    let mut next_id = 1i64;
    // key → (lsn of its newest change, row); deleted keys are absent.
    let mut live: BTreeMap<i64, (i64, (i64, String))> = BTreeMap::new();
    let mut ts_high: Option<i64> = None;
    let mut out = Materialized {
        files: Vec::new(),
        models: Vec::new(),
        watermarks: Vec::new(),
        rows: 0,
        lines: Vec::new(),
    };
    for (r, round) in case.rounds.iter().enumerate() {
        let mut round_lines = Vec::new();
        for (f, file) in round.iter().enumerate() {
            let mut lines: Vec<String> = Vec::new();
            // The key each line changes (None: a tombstone), and the delete line of each key
            // deleted in this file.
            let mut line_keys: Vec<Option<i64>> = Vec::new();
            let mut deletes: BTreeMap<i64, usize> = BTreeMap::new();
            for (k, op) in file.iter().enumerate() {
                let keys: Vec<i64> = live.keys().copied().collect();
                let pick = |i: u8| keys.get(i as usize % keys.len().max(1)).copied();
                let tag = format!("r{r}f{f}k{k}");
                clock += MINUTE_US;
                let mut ts = clock;
                // The key the line changes (None: a tombstone).
                let mut key = None;
                let line = match (op, pick(0)) {
                    (RowOp::Update(i), Some(_)) => {
                        let id = pick(*i).expect("keys");
                        key = Some(id);
                        lsn += 1;
                        let row = (clock, tag);
                        live.insert(id, (lsn, row.clone()));
                        cdc_event("u", id, Some(&row), lsn, clock, sc)
                    }
                    (RowOp::Late(i, _) | RowOp::Stale(i), Some(_)) => {
                        // An older change of the key, delivered now: never applied.
                        let id = pick(*i).expect("keys");
                        key = Some(id);
                        let (newest_lsn, (newest_ts, _)) = live[&id].clone();
                        ts = newest_ts - MINUTE_US;
                        cdc_event("u", id, Some(&(ts, tag)), newest_lsn - 1, ts, sc)
                    }
                    (RowOp::TieAtMark, Some(_)) => {
                        let id = pick(k as u8).expect("keys");
                        live.remove(&id);
                        lsn += 1;
                        deletes.insert(id, lines.len());
                        lines.push(cdc_event("d", id, None, lsn, clock, sc));
                        line_keys.push(Some(id));
                        ts_high = Some(ts_high.map_or(clock, |h| h.max(clock)));
                        "null".to_string()
                    }
                    (RowOp::Duplicate(i), _) if !lines.is_empty() => {
                        let mut at = *i as usize % lines.len();
                        // A hard delete forgets the key's position, so an older change of a
                        // deleted key, redelivered in a later batch than the delete, re-creates
                        // the row (docs/cdc.md, Deletes; `soft_delete` closes that gap). Within
                        // one batch the reducer keeps the delete. A round read in batches may
                        // split them: there the duplicate is the delete's own.
                        if case.batch_rows.is_some()
                            && let Some(&d) = line_keys[at].and_then(|key| deletes.get(&key))
                            && at < d
                        {
                            at = d;
                        }
                        key = line_keys[at];
                        ts = ts_high.unwrap_or(clock).min(clock);
                        lines[at].clone()
                    }
                    _ => {
                        next_id += 1;
                        key = Some(next_id);
                        lsn += 1;
                        let row = (clock, tag);
                        live.insert(next_id, (lsn, row.clone()));
                        cdc_event("c", next_id, Some(&row), lsn, clock, sc)
                    }
                };
                if line != "null" {
                    ts_high = Some(ts_high.map_or(ts, |h| h.max(ts)));
                }
                lines.push(line);
                line_keys.push(key);
            }
            round_lines.push(lines);
        }
        out.lines.push(round_lines);
        out.files.push(Vec::new());
        out.models
            .push(live.iter().map(|(k, (_, row))| (*k, row.clone())).collect());
        out.watermarks.push(ts_high.map(|t| t / 1000 * 1000));
    }
    out.rows = live.len();
    out
}

/// A fixed small case that crashes at one point once (the CI sweep), on the default path: the
/// first round's `process` is a regular activity, every other step a local one.
pub fn sweep_case(point: usize, target: Target, mode: Mode) -> Case {
    use RowOp::*;
    Case {
        regular_steps: false,
        target,
        mode: target.mode_for(mode),
        rounds: vec![
            vec![vec![New, New, New], vec![New, Update(0), Duplicate(0)]],
            vec![vec![TieAtMark, Late(1, 30), Stale(2), New, Update(3)]],
        ],
        faults: Faults {
            crashes: vec![(point as u8, 1)],
            ..Faults::default()
        },
        schema_change: false,
        deletion_vectors: false,
        maintain: false,
        batch_rows: None,
        unpartitioned: false,
        stable_partition: false,
    }
}

/// [`sweep_case`] whose runs go batch after batch (two rows each), crashing at `point` in
/// the second hit of it: inside the second batch, or between the first two. The table is
/// unpartitioned, so the batches of inserts only are written once (adopted as data files).
pub fn sweep_case_batches(point: usize, target: Target, mode: Mode) -> Case {
    let mut case = sweep_case(point, target, mode);
    case.batch_rows = Some(2);
    case.faults.crash_skip = 1;
    case.unpartitioned = true;
    case
}

/// [`sweep_case`] on a table partitioned by a stable string column (`region`).
pub fn sweep_case_region(point: usize, target: Target, mode: Mode) -> Case {
    Case {
        stable_partition: true,
        ..sweep_case(point, target, mode)
    }
}

/// [`sweep_case`] whose source changes its schema after the first round.
pub fn sweep_case_schema(point: usize, target: Target, mode: Mode) -> Case {
    Case {
        schema_change: true,
        ..sweep_case(point, target, mode)
    }
}

/// [`sweep_case`] on a table with deletion vectors (merge-on-read).
pub fn sweep_case_dv(point: usize, target: Target, mode: Mode) -> Case {
    Case {
        deletion_vectors: true,
        ..sweep_case(point, target, mode)
    }
}

/// A merge-on-read case followed by a maintenance that crashes once at maintenance crash
/// point `point` (index into `MAINTAIN_POINTS`).
pub fn sweep_case_maintain(point: usize, target: Target) -> Case {
    let mut case = sweep_case_dv(POINTS.len(), target, Mode::Merge);
    case.faults.crashes.clear();
    case.faults.maintain_crashes = vec![(point as u8, 1)];
    case.maintain = true;
    case
}

/// [`sweep_case`] with every step a regular activity.
pub fn sweep_case_regular(point: usize, target: Target, mode: Mode) -> Case {
    Case {
        regular_steps: true,
        ..sweep_case(point, target, mode)
    }
}

/// [`sweep_case`] with the crash armed in the second round, whose `process` is a local
/// activity (the first run made the watermark recent and small).
pub fn sweep_case_second_round(point: usize, target: Target, mode: Mode) -> Case {
    let mut case = sweep_case(point, target, mode);
    case.faults.crash_from_round = 1;
    case
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_keeps_the_newest_visible_version() {
        use RowOp::*;
        let case = Case {
            target: Target::Delta,
            mode: Mode::Merge,
            rounds: vec![
                vec![vec![New, New]],
                vec![vec![Stale(0), Late(1, 500), TieAtMark]],
            ],
            faults: Faults::default(),
            regular_steps: false,
            schema_change: false,
            deletion_vectors: false,
            maintain: false,
            batch_rows: None,
            unpartitioned: false,
            stable_partition: false,
        };
        let m = materialize(&case);
        // Stale never wins, the late row beyond the lookback is never read, the tie is loaded.
        assert_eq!(m.rows, 3);
        let last = &m.models[1];
        assert!(last.values().all(|(_, s)| !s.starts_with("r1f0k0")));
        assert!(last.values().all(|(_, s)| !s.starts_with("r1f0k1")));
        assert_eq!(m.watermarks[0], m.watermarks[1]);
    }

    #[test]
    fn partition_overwrite_with_a_key_keeps_the_rows_the_batch_does_not_carry() {
        use RowOp::*;
        let case = Case {
            target: Target::Parquet,
            mode: Mode::PartitionOverwrite,
            // Day 0: orders 2, 3. Day 1: order 4. Day 2: a new version of order 2, whose
            // partition (day 0) is rewritten: order 3 stays.
            rounds: vec![vec![vec![New, New]], vec![vec![New]], vec![vec![Update(0)]]],
            faults: Faults::default(),
            regular_steps: false,
            schema_change: false,
            deletion_vectors: false,
            maintain: false,
            batch_rows: None,
            unpartitioned: false,
            stable_partition: false,
        };
        let m = materialize(&case);
        let last = &m.models[2];
        assert_eq!(last.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(last[&2].1.starts_with("r2"));
    }
}
