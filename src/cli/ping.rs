//! `tidemark ping`: prove that a worker serves the task queue, and show the round trip of a
//! workflow of no-op activities (the orchestration floor a run is compared with).

use super::{ConnectArgs, settings};
use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::time::Duration;
use tidemark::client;

// The subcommand's help text is the doc comment of `Command::Ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// No-op activities the workflow runs, one after the other (0: the workflow alone).
    #[arg(long, default_value_t = 1)]
    pub activities: u32,
    /// Give up when no worker answered within this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Exit 0 when a worker ran the workflow, 1 when none answered in time.
pub async fn run(args: PingArgs) -> Result<u8> {
    let started = std::time::Instant::now();
    let client = client::connect(&settings(&args.connect)).await?;
    let queue = &args.connect.task_queue;
    let result = client::ping(
        &client,
        queue,
        args.activities,
        Duration::from_secs(args.timeout),
    )
    .await;
    let total_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok((workflow_id, workflow)) => {
            let workflow_ms = workflow.as_secs_f64() * 1e3;
            if args.json {
                println!(
                    "{}",
                    json!({"status": "ok", "task_queue": queue, "workflow_id": workflow_id,
                           "activities": args.activities, "workflow_ms": workflow_ms,
                           "total_ms": total_ms})
                );
            } else {
                println!(
                    "a worker on task queue {queue} ran {} no-op activit{}: {workflow_ms:.0} ms (start to result), {total_ms:.0} ms with connecting",
                    args.activities,
                    if args.activities == 1 { "y" } else { "ies" }
                );
            }
            Ok(0)
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    json!({"status": "failed", "task_queue": queue, "error": format!("{e:#}")})
                );
            } else {
                eprintln!("error: {e:#}");
            }
            Ok(1)
        }
    }
}
