//! `tidemark dev`: a local Temporal dev server and a worker in one process, until Ctrl-C.

use super::{ConnectArgs, shutdown_signal};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use tidemark::client::{self, ConnectSettings};

// The subcommand's help text is the doc comment of `Command::Dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Frontend port.
    #[arg(long, default_value_t = 7233)]
    pub port: u16,
    /// Where the server's SQLite file lives.
    #[arg(long, default_value = ".tidemark")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Serves until a shutdown signal; exit 0.
pub async fn run(args: DevArgs) -> Result<u8> {
    let DevArgs {
        port,
        state_dir,
        connect,
    } = args;
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
        namespace: connect.namespace.clone().or(Some("default".into())),
        ..ConnectSettings::local(&server.address)
    })
    .await?;
    tidemark::worker::run(client, &connect.task_queue, shutdown_signal()).await?;
    drop(server);
    Ok(0)
}
