//! S4, orchestration overhead: an empty run (no new rows) and a 1-row run of a small Parquet →
//! Delta pipeline, each started and awaited by a fresh `tidemark run --json` process through a
//! dev server and a separate worker process, as an operator or a scheduler would. Reports the
//! end-to-end medians and where the time goes (per activity, and the workflow's own span).

use super::{Machine, median, min_max, run_checked, spawn_worker};
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tidemark::demo::{BASE_US, Order, write_orders};

/// One kind of run, measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunKind {
    /// `empty` or `1 row`.
    pub kind: String,
    /// End-to-end milliseconds per repetition (process start to exit).
    pub wall_ms: Vec<f64>,
    /// Median of the workflow's own duration (start to close), ms.
    pub workflow_ms: f64,
    /// Median time per activity (schedule to result), ms.
    pub activities_ms: BTreeMap<String, f64>,
    /// Median time spent inside the activities' own code (the run ledger), ms.
    pub inside_ms: BTreeMap<String, f64>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// Where and what.
    pub machine: Machine,
    /// Empty and 1-row runs on a dev server persisting to a SQLite file (as `tidemark dev`).
    pub runs: Vec<RunKind>,
    /// The same on a dev server keeping its state in memory (`temporal server start-dev`
    /// without `--db-filename`, the kind of server the reference figure is from).
    pub runs_in_memory: Vec<RunKind>,
}

#[derive(serde::Deserialize)]
struct Summary {
    status: String,
    rows_promoted: u64,
    workflow_duration_ms: u64,
    activities: Vec<Activity>,
}

#[derive(serde::Deserialize)]
struct Activity {
    activity: String,
    elapsed_ms: u64,
}

fn run_cli(bin: &Path, spec: &Path, address: &str, queue: &str) -> anyhow::Result<(f64, Summary)> {
    let started = Instant::now();
    let out = run_checked(
        Command::new(bin)
            .args(["run", "--json", "--address", address, "--task-queue", queue])
            .arg(spec),
        "tidemark run",
    )?;
    let wall = started.elapsed().as_secs_f64() * 1000.0;
    let s: Summary = serde_json::from_slice(&out).context("run summary")?;
    anyhow::ensure!(s.status == "succeeded", "run status {}", s.status);
    Ok((wall, s))
}

/// Repetitions of each kind of run at full size (`tidemark-bench overhead`'s default, `all`).
pub const FULL_REPS: usize = 15;

/// Runs the scenario with the `tidemark` binary `bin`: `reps` empty and `reps` 1-row runs,
/// alternating, on a file-backed dev server, then on an in-memory one.
pub async fn run(dir: &Path, reps: usize, bin: &Path) -> anyhow::Result<OverheadReport> {
    let _ = std::fs::remove_dir_all(dir);
    let server = tidemark::devserver::start(&dir.join("file/temporal.db"), None, false).await?;
    let runs = measure(&dir.join("file"), &server, reps, bin)?;
    drop(server);
    let server = tidemark::devserver::start_in_memory(None).await?;
    let runs_in_memory = measure(&dir.join("memory"), &server, reps, bin)?;
    drop(server);
    Ok(OverheadReport {
        machine: Machine::current(),
        runs,
        runs_in_memory,
    })
}

/// Empty and 1-row runs of a fresh pipeline in `dir` through `server` and a worker process.
fn measure(
    dir: &Path,
    server: &tidemark::devserver::DevServer,
    reps: usize,
    bin: &Path,
) -> anyhow::Result<Vec<RunKind>> {
    std::fs::create_dir_all(dir.join("data"))?;
    let bin = bin.to_path_buf();
    let queue = "bench-overhead";
    let mut worker = spawn_worker(&bin, &server.address, queue, None)?;
    let spec = dir.join("pipeline.toml");
    std::fs::write(
        &spec,
        "name = \"bench_overhead\"\nstate_dir = \"state\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n[target]\nkind = \"delta\"\npath = \"lake/orders\"\nkey = [\"order_id\"]\n[monitor]\nmax_lag = \"off\"\n",
    )?;
    let mut next = 1i64;
    let mut add_row = |dir: &Path| -> anyhow::Result<()> {
        let o = Order::new(next, "new", BASE_US + next * 1_000_000);
        write_orders(&dir.join(format!("data/part-{next:05}.parquet")), &[o])?;
        next += 1;
        Ok(())
    };
    add_row(dir)?;
    // Warm-up: the first run creates the table; the worker's caches fill.
    for _ in 0..3 {
        run_cli(&bin, &spec, &server.address, queue)?;
    }
    let mut empty = Vec::new();
    let mut one = Vec::new();
    for rep in 0..reps {
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_row in order {
            if with_row {
                add_row(dir)?;
            }
            let (wall, s) = run_cli(&bin, &spec, &server.address, queue)?;
            // The row at the watermark is re-read by every run (the window's lower bound is
            // inclusive) and merged as a no-op: only the new row is promoted.
            anyhow::ensure!(
                s.rows_promoted == u64::from(with_row),
                "expected {} row(s) promoted, got {}",
                u64::from(with_row),
                s.rows_promoted
            );
            if with_row { &mut one } else { &mut empty }.push((wall, s));
        }
    }
    let _ = worker.kill();
    let _ = worker.wait();
    // Time inside each activity's code, as the run ledger recorded it (stage's entry there is
    // the workflow's measurement, so it is left out).
    let ledger = tidemark::state::open_at(&dir.join("state").to_string_lossy(), "bench_overhead")?
        .read_ledger()?;
    let inside = |status: &str| -> BTreeMap<String, f64> {
        let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for e in ledger.iter().skip(3).filter(|e| e.status == status) {
            for (k, v) in &e.durations_ms {
                if k != "stage" {
                    per.entry(k.clone()).or_default().push(*v as f64);
                }
            }
        }
        per.into_iter().map(|(k, v)| (k, median(&v))).collect()
    };
    let kind = |name: &str, runs: &[(f64, Summary)]| {
        let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (_, s) in runs {
            for a in &s.activities {
                per.entry(a.activity.clone())
                    .or_default()
                    .push(a.elapsed_ms as f64);
            }
        }
        RunKind {
            kind: name.to_string(),
            wall_ms: runs.iter().map(|(w, _)| *w).collect(),
            workflow_ms: median(
                &runs
                    .iter()
                    .map(|(_, s)| s.workflow_duration_ms as f64)
                    .collect::<Vec<_>>(),
            ),
            activities_ms: per.into_iter().map(|(k, v)| (k, median(&v))).collect(),
            inside_ms: BTreeMap::new(),
        }
    };
    let mut runs = vec![kind("empty", &empty), kind("1 row", &one)];
    runs[0].inside_ms = inside("empty");
    runs[1].inside_ms = inside("succeeded");
    Ok(runs)
}

/// S4's rows of the summary table: each kind of run on each kind of server.
pub fn summary_rows(r: &OverheadReport) -> Vec<super::summary::Row> {
    let servers = [
        ("SQLite-file server", &r.runs),
        ("in-memory server", &r.runs_in_memory),
    ];
    let mut rows = Vec::new();
    for (server, runs) in servers {
        for k in runs.iter() {
            let m = median(&k.wall_ms);
            let (lo, hi) = min_max(&k.wall_ms);
            rows.push(super::summary::Row {
                scenario: "S4".into(),
                measure: format!("{} run end to end, {server}", k.kind),
                tidemark: format!("{m:.0} ms"),
                peer: "65 ms (4 no-op activities)".into(),
                ratio: format!("{:.1}× the no-op workflow", m / 65.0),
                min_max: format!("{lo:.0}–{hi:.0} ms"),
                target: "< 250 ms".into(),
                met: Some(m < 250.0),
            });
        }
    }
    rows
}

/// Writes S4 into the report at `out` (when given: section, figures, summary rows); returns
/// its markdown.
pub fn publish(out: Option<&Path>, r: &OverheadReport) -> anyhow::Result<String> {
    let md = markdown(r);
    super::publish(out, &[("overhead", &md)], "overhead", r, &summary_rows(r))?;
    Ok(md)
}

/// The report's section of `docs/benchmarks.md`.
pub fn markdown(r: &OverheadReport) -> String {
    let mut s = String::from("## S4 — orchestration overhead (`tidemark-bench overhead`)\n\n");
    s.push_str(&format!(
        "A fresh `tidemark run --json` process per run, through a local dev server and a separate `tidemark worker` process; Parquet source, Delta target (merge). {} repetitions of each kind, alternating, on two kinds of dev server: one persisting to a SQLite file (`--db-filename`, as `tidemark dev` runs it: every history event is a durable SQLite transaction) and one keeping its state in memory (`temporal server start-dev` without `--db-filename`). Target: median below 250 ms end to end. For scale (from the issue): four no-op activities started and awaited from a fresh CLI process take 60–70 ms on this machine's dev server. Machine: {} cores, commit `{}`, {} build.\n\n",
        r.runs.first().map_or(0, |k| k.wall_ms.len()),
        r.machine.cores,
        r.machine.commit,
        if r.machine.release_build { "release" } else { "debug" }
    ));
    s.push_str("![S4: where a run's time goes](bench/s4_overhead.png)\n\n");
    s.push_str("| server | run | median ms (end to end) | min–max ms | workflow ms | process | stage | promote | update_watermark |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let servers = [("SQLite file", &r.runs), ("in memory", &r.runs_in_memory)];
    for (server, runs) in servers {
        for k in runs.iter() {
            let (lo, hi) = min_max(&k.wall_ms);
            let act = |n: &str| {
                k.activities_ms
                    .get(n)
                    .map_or("–".to_string(), |v| format!("{v:.0}"))
            };
            s.push_str(&format!(
                "| {server} | {} | {:.0} | {:.0}–{:.0} | {:.0} | {} | {} | {} | {} |\n",
                k.kind,
                median(&k.wall_ms),
                lo,
                hi,
                k.workflow_ms,
                act("process"),
                act("stage"),
                act("promote"),
                act("update_watermark")
            ));
        }
    }
    s.push_str("\nInside the activities' own code (the run ledger's durations, medians, SQLite-file server):\n\n| run | process | promote | update_watermark |\n|---|---:|---:|---:|\n");
    for k in &r.runs {
        let inside = |n: &str| {
            k.inside_ms
                .get(n)
                .map_or("–".to_string(), |v| format!("{v:.0}"))
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            k.kind,
            inside("process"),
            inside("promote"),
            inside("update_watermark")
        ));
    }
    let worst = |runs: &[RunKind]| runs.iter().map(|k| median(&k.wall_ms)).fold(0f64, f64::max);
    let (file, memory) = (worst(&r.runs), worst(&r.runs_in_memory));
    s.push_str(&format!(
        "\nThe difference between end to end and the workflow's span is the CLI process (start-up, connecting, starting the workflow, awaiting its result). Activity times in the first table are schedule-to-result in workflow time; the difference to the time inside the activity is orchestration: server round trips between a workflow task and the next activity, each of which the server persists. Slowest median: **{memory:.0} ms** on the in-memory server ({}), **{file:.0} ms** on the SQLite-file server ({}).\n",
        verdict(memory),
        verdict(file)
    ));
    s
}

fn verdict(ms: f64) -> String {
    if ms < 250.0 {
        "target met".into()
    } else {
        format!("target missed by {:.0} ms", ms - 250.0)
    }
}
