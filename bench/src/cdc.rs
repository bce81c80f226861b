//! S3, CDC apply: N Debezium events (60% updates, 10% deletes, 30% inserts) applied to an
//! R-row table by tidemark (one run of the `debezium-jsonl` pipeline into Delta, in-process:
//! process, stage, promote, watermark update) and by the peer's one-event-at-a-time applier
//! (`seed_cdc.py`) on a prefix of the same events against the same table, alternating.
//! Both results are checked against the generator's model of the table.

use super::{Machine, median, min_max, run_checked};
use anyhow::{Context, ensure};
use polars::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tidemark::run_steps;
use tidemark_workflows::payloads::{CommitInput, RunIdentity, WatermarkInput};

/// What to measure.
#[derive(Debug, Clone)]
pub struct CdcBenchArgs {
    /// Rows of the table the events apply to.
    pub rows: usize,
    /// Events tidemark applies (also measured at a tenth, for linearity).
    pub events: usize,
    /// Events the peer applies (it is quadratic: a size it can finish).
    pub peer_events: usize,
    /// Repetitions of each measurement.
    pub reps: usize,
    /// Working directory (recreated).
    pub dir: PathBuf,
    /// Skip the peer (no Python).
    pub no_peer: bool,
}

impl CdcBenchArgs {
    /// The full-size scenario: 1,000,000 events on a 1,000,000-row table, the peer at 1,000.
    pub fn full(dir: PathBuf) -> Self {
        CdcBenchArgs {
            rows: 1_000_000,
            events: 1_000_000,
            peer_events: 1_000,
            reps: 5,
            dir,
            no_peer: false,
        }
    }

    /// Tiny sizes, one repetition: what the test suite runs so the code cannot rot.
    pub fn quick(dir: PathBuf, no_peer: bool) -> Self {
        CdcBenchArgs {
            rows: 2_000,
            events: 2_000,
            peer_events: 200,
            reps: 1,
            dir,
            no_peer,
        }
    }
}

/// One measurement series.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Who: `tidemark` or `peer`.
    pub who: String,
    /// Events applied per run.
    pub events: usize,
    /// Seconds per repetition.
    pub seconds: Vec<f64>,
    /// Median events per second.
    pub events_per_s: f64,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct CdcBenchReport {
    /// Where and what.
    pub machine: Machine,
    /// Table rows.
    pub rows: usize,
    /// Measurements.
    pub series: Vec<Series>,
    /// tidemark events/s at `events` ÷ the peer's events/s at `peer_events`.
    pub ratio_at_scale: Option<f64>,
    /// tidemark events/s ÷ the peer's, both on the peer's event count.
    pub ratio_same_events: Option<f64>,
    /// Per-event cost at `events` ÷ per-event cost at a tenth of it (1.0 = linear).
    pub linearity: f64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const STATUSES: [&str; 4] = ["new", "paid", "shipped", "cancelled"];
const BASE_US: i64 = 1_767_225_600_000_000;

fn row_json(id: i64, rng: &mut Rng, ts_us: i64) -> String {
    format!(
        r#"{{"order_id":{id},"customer_id":{},"status":"{}","amount":{}.{:02},"updated_at":{ts_us}}}"#,
        rng.next() % 50_000,
        STATUSES[(rng.next() % 4) as usize],
        rng.next() % 500,
        rng.next() % 100
    )
}

/// The generated data: the base table, its snapshot events, the change events, and the
/// table's key set after each prefix that is measured.
struct Data {
    base_rows: Vec<String>,
    events: Vec<String>,
}

fn generate(rows: usize, events: usize) -> Data {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let base_rows: Vec<String> = (0..rows as i64)
        .map(|id| row_json(id, &mut rng, BASE_US + id))
        .collect();
    let mut alive: Vec<i64> = (0..rows as i64).collect();
    let mut slot: HashMap<i64, usize> = alive.iter().map(|&k| (k, k as usize)).collect();
    let mut next_id = rows as i64;
    let mut out = Vec::with_capacity(events);
    for i in 0..events {
        let lsn = 10 + i as i64;
        let ts_ms = BASE_US / 1000 + 86_400_000 + i as i64;
        let roll = rng.next() % 100;
        let (op, before, after) = if roll < 60 && !alive.is_empty() {
            let k = alive[(rng.next() % alive.len() as u64) as usize];
            ("u", "null".to_string(), row_json(k, &mut rng, ts_ms * 1000))
        } else if roll < 70 && !alive.is_empty() {
            let k = alive[(rng.next() % alive.len() as u64) as usize];
            let at = slot.remove(&k).expect("alive");
            let last = alive.pop().expect("nonempty");
            if last != k {
                alive[at] = last;
                slot.insert(last, at);
            }
            ("d", format!(r#"{{"order_id":{k}}}"#), "null".to_string())
        } else {
            let k = next_id;
            next_id += 1;
            slot.insert(k, alive.len());
            alive.push(k);
            ("c", "null".to_string(), row_json(k, &mut rng, ts_ms * 1000))
        };
        out.push(format!(
            r#"{{"before":{before},"after":{after},"source":{{"connector":"postgresql","lsn":{lsn},"ts_ms":{ts_ms}}},"op":"{op}","ts_ms":{ts_ms}}}"#
        ));
    }
    Data {
        base_rows,
        events: out,
    }
}

/// (rows, sum of order_id) of the table the first `n` events leave.
fn model_after(data: &Data, n: usize) -> (u64, i128) {
    let mut keys: std::collections::HashSet<i64> = (0..data.base_rows.len() as i64).collect();
    for e in &data.events[..n] {
        let v: serde_json::Value = serde_json::from_str(e).expect("generated JSON");
        let row = if v["op"] == "d" {
            &v["before"]
        } else {
            &v["after"]
        };
        let k = row["order_id"].as_i64().expect("key");
        if v["op"] == "d" {
            keys.remove(&k);
        } else {
            keys.insert(k);
        }
    }
    (keys.len() as u64, keys.iter().map(|&k| k as i128).sum())
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for l in lines {
        f.write_all(l.as_bytes())?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// The peer's target: the base table as Parquet (the events' column types).
fn write_base_parquet(data: &Data, path: &Path) -> anyhow::Result<()> {
    let mut ids = Vec::with_capacity(data.base_rows.len());
    let mut customers = Vec::with_capacity(ids.capacity());
    let mut statuses = Vec::with_capacity(ids.capacity());
    let mut amounts = Vec::with_capacity(ids.capacity());
    let mut updated = Vec::with_capacity(ids.capacity());
    for r in &data.base_rows {
        let v: serde_json::Value = serde_json::from_str(r)?;
        ids.push(v["order_id"].as_i64().unwrap_or_default());
        customers.push(v["customer_id"].as_i64().unwrap_or_default());
        statuses.push(v["status"].as_str().unwrap_or_default().to_string());
        amounts.push(v["amount"].as_f64().unwrap_or_default());
        updated.push(v["updated_at"].as_i64().unwrap_or_default());
    }
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("order_id".into(), ids),
        Column::new("customer_id".into(), customers),
        Column::new("status".into(), statuses),
        Column::new("amount".into(), amounts),
        Column::new("updated_at".into(), updated),
    ])?;
    ParquetWriter::new(std::fs::File::create(path)?).finish(&mut df)?;
    Ok(())
}

fn identity() -> RunIdentity {
    RunIdentity {
        workflow_id: "bench".into(),
        run_id: "bench".into(),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// One run through the four steps, in-process; returns its wall time.
async fn run_once(spec: &tidemark_workflows::spec::PipelineSpec) -> anyhow::Result<f64> {
    let started = Instant::now();
    let manifest = run_steps::process(spec.clone()).await?;
    let input = CommitInput {
        spec: spec.clone(),
        run: identity(),
        manifest,
    };
    let mut promote = None;
    if input.manifest.has_rows() {
        run_steps::stage(input.clone()).await?;
        promote = Some(run_steps::promote(input.clone()).await?);
    }
    run_steps::update_watermark(WatermarkInput {
        commit: input,
        promote,
        stage_ms: 0,
    })
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// (rows, sum of order_id) of a Delta table.
async fn table_summary(table: &str) -> anyhow::Result<(u64, i128)> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::Int64Type;
    let batches = tidemark::target::delta::read_all(table).await?;
    let mut rows = 0u64;
    let mut sum = 0i128;
    for b in batches {
        let ids = b.column_by_name("order_id").context("order_id")?;
        for v in ids.as_primitive::<Int64Type>().iter().flatten() {
            sum += v as i128;
        }
        rows += b.num_rows() as u64;
    }
    Ok((rows, sum))
}

/// tidemark applies the first `n` events to the table (loaded untimed from a snapshot).
async fn tidemark_apply(data: &Data, snapshot: &Path, n: usize, dir: &Path) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let events = dir.join("events");
    std::fs::create_dir_all(&events)?;
    std::fs::copy(snapshot, events.join("0-snapshot.jsonl"))?;
    let spec_path = dir.join("pipeline.toml");
    std::fs::write(
        &spec_path,
        format!(
            "name = \"bench_cdc\"\nstate_dir = \"state\"\n[source]\nkind = \"debezium-jsonl\"\npath = \"events\"\nkey = [\"order_id\"]\nmax_events = {}\n[target]\nkind = \"delta\"\npath = \"lake/orders\"\n[monitor]\nmax_lag = \"off\"\n",
            data.base_rows.len()
        ),
    )?;
    let mut spec = tidemark::spec::load(&spec_path)?;
    run_once(&spec).await.context("load the base table")?;
    write_lines(
        &events.join("1-stream.jsonl"),
        data.events[..n].iter().cloned(),
    )?;
    spec.source.cdc.as_mut().expect("cdc").max_events = n as u64;
    let seconds = run_once(&spec).await.context("apply the events")?;
    let got = table_summary(&spec.target.path).await?;
    let want = model_after(data, n);
    ensure!(
        got == want,
        "tidemark's table {got:?} differs from the model {want:?}"
    );
    Ok(seconds)
}

#[derive(serde::Deserialize)]
struct PeerOut {
    events: usize,
    rows: u64,
    seconds: f64,
}

fn peer_apply(
    python: &Path,
    script: &Path,
    events: &Path,
    base: &Path,
    out: &Path,
    want_rows: u64,
) -> anyhow::Result<f64> {
    let stdout = run_checked(
        std::process::Command::new(python)
            .arg(script)
            .arg(events)
            .arg(base)
            .arg(out),
        "the peer (seed_cdc.py)",
    )?;
    let text = String::from_utf8_lossy(&stdout);
    let line = text.lines().last().unwrap_or_default();
    let r: PeerOut = serde_json::from_str(line).with_context(|| format!("peer output {line:?}"))?;
    ensure!(
        r.rows == want_rows,
        "the peer's table has {} rows, the model {want_rows} (after {} events)",
        r.rows,
        r.events
    );
    Ok(r.seconds)
}

/// Runs the scenario.
pub async fn run(args: &CdcBenchArgs) -> anyhow::Result<CdcBenchReport> {
    let machine = Machine::current();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    eprintln!(
        "generating a {}-row table and {} events",
        args.rows,
        args.events.max(args.peer_events)
    );
    let data = generate(args.rows, args.events.max(args.peer_events));
    let snapshot = args.dir.join("snapshot.jsonl");
    write_lines(
        &snapshot,
        data.base_rows.iter().map(|r| {
            format!(r#"{{"before":null,"after":{r},"source":{{"lsn":1,"ts_ms":1767225600000}},"op":"r","ts_ms":1767225600000}}"#)
        }),
    )?;
    let peer = if args.no_peer {
        None
    } else {
        let python = super::peer_python()?;
        let script = super::peer_dir()?.join("seed_cdc.py");
        let base = args.dir.join("base.parquet");
        write_base_parquet(&data, &base)?;
        let events = args.dir.join("peer-events.jsonl");
        write_lines(&events, data.events[..args.peer_events].iter().cloned())?;
        Some((python, script, base, events))
    };
    let tenth = (args.events / 10).max(1);
    let mut sizes = vec![tenth, args.events];
    if peer.is_some() {
        sizes.push(args.peer_events);
    }
    sizes.sort_unstable();
    sizes.dedup();
    let mut tm: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut peer_s = Vec::new();
    let peer_rows = model_after(&data, args.peer_events).0;
    for rep in 0..args.reps {
        // Alternate: the peer first on even repetitions, tidemark first on odd ones.
        let mut order = vec![false, true];
        if rep % 2 == 1 {
            order.reverse();
        }
        for is_peer in order {
            if is_peer {
                if let Some((python, script, base, events)) = &peer {
                    let s = peer_apply(
                        python,
                        script,
                        events,
                        base,
                        &args.dir.join("peer-out.parquet"),
                        peer_rows,
                    )?;
                    eprintln!("  rep {rep}: peer {} events in {s:.3} s", args.peer_events);
                    peer_s.push(s);
                }
            } else {
                for (i, &n) in sizes.iter().enumerate() {
                    let s = tidemark_apply(&data, &snapshot, n, &args.dir.join("tm")).await?;
                    eprintln!("  rep {rep}: tidemark {n} events in {s:.3} s");
                    tm[i].push(s);
                }
            }
        }
    }
    let mut series: Vec<Series> = sizes
        .iter()
        .zip(&tm)
        .map(|(&n, s)| Series {
            who: "tidemark".into(),
            events: n,
            seconds: s.clone(),
            events_per_s: n as f64 / median(s),
        })
        .collect();
    let eps = |n: usize| {
        series
            .iter()
            .find(|s| s.who == "tidemark" && s.events == n)
            .map(|s| s.events_per_s)
    };
    let tm_full = eps(args.events).unwrap_or(f64::NAN);
    let tm_tenth = eps(tenth).unwrap_or(f64::NAN);
    let tm_same = eps(args.peer_events);
    let mut ratio_at_scale = None;
    let mut ratio_same_events = None;
    if !peer_s.is_empty() {
        let peer_eps = args.peer_events as f64 / median(&peer_s);
        ratio_at_scale = Some(tm_full / peer_eps);
        ratio_same_events = tm_same.map(|t| t / peer_eps);
        series.push(Series {
            who: "peer".into(),
            events: args.peer_events,
            seconds: peer_s,
            events_per_s: peer_eps,
        });
    }
    let _ = std::fs::remove_dir_all(args.dir.join("tm"));
    Ok(CdcBenchReport {
        machine,
        rows: args.rows,
        series,
        ratio_at_scale,
        ratio_same_events,
        linearity: tm_tenth / tm_full,
    })
}

/// S3's row of the summary table.
pub fn summary_rows(r: &CdcBenchReport) -> Vec<super::summary::Row> {
    let best = |who: &str| {
        r.series
            .iter()
            .filter(|s| s.who == who)
            .max_by_key(|s| s.events)
    };
    let (Some(t), Some(p)) = (best("tidemark"), best("peer")) else {
        return Vec::new();
    };
    let (lo, hi) = min_max(&t.seconds);
    let ratio = r.ratio_at_scale.unwrap_or(t.events_per_s / p.events_per_s);
    vec![super::summary::Row {
        scenario: "S3".into(),
        measure: format!(
            "events/s applied into a {}-row table ({} events vs the peer's {})",
            r.rows, t.events, p.events
        ),
        tidemark: format!("{:.0} events/s", t.events_per_s),
        peer: format!("{:.0} events/s", p.events_per_s),
        ratio: format!("{ratio:.0}×"),
        min_max: format!("{lo:.2}–{hi:.2} s"),
        target: "≥ 100×".into(),
        met: Some(ratio >= 100.0),
    }]
}

/// Writes S3 into the report at `out` (when given: section, figures, summary rows); returns
/// its markdown.
pub fn publish(out: Option<&Path>, r: &CdcBenchReport) -> anyhow::Result<String> {
    let md = markdown(r);
    super::publish(out, &[("cdc", &md)], "cdc", r, &summary_rows(r))?;
    Ok(md)
}

/// The report's section of `docs/benchmarks.md`.
pub fn markdown(r: &CdcBenchReport) -> String {
    let mut s = String::new();
    s.push_str("## S3 — CDC apply (`tidemark-bench cdc`)\n\n");
    s.push_str(&format!(
        "{} Debezium events (60% updates, 10% deletes, 30% inserts) applied to a {}-row table. tidemark: one `debezium-jsonl` run into Delta, in-process (process, stage, promote, watermark update; the base table loaded before, untimed). Peer: `seed_cdc.py` (one event at a time) on a prefix of the same events, same table. {} repetitions, alternating; medians. Both results checked against the generator's model. Machine: {} cores, commit `{}`, {} build.\n\n",
        r.series.iter().filter(|s| s.who == "tidemark").map(|s| s.events).max().unwrap_or(0),
        r.rows,
        r.series.first().map_or(0, |s| s.seconds.len()),
        r.machine.cores,
        r.machine.commit,
        if r.machine.release_build { "release" } else { "debug" }
    ));
    s.push_str("![S3: events per second](bench/s3_cdc.png)\n\n");
    s.push_str("| who | events | median s | min–max s | events/s |\n|---|---:|---:|---:|---:|\n");
    for x in &r.series {
        let (lo, hi) = min_max(&x.seconds);
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3}–{:.3} | {:.0} |\n",
            x.who,
            x.events,
            median(&x.seconds),
            lo,
            hi,
            x.events_per_s
        ));
    }
    s.push('\n');
    if let Some(ratio) = r.ratio_at_scale {
        s.push_str(&format!(
            "- **Ratio: {ratio:.0}×** the peer's events per second (target ≥ 100×): tidemark at its full batch vs the peer at the size it can finish, both on the {}-row table.\n",
            r.rows
        ));
    }
    if let Some(ratio) = r.ratio_same_events {
        s.push_str(&format!(
            "- On the peer's own event count: {ratio:.0}× (tidemark's fixed cost per run — one MERGE over the table — dominates small batches).\n"
        ));
    }
    s.push_str(&format!(
        "- Linearity: per-event cost at the full batch ÷ at a tenth of it = {:.2} (1.0 = linear; below 1, the fixed cost per run is spread over more events).\n",
        r.linearity
    ));
    s
}
