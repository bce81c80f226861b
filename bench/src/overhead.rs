//! S4, orchestration overhead: an empty run (no new rows) and a 1-row run of a small Parquet →
//! Delta pipeline, each started and awaited by a fresh `tidemark run --json` process through a
//! dev server and a separate worker process, as an operator or a scheduler would. Four
//! variants: today's path (every step a regular activity, the server's default dispatch),
//! eager activity dispatch on the server, local activities, and both. Beside them, in the
//! same server, the no-op floor: `tidemark ping --activities 4` from a fresh CLI process (a
//! workflow of four no-op regular activities). Reports end-to-end medians, the ratio to the
//! floor, where the time goes (per activity) and the server work per run (history events,
//! workflow tasks).

use super::{Machine, median, min_max, run_checked, spawn_worker};
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tidemark::client::{self, ConnectSettings};
use tidemark::demo::{BASE_US, Order, write_orders};

/// A way of running a pipeline's steps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Variant {
    /// Its name in the report.
    pub name: &'static str,
    /// The dev server dispatches activities eagerly.
    pub eager_dispatch: bool,
    /// The pipeline's short steps run as local activities (`[execution] local_activities`).
    pub local_activities: bool,
}

/// The variants, in report order. The last is what tidemark ships (its dev servers turn
/// eager dispatch on; local activities are the spec's default).
pub const VARIANTS: [Variant; 4] = [
    Variant {
        name: "today's path",
        eager_dispatch: false,
        local_activities: false,
    },
    Variant {
        name: "eager dispatch",
        eager_dispatch: true,
        local_activities: false,
    },
    Variant {
        name: "local activities",
        eager_dispatch: false,
        local_activities: true,
    },
    Variant {
        name: "both",
        eager_dispatch: true,
        local_activities: true,
    },
];

/// The targets (median end to end, ms) of an empty and a 1-row run.
pub const TARGET_EMPTY_MS: f64 = 80.0;
/// See [`TARGET_EMPTY_MS`].
pub const TARGET_ONE_ROW_MS: f64 = 110.0;

/// One kind of run of one variant, measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunKind {
    /// The variant's name.
    pub variant: String,
    /// `empty` or `1 row`.
    pub kind: String,
    /// End-to-end milliseconds per repetition (process start to exit).
    pub wall_ms: Vec<f64>,
    /// Median of the workflow's own duration as it reports it, ms.
    pub workflow_ms: f64,
    /// Median time per activity (schedule to result, in workflow time), ms.
    pub activities_ms: BTreeMap<String, f64>,
    /// Steps that ran as local activities (in the last repetition).
    pub local_steps: Vec<String>,
    /// History events per run (median).
    pub history_events: f64,
    /// Workflow tasks per run (median).
    pub workflow_tasks: f64,
}

/// The no-op floor on one server: `tidemark ping --activities 4` from a fresh CLI process.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Whether that server dispatched activities eagerly.
    pub eager_dispatch: bool,
    /// End-to-end milliseconds per repetition.
    pub wall_ms: Vec<f64>,
    /// History events of one ping (median).
    pub history_events: f64,
    /// Workflow tasks of one ping (median).
    pub workflow_tasks: f64,
}

/// Every variant on one kind of dev server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRuns {
    /// `SQLite file` or `in memory`.
    pub server: String,
    /// Each variant's empty and 1-row runs.
    pub kinds: Vec<RunKind>,
    /// The floor on the server with and without eager dispatch.
    pub floors: Vec<Floor>,
}

impl ServerRuns {
    /// The floor measured on the server the variant ran on.
    pub fn floor_of(&self, variant: &str) -> Option<&Floor> {
        let v = VARIANTS.iter().find(|v| v.name == variant)?;
        self.floors
            .iter()
            .find(|f| f.eager_dispatch == v.eager_dispatch)
    }

    /// A variant's kind of run.
    pub fn kind(&self, variant: &str, kind: &str) -> Option<&RunKind> {
        self.kinds
            .iter()
            .find(|k| k.variant == variant && k.kind == kind)
    }
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// Where and what.
    pub machine: Machine,
    /// A dev server persisting to a SQLite file (as `tidemark dev`), then one keeping its
    /// state in memory (`temporal server start-dev` without `--db-filename`).
    pub servers: Vec<ServerRuns>,
}

#[derive(serde::Deserialize)]
struct Summary {
    status: String,
    workflow_id: String,
    rows_promoted: u64,
    workflow_duration_ms: u64,
    activities: Vec<Activity>,
}

#[derive(serde::Deserialize)]
struct Activity {
    activity: String,
    elapsed_ms: u64,
    #[serde(default)]
    local: bool,
}

/// One measured CLI process: its wall time and the history it left.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall_ms: f64,
    events: u32,
    tasks: u32,
}

/// The median of `f` over `xs`.
fn median_of<T>(xs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&xs.iter().map(f).collect::<Vec<_>>())
}

#[derive(serde::Deserialize)]
struct PingOut {
    workflow_id: String,
}

/// Runs `bin` with `args` plus the server's address and queue; (wall ms, stdout).
fn run_cli(
    bin: &Path,
    args: &[&str],
    address: &str,
    queue: &str,
    what: &str,
) -> anyhow::Result<(f64, Vec<u8>)> {
    let started = Instant::now();
    let out = run_checked(
        Command::new(bin)
            .args(args)
            .args(["--address", address, "--task-queue", queue]),
        what,
    )?;
    Ok((started.elapsed().as_secs_f64() * 1000.0, out))
}

/// Repetitions of each kind of run at full size (`tidemark-bench overhead`'s default, `all`).
pub const FULL_REPS: usize = 15;

/// Runs the scenario with the `tidemark` binary `bin`: on a file-backed dev server, then an
/// in-memory one, each with eager dispatch off and on, `reps` repetitions of each variant's
/// empty and 1-row runs and of the floor, alternating.
pub async fn run(dir: &Path, reps: usize, bin: &Path) -> anyhow::Result<OverheadReport> {
    let _ = std::fs::remove_dir_all(dir);
    let mut servers = Vec::new();
    for (name, sub, file_backed) in [
        ("SQLite file", "file", true),
        ("in memory", "memory", false),
    ] {
        let mut runs = ServerRuns {
            server: name.to_string(),
            kinds: Vec::new(),
            floors: Vec::new(),
        };
        for eager in [false, true] {
            let here = dir.join(sub).join(if eager { "eager" } else { "default" });
            let db = here.join("temporal.db");
            let server = tidemark::devserver::start_configured(
                file_backed.then_some(db.as_path()),
                None,
                false,
                eager,
            )
            .await?;
            let (kinds, floor) = measure(&here, &server.address, eager, reps, bin).await?;
            drop(server);
            runs.kinds.extend(kinds);
            runs.floors.push(floor);
        }
        // Report order: the variants' order.
        runs.kinds.sort_by_key(|k| {
            let v = VARIANTS.iter().position(|v| v.name == k.variant);
            (v, k.kind != "empty")
        });
        servers.push(runs);
    }
    Ok(OverheadReport {
        machine: Machine::current(),
        servers,
    })
}

/// One pipeline of the scenario: its spec and the rows added so far.
struct Bench {
    spec: std::path::PathBuf,
    variant: Variant,
    next: i64,
    empty: Vec<(Sample, Summary)>,
    one: Vec<(Sample, Summary)>,
}

impl Bench {
    fn new(dir: &Path, variant: Variant) -> anyhow::Result<Bench> {
        std::fs::create_dir_all(dir.join("data"))?;
        let spec = dir.join("pipeline.toml");
        let mode = if variant.local_activities {
            "auto"
        } else {
            "off"
        };
        std::fs::write(
            &spec,
            format!(
                "name = \"bench_overhead\"\nstate_dir = \"state\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n[target]\nkind = \"delta\"\npath = \"lake/orders\"\nkey = [\"order_id\"]\n[monitor]\nmax_lag = \"off\"\n[execution]\nlocal_activities = \"{mode}\"\n"
            ),
        )?;
        let mut b = Bench {
            spec,
            variant,
            next: 1,
            empty: Vec::new(),
            one: Vec::new(),
        };
        b.add_row()?;
        Ok(b)
    }

    fn add_row(&mut self) -> anyhow::Result<()> {
        let dir = self.spec.parent().expect("spec in a directory");
        let o = Order::new(self.next, "new", BASE_US + self.next * 1_000_000);
        write_orders(
            &dir.join(format!("data/part-{:05}.parquet", self.next)),
            &[o],
        )?;
        self.next += 1;
        Ok(())
    }

    /// One run; `with_row` adds a row first.
    async fn run(
        &mut self,
        bin: &Path,
        address: &str,
        queue: &str,
        client: &client::Client,
        with_row: Option<bool>,
    ) -> anyhow::Result<()> {
        if with_row == Some(true) {
            self.add_row()?;
        }
        let spec = self.spec.to_string_lossy().into_owned();
        let (wall, out) = run_cli(
            bin,
            &["run", "--json", &spec],
            address,
            queue,
            "tidemark run",
        )?;
        let s: Summary = serde_json::from_slice(&out).context("run summary")?;
        anyhow::ensure!(s.status == "succeeded", "run status {}", s.status);
        let Some(with_row) = with_row else {
            return Ok(()); // a warm-up
        };
        // The row at the watermark is re-read by every run (the window's lower bound is
        // inclusive) and merged as a no-op: only the new row is promoted.
        anyhow::ensure!(
            s.rows_promoted == u64::from(with_row),
            "expected {} row(s) promoted, got {}",
            u64::from(with_row),
            s.rows_promoted
        );
        let (events, tasks) = client::history_shape(client, &s.workflow_id).await?;
        let sample = Sample {
            wall_ms: wall,
            events,
            tasks,
        };
        if with_row {
            &mut self.one
        } else {
            &mut self.empty
        }
        .push((sample, s));
        Ok(())
    }

    fn kinds(&self) -> Vec<RunKind> {
        let kind = |name: &str, runs: &[(Sample, Summary)]| {
            let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for (_, s) in runs {
                for a in &s.activities {
                    per.entry(a.activity.clone())
                        .or_default()
                        .push(a.elapsed_ms as f64);
                }
            }
            RunKind {
                variant: self.variant.name.to_string(),
                kind: name.to_string(),
                wall_ms: runs.iter().map(|(m, _)| m.wall_ms).collect(),
                workflow_ms: median_of(runs, |(_, s)| s.workflow_duration_ms as f64),
                activities_ms: per.into_iter().map(|(k, v)| (k, median(&v))).collect(),
                local_steps: runs.last().map_or(Vec::new(), |(_, s)| {
                    s.activities
                        .iter()
                        .filter(|a| a.local)
                        .map(|a| a.activity.clone())
                        .collect()
                }),
                history_events: median_of(runs, |(m, _)| f64::from(m.events)),
                workflow_tasks: median_of(runs, |(m, _)| f64::from(m.tasks)),
            }
        };
        vec![kind("empty", &self.empty), kind("1 row", &self.one)]
    }
}

/// On one server (eager dispatch `eager`): both variants that server serves, and the floor,
/// through one worker process; `reps` rounds, each in a rotated order.
async fn measure(
    dir: &Path,
    address: &str,
    eager: bool,
    reps: usize,
    bin: &Path,
) -> anyhow::Result<(Vec<RunKind>, Floor)> {
    let queue = "bench-overhead";
    let mut worker = spawn_worker(bin, address, queue, None)?;
    let client = client::connect(&ConnectSettings::local(address)).await?;
    let mut benches = Vec::new();
    for v in VARIANTS.iter().filter(|v| v.eager_dispatch == eager) {
        let sub = if v.local_activities {
            "local"
        } else {
            "regular"
        };
        benches.push(Bench::new(&dir.join(sub), *v)?);
    }
    // Warm-up: the first run creates the table, the next ones make the watermark recent (a
    // local `process` needs that); the worker's caches fill.
    for b in &mut benches {
        for _ in 0..3 {
            b.run(bin, address, queue, &client, None).await?;
        }
    }
    let ping = |client: &client::Client| {
        let client = client.clone();
        async move {
            let (wall, out) = run_cli(
                bin,
                &["ping", "--activities", "4", "--json"],
                address,
                queue,
                "tidemark ping",
            )?;
            let p: PingOut = serde_json::from_slice(&out).context("ping output")?;
            let (events, tasks) = client::history_shape(&client, &p.workflow_id).await?;
            anyhow::Ok(Sample {
                wall_ms: wall,
                events,
                tasks,
            })
        }
    };
    ping(&client).await?;
    // Items of a round: (bench, with_row) or the floor (None).
    let mut items: Vec<Option<(usize, bool)>> = Vec::new();
    for i in 0..benches.len() {
        items.push(Some((i, false)));
        items.push(Some((i, true)));
    }
    items.push(None);
    let mut floor = Vec::new();
    for rep in 0..reps {
        let mut round = items.clone();
        round.rotate_left(rep % items.len());
        for item in round {
            match item {
                Some((i, with_row)) => {
                    benches[i]
                        .run(bin, address, queue, &client, Some(with_row))
                        .await?
                }
                None => floor.push(ping(&client).await?),
            }
        }
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let kinds = benches.iter().flat_map(Bench::kinds).collect();
    let floor = Floor {
        eager_dispatch: eager,
        wall_ms: floor.iter().map(|m| m.wall_ms).collect(),
        history_events: median_of(&floor, |m| f64::from(m.events)),
        workflow_tasks: median_of(&floor, |m| f64::from(m.tasks)),
    };
    Ok((kinds, floor))
}

/// The variant tidemark ships.
const SHIPPED: &str = "both";
/// The variant before this work.
const BASELINE: &str = "today's path";

/// S4's rows of the summary table: the shipped path's empty and 1-row runs on each server,
/// and the server work per 1-row run against today's path.
pub fn summary_rows(r: &OverheadReport) -> Vec<super::summary::Row> {
    let mut rows = Vec::new();
    for s in &r.servers {
        let floor = s.floor_of(SHIPPED).map_or(f64::NAN, |f| median(&f.wall_ms));
        for (kind, target) in [("empty", TARGET_EMPTY_MS), ("1 row", TARGET_ONE_ROW_MS)] {
            let Some(k) = s.kind(SHIPPED, kind) else {
                continue;
            };
            let m = median(&k.wall_ms);
            let (lo, hi) = min_max(&k.wall_ms);
            rows.push(super::summary::Row {
                scenario: "S4".into(),
                measure: format!("{kind} run end to end, {} server", s.server),
                tidemark: format!("{m:.0} ms"),
                peer: format!("{floor:.0} ms (4 no-op activities)"),
                ratio: format!("{:.1}× the no-op workflow", m / floor),
                min_max: format!("{lo:.0}–{hi:.0} ms"),
                target: format!("≤ {target:.0} ms"),
                met: Some(m <= target),
            });
        }
        if let (Some(new), Some(old)) = (s.kind(SHIPPED, "1 row"), s.kind(BASELINE, "1 row")) {
            rows.push(super::summary::Row {
                scenario: "S4".into(),
                measure: format!(
                    "history events / workflow tasks per 1-row run, {} server",
                    s.server
                ),
                tidemark: format!("{:.0} / {:.0}", new.history_events, new.workflow_tasks),
                peer: format!(
                    "{:.0} / {:.0} (today's path)",
                    old.history_events, old.workflow_tasks
                ),
                ratio: format!(
                    "{:.2}× / {:.2}×",
                    new.history_events / old.history_events,
                    new.workflow_tasks / old.workflow_tasks
                ),
                min_max: "–".into(),
                target: "≤ 0.5× both".into(),
                met: Some(
                    new.history_events <= 0.5 * old.history_events
                        && new.workflow_tasks <= 0.5 * old.workflow_tasks,
                ),
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

fn ms_or_dash(v: Option<&f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.0}"))
}

/// The report's section of `docs/benchmarks.md`.
pub fn markdown(r: &OverheadReport) -> String {
    let mut s = String::from("## S4 — orchestration overhead (`tidemark-bench overhead`)\n\n");
    let reps = r
        .servers
        .first()
        .and_then(|s| s.kinds.first())
        .map_or(0, |k| k.wall_ms.len());
    s.push_str(&format!(
        "A fresh `tidemark run --json` process per run, through a local dev server and a separate `tidemark worker` process; Parquet source, Delta target (merge). Four variants: **today's path** (every step a regular activity, the server's default dispatch: `[execution] local_activities = \"off\"`), **eager dispatch** (the server started with `system.enableActivityEagerExecution=true`), **local activities** (the spec's default, `auto`) and **both** (what tidemark ships: its dev servers turn eager dispatch on). The **floor** is `tidemark ping --activities 4` from a fresh CLI process on the same server and worker: a workflow of four no-op regular activities. {reps} repetitions of each, alternating within a server; each server twice (eager dispatch off, then on), persisting to a SQLite file (`--db-filename`, as `tidemark dev` runs it) and in memory. Targets: median end to end ≤ {TARGET_EMPTY_MS:.0} ms for an empty run, ≤ {TARGET_ONE_ROW_MS:.0} ms for a 1-row run; history events and workflow tasks per run halved. Machine: {} cores, commit `{}`, {} build.\n\n",
        r.machine.cores,
        r.machine.commit,
        if r.machine.release_build { "release" } else { "debug" }
    ));
    s.push_str("![S4: end to end per variant](bench/s4_overhead.png)\n\n");
    s.push_str("| server | variant | run | median ms (end to end) | min–max ms | ÷ floor | history events | workflow tasks | workflow ms | process | stage | promote | update_watermark | local steps |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for sr in &r.servers {
        for k in &sr.kinds {
            let (lo, hi) = min_max(&k.wall_ms);
            let floor = sr
                .floor_of(&k.variant)
                .map_or(f64::NAN, |f| median(&f.wall_ms));
            let act = |n: &str| ms_or_dash(k.activities_ms.get(n));
            s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {lo:.0}–{hi:.0} | {:.2}× | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |\n",
                sr.server,
                k.variant,
                k.kind,
                median(&k.wall_ms),
                median(&k.wall_ms) / floor,
                k.history_events,
                k.workflow_tasks,
                k.workflow_ms,
                act("process"),
                act("stage"),
                act("promote"),
                act("update_watermark"),
                if k.local_steps.is_empty() {
                    "–".to_string()
                } else {
                    k.local_steps.join(", ")
                }
            ));
        }
    }
    s.push_str("\nThe floor (4 no-op activities, fresh CLI process):\n\n| server | eager dispatch | median ms | min–max ms | history events | workflow tasks |\n|---|---|---:|---:|---:|---:|\n");
    for sr in &r.servers {
        for f in &sr.floors {
            let (lo, hi) = min_max(&f.wall_ms);
            s.push_str(&format!(
                "| {} | {} | {:.0} | {lo:.0}–{hi:.0} | {:.0} | {:.0} |\n",
                sr.server,
                if f.eager_dispatch { "on" } else { "off" },
                median(&f.wall_ms),
                f.history_events,
                f.workflow_tasks
            ));
        }
    }
    s.push_str("\nActivity times are schedule to result in workflow time: for a regular activity its code plus the round trips around it, for a local one its code plus the worker's own dispatch (the SDK moves workflow time on by a local activity's runtime). The difference between end to end and the workflow's span is the CLI process (start-up, connecting, starting the workflow, awaiting its result).\n\n");
    for sr in &r.servers {
        for (kind, target) in [("empty", TARGET_EMPTY_MS), ("1 row", TARGET_ONE_ROW_MS)] {
            let Some(k) = sr.kind(SHIPPED, kind) else {
                continue;
            };
            let m = median(&k.wall_ms);
            let verdict = if m <= target {
                "target met".to_string()
            } else {
                format!("**target missed** by {:.0} ms", m - target)
            };
            s.push_str(&format!(
                "- {} server, {kind} run, shipped path: **{m:.0} ms** (target ≤ {target:.0} ms): {verdict}.\n",
                sr.server
            ));
        }
        if let (Some(new), Some(old)) = (sr.kind(SHIPPED, "1 row"), sr.kind(BASELINE, "1 row")) {
            s.push_str(&format!(
                "- {} server, server work per 1-row run: {:.0} history events and {:.0} workflow tasks, against {:.0} and {:.0} on today's path ({:.2}× and {:.2}×).\n",
                sr.server,
                new.history_events,
                new.workflow_tasks,
                old.history_events,
                old.workflow_tasks,
                new.history_events / old.history_events,
                new.workflow_tasks / old.workflow_tasks
            ));
        }
    }
    s
}
