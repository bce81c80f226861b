//! `tidemark worker`: run a worker (workflow + activities) until SIGINT/SIGTERM.

use super::{ConnectArgs, settings, shutdown_signal};
use anyhow::Result;
use clap::Args;
use std::time::Duration;
use tidemark::client;

// The subcommand's help text is the doc comment of `Command::Worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How long (ms) a workflow task waits for this worker's cache before any worker may
    /// take it (server default: 10 s). Lower it to fail over faster after a crash.
    #[arg(long)]
    pub sticky_timeout_ms: Option<u64>,
    /// Serve Prometheus metrics (tidemark_* per pipeline, and the SDK's temporal_*) on
    /// this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Polls until a shutdown signal; exit 0.
pub async fn run(args: WorkerArgs) -> Result<u8> {
    let WorkerArgs {
        connect,
        sticky_timeout_ms,
        metrics_addr,
    } = args;
    let config = tidemark::worker::WorkerConfig {
        sticky_timeout: sticky_timeout_ms.map(Duration::from_millis),
        metrics_addr,
    };
    let client = client::connect(&settings(&connect)).await?;
    eprintln!(
        "tidemark worker polling task queue `{}` (Ctrl-C to stop)",
        connect.task_queue
    );
    tidemark::worker::run_configured(client, &connect.task_queue, shutdown_signal(), config)
        .await?;
    Ok(0)
}
