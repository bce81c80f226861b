//! `tidemark reset`: move a pipeline's watermark backwards (or clear it), after checking
//! that no run is active; prints the plan, then applies it unless --dry-run.

use super::{ConnectArgs, settings};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use tidemark::client;
use tidemark::reset::ResetTo;
use tidemark::spec;

// The subcommand's help text is the doc comment of `Command::Reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// The new watermark (a cursor value: 2026-01-01T00:00:00Z, 2026-01-01, 1000).
    #[arg(long, conflicts_with = "epoch", required_unless_present = "epoch")]
    pub to: Option<String>,
    /// Clear the watermark: the next run reads from `initial` or the first row.
    #[arg(long)]
    pub epoch: bool,
    /// Print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Empty the target first (Delta: a delete commit; Parquet: every partition;
    /// PostgreSQL: TRUNCATE). Required for append-mode targets.
    #[arg(long)]
    pub truncate_target: bool,
    /// Print the plan (and outcome) as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Exit 0 once the plan is printed (and applied).
pub async fn run(args: ResetArgs) -> Result<u8> {
    let ResetArgs {
        spec: path,
        to,
        epoch,
        dry_run,
        truncate_target,
        json,
        connect,
    } = args;
    let to = match (to, epoch) {
        (Some(v), false) => ResetTo::Value(v),
        _ => ResetTo::Epoch,
    };
    let spec = spec::load(&path)?;
    // Runs never overlap, and a reset is not a run: refuse while one is active.
    let client = client::connect(&settings(&connect)).await.context(
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
