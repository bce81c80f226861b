//! `tidemark run`: start an incremental run and wait for it, showing its phases on a terminal.

use super::{ConnectArgs, load_spec, settings};
use crate::output;
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tidemark::client;

// The subcommand's help text is the doc comment of `Command::Run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// Return once the run is started.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Exit 0 only when the run succeeded (or was started, with --no-wait).
pub async fn run(args: RunArgs) -> Result<u8> {
    let RunArgs {
        spec: path,
        no_wait,
        json,
        connect,
    } = args;
    let spec = load_spec(&path)?;
    let client = client::connect(&settings(&connect)).await?;
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
                    && last_phase != Some((p.phase, p.batch))
                {
                    last_phase = Some((p.phase, p.batch));
                    eprintln!("{}", output::progress_line(&p));
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
