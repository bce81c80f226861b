//! `tidemark demo`: the self-contained demo (dev server, worker, three rounds, oracle check).

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

// The subcommand's help text is the doc comment of `Command::Demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the demo's data, table and state (recreated).
    #[arg(long, default_value = "tidemark-demo")]
    pub dir: PathBuf,
    /// Keep the dev server and worker running afterwards, to browse the Web UI.
    #[arg(long)]
    pub keep: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when the table matches the oracle, 1 when it does not.
pub async fn run(args: DemoArgs) -> Result<u8> {
    let DemoArgs { dir, keep, json } = args;
    let report = tidemark::demo::run(&dir, keep, !json).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if report.matches_oracle { 0 } else { 1 })
}
