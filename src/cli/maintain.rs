//! `tidemark maintain`: one table maintenance of a pipeline through its `Maintain` workflow.

use super::{ConnectArgs, load_spec, settings};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use tidemark::client;

// The subcommand's help text is the doc comment of `Command::Maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// Plan only: print what would be compacted and vacuumed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Exit 0 when the maintenance finished, 1 when it failed.
pub async fn run(args: MaintainArgs) -> Result<u8> {
    let MaintainArgs {
        spec: path,
        dry_run,
        json,
        connect,
    } = args;
    let spec = load_spec(&path)?;
    let client = client::connect(&settings(&connect)).await?;
    let handle = client::start_maintain(&client, &spec, &connect.task_queue, dry_run).await?;
    match client::wait_maintain(&handle).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "maintenance of {} ({}){}",
                    spec.name,
                    report.target,
                    if dry_run { ", dry run" } else { "" }
                );
                println!("  {}", tidemark::maintain::summary(&report));
                if let Some(v) = report.compaction_version {
                    println!(
                        "  compaction at version {v}{}",
                        if report.already_compacted {
                            " (found committed by an earlier attempt)"
                        } else {
                            ""
                        }
                    );
                }
                for n in &report.notes {
                    println!("  note: {n}");
                }
            }
            Ok(0)
        }
        Err(f) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"pipeline": spec.name, "status": "failed", "error": f.message})
                );
            } else {
                eprintln!("maintenance of {} failed: {}", spec.name, f.message);
            }
            Ok(1)
        }
    }
}
