//! `tidemark history`: print a pipeline's run ledger, oldest first.

use super::resolve_pipeline;
use crate::output;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use tidemark::state::ledger;

// The subcommand's help text is the doc comment of `Command::History`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// A spec file, or a pipeline name (with --state-dir).
    pub pipeline: String,
    /// State directory holding the pipeline (default ./.tidemark) when a name is given.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Only the last N lines.
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object per line (the ledger's own format).
    #[arg(long)]
    pub json: bool,
}

/// Prints the ledger (the last `--limit` lines); exit 0.
pub fn run(args: HistoryArgs) -> Result<u8> {
    let HistoryArgs {
        pipeline,
        state_dir,
        limit,
        json,
    } = args;
    let named = resolve_pipeline(&pipeline, state_dir)?;
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
