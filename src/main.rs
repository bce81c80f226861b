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
use tidemark::state::{PipelineDirs, ledger, watermark};

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
        } => worker(&connect, sticky_timeout_ms.map(Duration::from_millis)).await,
        Command::Status {
            pipeline,
            state_dir,
            json,
            connect,
        } => status(&pipeline, state_dir, json, &connect).await,
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
                println!(
                    "  source  {source} ({:?}), cursor `{}`",
                    s.source.kind, s.source.cursor
                );
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

async fn worker(connect: &ConnectArgs, sticky_timeout: Option<Duration>) -> Result<u8> {
    let client = client::connect(&settings(connect)).await?;
    eprintln!(
        "tidemark worker polling task queue `{}` (Ctrl-C to stop)",
        connect.task_queue
    );
    tidemark::worker::run_with(
        client,
        &connect.task_queue,
        shutdown_signal(),
        sticky_timeout,
    )
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

async fn status(
    target: &str,
    state_dir: Option<PathBuf>,
    json: bool,
    connect: &ConnectArgs,
) -> Result<u8> {
    let as_path = Path::new(target);
    let (name, dirs) = if as_path.is_file() {
        let s = spec::load(as_path)?;
        (s.name.clone(), PipelineDirs::of(&s))
    } else {
        let dir = state_dir.unwrap_or_else(|| PathBuf::from(".tidemark"));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        (
            target.to_string(),
            PipelineDirs::at(&dir.to_string_lossy(), target),
        )
    };
    if !dirs.root.exists() && !as_path.is_file() {
        bail!(
            "no state for pipeline `{name}` under {} (pass the spec file, or --state-dir)",
            dirs.root
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let wm = watermark::read(&dirs.watermark()).context("read the watermark store")?;
    let runs = ledger::read_all(&dirs.ledger()).context("read the ledger")?;
    let live = match client::connect(&settings(connect)).await {
        Ok(c) => client::query_progress(&c, &name)
            .await
            .ok()
            .flatten()
            .map(Ok),
        Err(e) => Some(Err(format!("{e:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())),
    };
    output::status(&name, wm.as_ref(), &runs, live, json);
    Ok(0)
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
