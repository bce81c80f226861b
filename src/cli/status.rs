//! `tidemark status` (one pipeline) and `tidemark status --all` (a folder of specs):
//! watermark, lag, recent runs, alerts and a running run's live progress.

use super::{ConnectArgs, Named, resolve_pipeline, settings};
use crate::output;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use tidemark::client;
use tidemark::spec;

// The subcommand's help text is the doc comment of `Command::Status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A spec file, or a pipeline name (with --state-dir); with --all, a folder of specs
    /// (default: the current directory).
    pub pipeline: Option<String>,
    /// Every pipeline whose spec is in the folder (`*.toml`, not recursive).
    #[arg(long)]
    pub all: bool,
    /// Ledger lines to show per pipeline.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// State directory holding the pipeline (default ./.tidemark) when a name is given.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Exit 0, or 3 when an alert is active.
pub async fn run(args: StatusArgs) -> Result<u8> {
    let StatusArgs {
        pipeline,
        all,
        runs,
        state_dir,
        json,
        connect,
    } = args;
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
        let named = Named::of(s)?;
        let (v, alerting) = status_view_json(&named, runs, &client, !json).await?;
        any_alert |= alerting;
        values.push(v);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&values)?);
    }
    Ok(if any_alert { 3 } else { 0 })
}

/// One pipeline's status as JSON (printed as text too when `print_human`), and whether an
/// alert is active.
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

/// Status works without Temporal: a failed connection becomes its first line, shown in
/// place of the live progress.
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
