//! The `tidemark` command line: parses arguments (clap) and dispatches to the library.
//! User-facing output goes through `output`; errors carry context and exit non-zero.

mod cli;
mod output;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Command, ConnectArgs};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tidemark::client::{self, ConnectSettings};
use tidemark::spec;
use tidemark::state::{self, StateStore, ledger};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_tracing(cli: &Cli) {
    let default = if cli.verbose {
        "info,tidemark=debug"
    } else {
        "warn,tidemark=warn,temporalio_sdk_core=error,buoyant_kernel=off,deltalake_core=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Human => builder.init(),
    }
}

fn settings(c: &ConnectArgs) -> ConnectSettings {
    ConnectSettings {
        address: c.address.clone(),
        namespace: c.namespace.clone(),
    }
}

async fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { spec, json } => validate(&spec, json),
        Command::Run {
            spec,
            no_wait,
            json,
            connect,
        } => run(&spec, no_wait, json, &connect).await,
        Command::Worker {
            connect,
            sticky_timeout_ms,
            metrics_addr,
        } => {
            let config = tidemark::worker::WorkerConfig {
                sticky_timeout: sticky_timeout_ms.map(Duration::from_millis),
                metrics_addr,
            };
            worker(&connect, config).await
        }
        Command::Status {
            pipeline,
            all,
            runs,
            state_dir,
            json,
            connect,
        } => {
            if all {
                let dir = PathBuf::from(pipeline.unwrap_or_else(|| ".".into()));
                status_all(&dir, runs, json, &connect).await
            } else {
                let Some(p) = pipeline else {
                    bail!("give a spec file or a pipeline name, or --all [FOLDER]");
                };
                status(&p, state_dir, runs, json, &connect).await
            }
        }
        Command::History {
            pipeline,
            state_dir,
            limit,
            json,
        } => history(&pipeline, state_dir, limit, json),
        Command::Reset {
            spec,
            to,
            epoch,
            dry_run,
            truncate_target,
            json,
            connect,
        } => {
            let to = match (to, epoch) {
                (Some(v), false) => tidemark::reset::ResetTo::Value(v),
                _ => tidemark::reset::ResetTo::Epoch,
            };
            reset(&spec, to, dry_run, truncate_target, json, &connect).await
        }
        Command::Schedule { action } => schedule(action).await,
        Command::Backfill {
            spec,
            from,
            to,
            step,
            parallel,
            resume,
            json,
            connect,
        } => backfill(&spec, (&from, &to, &step), parallel, resume, json, &connect).await,
        Command::Dev {
            port,
            state_dir,
            connect,
        } => dev(port, &state_dir, &connect).await,
        Command::Demo { dir, keep, json } => {
            let report = tidemark::demo::run(&dir, keep, !json).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(if report.matches_oracle { 0 } else { 1 })
        }
    }
}

fn validate(path: &Path, json: bool) -> Result<u8> {
    match spec::load(path) {
        Ok(s) => {
            if json {
                println!("{}", serde_json::json!({"valid": true, "spec": s}));
            } else {
                println!("{}: valid pipeline `{}`", path.display(), s.name);
                let conn = |c: &Option<tidemark::workflows::spec::ConnSpec>| match c {
                    Some(tidemark::workflows::spec::ConnSpec::Url(u)) => tidemark::pg::redact(u),
                    Some(tidemark::workflows::spec::ConnSpec::UrlEnv(v)) => format!("${v}"),
                    None => String::new(),
                };
                let source = match &s.source.query {
                    Some(q) => format!("{} `{q}`", conn(&s.source.conn)),
                    None => s.source.path.clone(),
                };
                match &s.source.cdc {
                    Some(c) => {
                        let from = match &c.brokers {
                            Some(b) => format!("{b} topics {}", c.topics.join(", ")),
                            None => source,
                        };
                        println!(
                            "  source  {from} ({:?}), key ({}), up to {} events a run, bad events: {:?}",
                            s.source.kind,
                            c.key.join(", "),
                            c.max_events,
                            c.on_bad_event
                        );
                    }
                    None => println!(
                        "  source  {source} ({:?}), cursor `{}`",
                        s.source.kind, s.source.cursor
                    ),
                }
                let target = match &s.target.table {
                    Some(t) => format!("{} table {t}", conn(&s.target.conn)),
                    None => s.target.path.clone(),
                };
                println!(
                    "  target  {target} ({:?}, {})",
                    s.target.kind,
                    s.target.mode.as_str()
                );
                println!("  state   {}", s.state_dir);
            }
            Ok(0)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "error": e.to_string()})
                );
            } else {
                eprintln!("error: {e}");
            }
            Ok(2)
        }
    }
}

async fn run(path: &Path, no_wait: bool, json: bool, connect: &ConnectArgs) -> Result<u8> {
    let spec = spec::load(path)?;
    let client = client::connect(&settings(connect)).await?;
    let started = std::time::Instant::now();
    let handle = client::start_run(&client, &spec, &connect.task_queue).await?;
    let workflow_id = tidemark::workflows::run_workflow_id(&spec.name);
    if no_wait {
        output::started(&spec.name, &workflow_id, json);
        return Ok(0);
    }
    let queue = connect.task_queue.clone();
    let wait = client::wait_run(&handle, Duration::from_secs(5), || {
        eprintln!(
            "warning: no worker has picked up the run after 5 s: is `tidemark worker --task-queue {queue}` running against this server? (still waiting; Ctrl-C to stop waiting, the run stays queued)"
        );
    });
    tokio::pin!(wait);
    // On a terminal, show each phase as the workflow's progress query reports it.
    let show_progress = !json && std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_phase = None;
    let result = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = tick.tick(), if show_progress => {
                if let Ok(Some(client::LiveRun { progress: Some(p), .. })) =
                    client::query_progress(&client, &spec.name).await
                    && last_phase != Some(p.phase)
                {
                    last_phase = Some(p.phase);
                    eprintln!(
                        "  {:<16} run {} · extracted {} · batch {}",
                        p.phase.as_str(),
                        p.run_seq.map_or("-".into(), |s| s.to_string()),
                        p.rows_extracted,
                        p.rows_batch
                    );
                }
            }
        }
    };
    let elapsed = started.elapsed().as_millis() as u64;
    match result {
        Ok(summary) => {
            output::run_summary(&spec.name, &workflow_id, &summary, elapsed, json);
            Ok(0)
        }
        Err(failure) => {
            output::run_failed(&spec.name, &workflow_id, &failure.message, elapsed, json);
            Ok(1)
        }
    }
}

async fn worker(connect: &ConnectArgs, config: tidemark::worker::WorkerConfig) -> Result<u8> {
    let client = client::connect(&settings(connect)).await?;
    eprintln!(
        "tidemark worker polling task queue `{}` (Ctrl-C to stop)",
        connect.task_queue
    );
    tidemark::worker::run_configured(client, &connect.task_queue, shutdown_signal(), config)
        .await?;
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A pipeline named on the command line: a spec file, or a name under a state directory.
struct Named {
    name: String,
    state: Box<dyn StateStore>,
    spec: Option<tidemark::workflows::spec::PipelineSpec>,
}

fn resolve_pipeline(target: &str, state_dir: Option<PathBuf>) -> Result<Named> {
    let as_path = Path::new(target);
    if as_path.is_file() {
        let s = spec::load(as_path)?;
        return Ok(Named {
            name: s.name.clone(),
            state: state::open(&s),
            spec: Some(s),
        });
    }
    let dir = state_dir.unwrap_or_else(|| PathBuf::from(".tidemark"));
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let store = state::open_at(&dir.to_string_lossy(), target);
    if !store.exists() {
        bail!(
            "no state for pipeline `{target}` under {} (pass the spec file, or --state-dir)",
            dir.display()
        );
    }
    Ok(Named {
        name: target.to_string(),
        state: store,
        spec: None,
    })
}

/// The name of a pipeline given as a spec file or a bare name (no state needed).
fn pipeline_name(target: &str) -> Result<String> {
    let p = Path::new(target);
    if p.is_file() {
        Ok(spec::load(p)?.name)
    } else {
        Ok(target.to_string())
    }
}

async fn status_view_json(
    named: &Named,
    runs: usize,
    client: &std::result::Result<temporalio_client::Client, String>,
    print_human: bool,
) -> Result<(serde_json::Value, bool)> {
    let wm = named
        .state
        .read_watermark()
        .context("read the watermark store")?;
    let ledger = named.state.read_ledger().context("read the ledger")?;
    let live = match client {
        Ok(c) => client::query_progress(c, &named.name)
            .await
            .ok()
            .flatten()
            .map(Ok),
        Err(e) => Some(Err(e.clone())),
    };
    let monitor = named
        .spec
        .as_ref()
        .map(|s| s.monitor.clone())
        .unwrap_or_default();
    let alerts = tidemark::monitor::active(
        &monitor,
        &ledger,
        wm.as_ref(),
        chrono::Utc::now().timestamp_millis(),
    );
    let backfills = tidemark::backfill::coverage(&*named.state, &ledger);
    let view = output::StatusView {
        backfills: &backfills,
        pipeline: &named.name,
        wm: wm.as_ref(),
        runs: &ledger,
        show_runs: runs,
        live,
        alerts: &alerts,
    };
    if print_human {
        view.print();
    }
    Ok((view.to_json(), !alerts.is_empty()))
}

async fn connect_for_status(
    connect: &ConnectArgs,
) -> std::result::Result<temporalio_client::Client, String> {
    client::connect(&settings(connect)).await.map_err(|e| {
        format!("{e:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

async fn status(
    target: &str,
    state_dir: Option<PathBuf>,
    runs: usize,
    json: bool,
    connect: &ConnectArgs,
) -> Result<u8> {
    let named = resolve_pipeline(target, state_dir)?;
    let client = connect_for_status(connect).await;
    let (value, alerting) = status_view_json(&named, runs, &client, !json).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(if alerting { 3 } else { 0 })
}

async fn status_all(dir: &Path, runs: usize, json: bool, connect: &ConnectArgs) -> Result<u8> {
    let mut specs = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            match spec::load(&path) {
                Ok(s) => specs.push(s),
                Err(e) => eprintln!("skipping {}: {e}", path.display()),
            }
        }
    }
    if specs.is_empty() {
        bail!("no pipeline specs (*.toml) in {}", dir.display());
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let client = connect_for_status(connect).await;
    let mut values = Vec::new();
    let mut any_alert = false;
    for (i, s) in specs.into_iter().enumerate() {
        if i > 0 && !json {
            println!();
        }
        let named = Named {
            name: s.name.clone(),
            state: state::open(&s),
            spec: Some(s),
        };
        let (v, alerting) = status_view_json(&named, runs, &client, !json).await?;
        any_alert |= alerting;
        values.push(v);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&values)?);
    }
    Ok(if any_alert { 3 } else { 0 })
}

fn history(
    target: &str,
    state_dir: Option<PathBuf>,
    limit: Option<usize>,
    json: bool,
) -> Result<u8> {
    let named = resolve_pipeline(target, state_dir)?;
    let entries = named.state.read_ledger().context("read the ledger")?;
    let skip = limit.map_or(0, |n| entries.len().saturating_sub(n));
    let shown: Vec<&ledger::LedgerEntry> = entries.iter().skip(skip).collect();
    if json {
        for e in shown {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(0);
    }
    println!("pipeline {} ({} ledger lines)", named.name, entries.len());
    if shown.is_empty() {
        println!("  no runs recorded");
    } else {
        output::ledger_table(&shown);
    }
    Ok(0)
}

async fn reset(
    path: &Path,
    to: tidemark::reset::ResetTo,
    dry_run: bool,
    truncate_target: bool,
    json: bool,
    connect: &ConnectArgs,
) -> Result<u8> {
    let spec = spec::load(path)?;
    // Runs never overlap, and a reset is not a run: refuse while one is active.
    let client = client::connect(&settings(connect)).await.context(
        "a reset checks with Temporal that no run of the pipeline is active; start the server (or pass --address)",
    )?;
    if let Some(live) = client::query_progress(&client, &spec.name).await?
        && live.status == temporalio_client::WorkflowExecutionStatus::Running
    {
        bail!(
            "a run of {} is in progress (workflow {}); wait for it to finish, then reset",
            spec.name,
            tidemark::workflows::run_workflow_id(&spec.name)
        );
    }
    let mut warnings = Vec::new();
    if let Ok(s) = tidemark::schedule::describe(&client, &spec.name).await
        && !s.paused
    {
        warnings.push(format!(
            "the schedule {} is not paused: a run may start right after the reset (`tidemark schedule pause {}`)",
            s.schedule_id, spec.name
        ));
    }
    let mut plan = tidemark::reset::plan(&spec, &to, truncate_target).await?;
    plan.warnings.extend(warnings);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"plan": plan, "applied": !dry_run}))?
        );
    } else {
        println!("reset plan for {}:", plan.pipeline);
        println!(
            "  watermark       {} -> {}",
            plan.watermark_before.as_deref().unwrap_or("none"),
            plan.watermark_after
                .as_deref()
                .unwrap_or("none (from the start)")
        );
        println!("  next run reads  from {}", plan.next_run_reads_from);
        println!(
            "  target          {}{}",
            plan.target,
            if plan.truncate_target {
                " (emptied first)"
            } else {
                " (kept)"
            }
        );
        println!("  run numbering   continues after run {}", plan.run_seq);
        for w in &plan.warnings {
            println!("  warning: {w}");
        }
    }
    if dry_run {
        if !json {
            println!("dry run: nothing changed");
        }
        return Ok(0);
    }
    tidemark::reset::apply(&spec, &plan).await?;
    if !json {
        println!(
            "reset done; the next run (`tidemark run {}`) reprocesses from {}",
            path.display(),
            plan.next_run_reads_from
        );
    }
    Ok(0)
}

async fn backfill(
    path: &Path,
    (from, to, step): (&str, &str, &str),
    parallel: u32,
    resume: bool,
    json: bool,
    connect: &ConnectArgs,
) -> Result<u8> {
    let spec = spec::load(path)?;
    if spec.source.kind.is_cdc() {
        bail!(
            "{} reads change events, which have no cursor range to backfill; replay the stream instead (`tidemark reset {} --epoch`: events apply idempotently by position)",
            spec.name,
            path.display()
        );
    }
    let store = state::open(&spec);
    let cursor_type = spec
        .source
        .cursor_type
        .or_else(|| store.read_watermark().ok().flatten().map(|w| w.value_type))
        .unwrap_or(tidemark::workflows::cursor::CursorType::Timestamp);
    let windows = tidemark::backfill::windows(cursor_type, from, to, step)?;
    let client = client::connect(&settings(connect)).await?;
    let input = tidemark::workflows::payloads::BackfillInput {
        spec: spec.clone(),
        windows: windows.clone(),
        parallel,
        options: tidemark::workflows::payloads::RunOptions {
            alert_search_attribute: client::alert_attribute_registered(&client).await,
            ..Default::default()
        },
    };
    let (handle, attached) =
        client::start_backfill(&client, input, &connect.task_queue, resume).await?;
    if !json {
        eprintln!(
            "{} backfill of {}: {} windows of {step} from {from} to {to}, {parallel} at a time",
            if attached {
                "following the"
            } else {
                "started a"
            },
            spec.name,
            windows.len()
        );
    }
    let result = handle.get_result(Default::default());
    tokio::pin!(result);
    let show = !json && std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let outcome = loop {
        tokio::select! {
            r = &mut result => break r,
            _ = tick.tick(), if show => {
                if let Some(p) = client::backfill_progress(&handle).await {
                    let settled = p.done + p.already_covered + p.failed.len() as u32;
                    let width = 30usize;
                    let filled = (settled as usize * width) / (p.windows_total.max(1) as usize);
                    eprint!(
                        "\r  [{}{}] {settled}/{} windows · {} running · {} retried · {} failed · {} rows   ",
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        p.windows_total,
                        p.running.len(),
                        p.retried,
                        p.failed.len(),
                        p.rows_promoted
                    );
                }
            }
        }
    };
    if show {
        eprintln!();
    }
    let p = outcome.map_err(|e| anyhow::anyhow!(client::error_chain(&e)))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "backfill of {}: {} windows loaded, {} already loaded before, {} failed, {} rows promoted",
            p.pipeline,
            p.done,
            p.already_covered,
            p.failed.len(),
            p.rows_promoted
        );
        for f in &p.failed {
            println!("  failed window {f} (run the same command again to retry it)");
        }
        println!(
            "  the live watermark was not moved; coverage: `tidemark status {}`",
            path.display()
        );
    }
    Ok(if p.failed.is_empty() { 0 } else { 1 })
}

async fn schedule(action: cli::ScheduleCommand) -> Result<u8> {
    use cli::ScheduleCommand as S;
    use tidemark::schedule as sch;
    match action {
        S::Create {
            spec: path,
            json,
            connect,
        } => {
            let s = spec::load(&path)?;
            let c = client::connect(&settings(&connect)).await?;
            let applied = sch::create_or_update(&c, &s, &connect.task_queue).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&applied)?);
            } else {
                println!(
                    "schedule {} {}{}",
                    applied.schedule_id,
                    applied.action,
                    if applied.paused { " (paused)" } else { "" }
                );
                for t in applied.next_runs.iter().take(3) {
                    println!("  next run  {t}");
                }
            }
            Ok(0)
        }
        S::List { json, connect } => {
            let c = client::connect(&settings(&connect)).await?;
            let all = sch::list(&c).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no tidemark schedules (create one with `tidemark schedule create SPEC`)");
            } else {
                println!(
                    "{:<24}  {:<7}  {:<28}  {:>5}  next run",
                    "pipeline", "state", "spec", "runs"
                );
                for s in &all {
                    println!(
                        "{:<24}  {:<7}  {:<28}  {:>5}  {}",
                        s.pipeline,
                        if s.paused { "paused" } else { "active" },
                        s.spec,
                        s.action_count.unwrap_or(0),
                        s.next_runs.first().cloned().unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(0)
        }
        S::Describe {
            pipeline,
            json,
            connect,
        } => {
            let c = client::connect(&settings(&connect)).await?;
            let s = sch::describe(&c, &pipeline_name(&pipeline)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(0);
            }
            println!("schedule {} (pipeline {})", s.schedule_id, s.pipeline);
            println!(
                "  state      {}{}",
                if s.paused { "paused" } else { "active" },
                s.note.as_ref().map_or(String::new(), |n| format!(" — {n}"))
            );
            println!("  spec       {}", s.spec);
            println!(
                "  policies   overlap {}, catch-up window {}",
                s.overlap,
                s.catchup_window_s
                    .map_or("-".into(), |w| tidemark::monitor::human_ms(w as u64 * 1000))
            );
            println!(
                "  counts     {} started, {} skipped (overlap), {} missed (catch-up window)",
                s.action_count.unwrap_or(0),
                s.overlap_skipped.unwrap_or(0),
                s.missed_catchup_window.unwrap_or(0)
            );
            for r in &s.running {
                println!("  running    run id {r}");
            }
            for r in &s.recent {
                println!(
                    "  recent     scheduled {} started {}",
                    r.scheduled, r.started
                );
            }
            for t in s.next_runs.iter().take(5) {
                println!("  next       {t}");
            }
            Ok(0)
        }
        S::Pause {
            pipeline,
            note,
            connect,
        } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::pause(&c, &name, note).await?;
            println!("schedule of {name} paused (a run in progress finishes)");
            Ok(0)
        }
        S::Unpause {
            pipeline,
            note,
            connect,
        } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::unpause(&c, &name, note).await?;
            println!("schedule of {name} unpaused");
            Ok(0)
        }
        S::Trigger { pipeline, connect } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::trigger(&c, &name).await?;
            println!(
                "run of {name} requested (skipped if one is in progress); follow it with `tidemark status {name}`"
            );
            Ok(0)
        }
        S::Delete { pipeline, connect } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::delete(&c, &name).await?;
            println!("schedule of {name} deleted");
            Ok(0)
        }
    }
}

async fn dev(port: u16, state_dir: &Path, connect: &ConnectArgs) -> Result<u8> {
    let db = state_dir.join("temporal-dev.db");
    let server = tidemark::devserver::start(&db, Some(port), true).await?;
    let ui = server
        .ui_port
        .map(|p| format!("http://127.0.0.1:{p}"))
        .unwrap_or_default();
    eprintln!(
        "Temporal dev server on {} (state in {})",
        server.address,
        db.display()
    );
    eprintln!("Web UI: {ui}");
    eprintln!(
        "Worker on task queue `{}`. Ctrl-C stops both.",
        connect.task_queue
    );
    eprintln!(
        "In another shell: TEMPORAL_ADDRESS={} tidemark run <spec.toml>",
        server.address
    );
    let client = client::connect(&ConnectSettings {
        address: Some(server.address.clone()),
        namespace: connect.namespace.clone(),
    })
    .await?;
    tidemark::worker::run(client, &connect.task_queue, shutdown_signal()).await?;
    drop(server);
    Ok(0)
}
