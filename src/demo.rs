//! `tidemark demo`: the embedded default. Generates a small orders source, starts a local
//! Temporal dev server and a worker in this process, runs three incremental rounds into a
//! partitioned Delta table (the third with late rows inside the lookback, rows tied at the
//! watermark, and a late, older version that must not win), then checks the table against
//! the source's newest version per key.
//!
//! The order generator and the table reader here are also what the integration tests use.

use crate::client::{self, ConnectSettings};
use crate::cursor::format_opt;
use crate::target::delta;
use anyhow::{Context, bail};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Int64Type, TimeUnit as ArrowUnit, TimestampMicrosecondType,
};
use polars::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 2026-01-01T00:00:00Z in microseconds.
pub const BASE_US: i64 = 1_767_225_600_000_000;
const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;

/// One order row of the demo / test schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// Key.
    pub order_id: i64,
    /// Customer.
    pub customer_id: i64,
    /// Status.
    pub status: String,
    /// Amount.
    pub amount: f64,
    /// Cursor, µs since epoch.
    pub updated_at_us: i64,
    /// Partition column, days since epoch.
    pub order_date_days: i32,
}

impl Order {
    /// A new order at `updated_at_us`, dated that day.
    pub fn new(order_id: i64, status: &str, updated_at_us: i64) -> Self {
        Order {
            order_id,
            customer_id: order_id % 97,
            status: status.to_string(),
            amount: (order_id % 500) as f64 + 0.25,
            updated_at_us,
            order_date_days: (updated_at_us.div_euclid(86_400_000_000)) as i32,
        }
    }

    /// The same order in a later (or earlier) version.
    pub fn version(&self, status: &str, updated_at_us: i64) -> Self {
        Order {
            status: status.to_string(),
            updated_at_us,
            amount: self.amount + 1.0,
            ..self.clone()
        }
    }
}

/// Writes orders as a Parquet file with the benchmark schema (`updated_at` timestamp[us, UTC],
/// `order_date` date).
pub fn write_orders(path: &Path, orders: &[Order]) -> anyhow::Result<()> {
    let mut df = orders_frame(orders)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    ParquetWriter::new(file).finish(&mut df)?;
    Ok(())
}

/// The orders as a Polars frame.
pub fn orders_frame(orders: &[Order]) -> anyhow::Result<DataFrame> {
    let ts = Series::new(
        "updated_at".into(),
        orders.iter().map(|o| o.updated_at_us).collect::<Vec<_>>(),
    )
    .cast(&DataType::Datetime(
        TimeUnit::Microseconds,
        Some(TimeZone::UTC),
    ))?;
    let date = Series::new(
        "order_date".into(),
        orders.iter().map(|o| o.order_date_days).collect::<Vec<_>>(),
    )
    .cast(&DataType::Date)?;
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            "order_id".into(),
            orders.iter().map(|o| o.order_id).collect::<Vec<_>>(),
        ),
        Column::new(
            "customer_id".into(),
            orders.iter().map(|o| o.customer_id).collect::<Vec<_>>(),
        ),
        Column::new(
            "status".into(),
            orders.iter().map(|o| o.status.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "amount".into(),
            orders.iter().map(|o| o.amount).collect::<Vec<_>>(),
        ),
        ts.into(),
        date.into(),
    ])?)
}

/// The reference model: the newest version per key over files in order (ties go to the later
/// file, then the later row).
pub fn newest_per_key(files: &[Vec<Order>]) -> BTreeMap<i64, Order> {
    let mut out: BTreeMap<i64, Order> = BTreeMap::new();
    for file in files {
        for o in file {
            match out.get(&o.order_id) {
                Some(cur) if cur.updated_at_us > o.updated_at_us => {}
                _ => {
                    out.insert(o.order_id, o.clone());
                }
            }
        }
    }
    out
}

/// A table row as read back: (updated_at µs, status).
pub type TableRow = (i64, String);

/// Reads an orders Delta table into `order_id -> (updated_at, status)`, failing on a duplicate
/// key (a duplicate is a correctness bug, never something to paper over).
pub async fn read_orders_table(table: &str) -> anyhow::Result<BTreeMap<i64, TableRow>> {
    let batches = delta::read_all(table).await?;
    let mut out = BTreeMap::new();
    for b in batches {
        let id = deltalake::arrow::compute::cast(
            b.column_by_name("order_id").context("order_id")?,
            &ArrowType::Int64,
        )?;
        let ts = deltalake::arrow::compute::cast(
            b.column_by_name("updated_at").context("updated_at")?,
            &ArrowType::Timestamp(ArrowUnit::Microsecond, None),
        )?;
        let st = deltalake::arrow::compute::cast(
            b.column_by_name("status").context("status")?,
            &ArrowType::Utf8,
        )?;
        let (id, ts, st) = (
            id.as_primitive::<Int64Type>(),
            ts.as_primitive::<TimestampMicrosecondType>(),
            st.as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            if out
                .insert(id.value(i), (ts.value(i), st.value(i).to_string()))
                .is_some()
            {
                bail!("duplicate key {} in {table}", id.value(i));
            }
            debug_assert!(!id.is_null(i));
        }
    }
    Ok(out)
}

/// Whether a table equals the model (same keys, same newest versions).
pub fn table_matches(table: &BTreeMap<i64, TableRow>, model: &BTreeMap<i64, Order>) -> bool {
    table.len() == model.len()
        && model
            .iter()
            .all(|(k, o)| table.get(k) == Some(&(o.updated_at_us, o.status.clone())))
}

/// One round of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// 1, 2, 3.
    pub round: u32,
    /// What the round adds.
    pub scenario: String,
    /// Run sequence number.
    pub run_seq: Option<u64>,
    /// Rows read in the window.
    pub rows_extracted: u64,
    /// Rows inserted + updated.
    pub rows_promoted: u64,
    /// Watermark after.
    pub watermark_after: String,
    /// Delta version.
    pub target_version: Option<i64>,
    /// Wall time, ms.
    pub duration_ms: u64,
}

/// The demo's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Per round.
    pub rounds: Vec<RoundReport>,
    /// Rows in the final table.
    pub table_rows: usize,
    /// Keys in the source's newest-version model.
    pub expected_rows: usize,
    /// Table == model.
    pub matches_oracle: bool,
    /// Table path.
    pub table_path: String,
    /// Web UI.
    pub ui_url: Option<String>,
}

/// The three rounds' source files.
pub fn demo_files() -> Vec<(String, Vec<Order>)> {
    let r1: Vec<Order> = (1..=500)
        .map(|i| Order::new(i, "new", BASE_US + i * MINUTE_US))
        .collect();
    let mut r2: Vec<Order> = (501..=800)
        .map(|i| Order::new(i, "new", BASE_US + 10 * HOUR_US + (i - 500) * 30_000_000))
        .collect();
    r2.extend(
        (1..=100)
            .map(|i| r1[(i - 1) as usize].version("paid", BASE_US + 12 * HOUR_US + i * 10_000_000)),
    );
    let wm2 = r2.iter().map(|o| o.updated_at_us).max().unwrap_or(0);
    let mut r3: Vec<Order> = (801..=805).map(|i| Order::new(i, "new", wm2)).collect();
    r3.extend((200..=210).map(|i| r1[(i - 1) as usize].version("shipped", wm2 - 30 * MINUTE_US)));
    r3.push(
        r2.iter()
            .find(|o| o.order_id == 50)
            .expect("order 50")
            .version("stale", wm2 - 70 * MINUTE_US),
    );
    r3.extend((806..=850).map(|i| Order::new(i, "new", wm2 + HOUR_US + (i - 805) * MINUTE_US)));
    vec![
        ("500 new orders".into(), r1),
        ("300 new orders, 100 updates".into(), r2),
        ("late updates inside the lookback, rows tied at the watermark, a late older version, 45 new".into(), r3),
    ]
}

/// The demo's pipeline spec.
pub const DEMO_SPEC: &str = r#"# tidemark demo pipeline (written by `tidemark demo`)
name = "demo_orders"
state_dir = ".tidemark"

[source]
kind = "parquet"
path = "data/orders"
cursor = "updated_at"
lookback = "2h"

[target]
kind = "delta"
path = "lake/orders"
mode = "merge"
key = ["order_id"]
partition_by = ["order_date"]

[monitor]
max_lag = "off"        # the demo's orders are dated 2026-01-01: no lag alert for them
empty_runs_alert = 3
spike_factor = 10
"#;

fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let spec_path = dir.join("orders.toml");
    if dir.exists() {
        let ours =
            std::fs::read_to_string(&spec_path).is_ok_and(|t| t.contains("tidemark demo pipeline"));
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !ours && !empty {
            bail!(
                "{} exists and is not a tidemark demo directory; pass --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(&spec_path, DEMO_SPEC)?;
    Ok(spec_path)
}

/// Runs the demo in `dir`. Prints progress when `print` is set.
pub async fn run(dir: &Path, keep: bool, print: bool) -> anyhow::Result<DemoReport> {
    let dir = std::path::absolute(dir)?;
    let spec_path = prepare_dir(&dir)?;
    let spec = crate::spec::load(&spec_path)?;
    let say = |s: String| {
        if print {
            println!("{s}");
        }
    };
    say(format!("tidemark demo in {}", dir.display()));
    say("starting a local Temporal dev server and a worker...".into());
    let server =
        crate::devserver::start(&dir.join(".tidemark").join("temporal.db"), None, true).await?;
    let settings = ConnectSettings::local(&server.address);
    // One connection for the worker and the runs it serves: the runs then start eagerly
    // (the server hands each first workflow task straight to this worker).
    let client = client::connect(&settings).await?;
    let task_queue = "tidemark-demo";
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = crate::worker::run(client.clone(), task_queue, async move {
        let _ = stop_rx.await;
    });
    let rounds = async {
        let report = demo_rounds(
            &spec,
            &spec_path,
            &client,
            task_queue,
            server.ui_port,
            keep,
            &say,
        )
        .await;
        let _ = stop_tx.send(());
        report
    };
    let (worker_result, report) = tokio::join!(worker, rounds);
    worker_result?;
    drop(server);
    report
}

async fn demo_rounds(
    spec: &tidemark_workflows::spec::PipelineSpec,
    spec_path: &Path,
    client: &client::Client,
    task_queue: &str,
    ui_port: Option<u16>,
    keep: bool,
    say: &impl Fn(String),
) -> anyhow::Result<DemoReport> {
    let ui_url = ui_port.map(|p| format!("http://127.0.0.1:{p}/namespaces/default/workflows"));

    let files = demo_files();
    let defaults = client::StartOptions::for_namespace(client).await;
    let mut rounds = Vec::new();
    say(format!(
        "\n{:>5}  {:<44}  {:>3}  {:>9}  {:>8}  {:<22}  {:>7}  {:>6}",
        "round", "source adds", "run", "extracted", "promoted", "watermark after", "version", "ms"
    ));
    for (i, (scenario, orders)) in files.iter().enumerate() {
        write_orders(
            &PathBuf::from(&spec.source.path).join(format!("part-{i:05}.parquet")),
            orders,
        )?;
        let started = std::time::Instant::now();
        let start = client::StartOptions {
            eager: true,
            ..defaults.clone()
        };
        let handle = client::start_run_with(client, spec, task_queue, start).await?;
        let summary = client::wait_run(&handle, Duration::from_secs(30), || {})
            .await
            .map_err(|e| anyhow::anyhow!("round {} failed: {}", i + 1, e.message))?;
        let p = &summary.progress;
        let r = RoundReport {
            round: i as u32 + 1,
            scenario: scenario.clone(),
            run_seq: p.run_seq,
            rows_extracted: p.rows_extracted,
            rows_promoted: p.rows_promoted,
            watermark_after: format_opt(p.watermark_after, p.cursor_type),
            target_version: p.target_version,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let short: String = r.scenario.chars().take(44).collect();
        say(format!(
            "{:>5}  {:<44}  {:>3}  {:>9}  {:>8}  {:<22}  {:>7}  {:>6}",
            r.round,
            short,
            r.run_seq.unwrap_or(0),
            r.rows_extracted,
            r.rows_promoted,
            r.watermark_after,
            r.target_version.map_or("-".into(), |v| v.to_string()),
            r.duration_ms
        ));
        rounds.push(r);
    }

    let model = newest_per_key(&files.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>());
    let table = read_orders_table(&spec.target.path).await?;
    let matches_oracle = table_matches(&table, &model);
    let report = DemoReport {
        rounds,
        table_rows: table.len(),
        expected_rows: model.len(),
        matches_oracle,
        table_path: spec.target.path.clone(),
        ui_url: ui_url.clone(),
    };
    say(format!(
        "\nfinal table {}: {} rows; source's newest version per key: {} keys; {}",
        report.table_path,
        report.table_rows,
        report.expected_rows,
        if matches_oracle {
            "they match (the late older version of order 50 did not win)"
        } else {
            "MISMATCH"
        }
    ));
    say(format!(
        "ledger and watermark: tidemark status {}",
        spec_path.display()
    ));
    if let Some(ui) = &ui_url {
        say(format!(
            "Temporal Web UI: {ui} (workflow id {})",
            tidemark_workflows::run_workflow_id(&spec.name)
        ));
    }
    if keep {
        say("server and worker keep running; Ctrl-C to stop".into());
        let _ = tokio::signal::ctrl_c().await;
    } else {
        say("(run with --keep to browse the runs in the Web UI)".into());
    }
    Ok(report)
}
