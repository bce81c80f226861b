//! `tidemark schedule ...`: manage the pipeline's Temporal Schedule (create/update from the
//! spec's `[schedule]` table, list, describe, pause, unpause, trigger, delete).

use super::{ConnectArgs, load_spec, pipeline_name, settings};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tidemark::client;
use tidemark::schedule as sch;

// The subcommand's help text is the doc comment of `Command::Schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub action: ScheduleCommand,
}

/// `tidemark schedule ...`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create the schedule from the spec's `[schedule]` table, or update it to match the spec
    /// (an update keeps an operator's pause).
    Create {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List tidemark's schedules in the namespace.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a schedule: spec, policies, recent and upcoming runs.
    Describe {
        /// A spec file or a pipeline name.
        pipeline: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Pause a schedule (runs in progress finish).
    Pause {
        /// A spec file or a pipeline name.
        pipeline: String,
        /// Why (shown by describe and in the Temporal UI).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Unpause a schedule.
    Unpause {
        /// A spec file or a pipeline name.
        pipeline: String,
        /// Note.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Start a run now through the schedule (skipped if a run is in progress).
    Trigger {
        /// A spec file or a pipeline name.
        pipeline: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a schedule (a run in progress continues).
    Delete {
        /// A spec file or a pipeline name.
        pipeline: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Runs one schedule action; exit 0.
pub async fn run(args: ScheduleArgs) -> Result<u8> {
    use ScheduleCommand as S;
    match args.action {
        S::Create {
            spec: path,
            json,
            connect,
        } => {
            let s = load_spec(&path)?;
            let c = client::connect(&settings(&connect)).await?;
            // The run schedule ([schedule]; an error naming the table when absent, unless the
            // spec schedules maintenance alone), then the maintenance schedule.
            let mut applied = Vec::new();
            if s.schedule.is_some() || s.maintenance.schedule.is_none() {
                applied.push(sch::create_or_update(&c, &s, &connect.task_queue).await?);
            }
            if let Some(m) = sch::create_or_update_maintenance(&c, &s, &connect.task_queue).await? {
                applied.push(m);
            }
            if json {
                let v = if applied.len() == 1 {
                    serde_json::to_value(&applied[0])?
                } else {
                    serde_json::to_value(&applied)?
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for a in &applied {
                    println!(
                        "schedule {} {}{}",
                        a.schedule_id,
                        a.action,
                        if a.paused { " (paused)" } else { "" }
                    );
                    for t in a.next_runs.iter().take(3) {
                        println!("  next run  {t}");
                    }
                }
            }
            Ok(0)
        }
        S::List { json, connect } => {
            let c = client::connect(&settings(&connect)).await?;
            let all = sch::list(&c).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no tidemark schedules (create one with `tidemark schedule create SPEC`)");
            } else {
                println!(
                    "{:<24}  {:<7}  {:<28}  {:>5}  next run",
                    "pipeline", "state", "spec", "runs"
                );
                for s in &all {
                    println!(
                        "{:<24}  {:<7}  {:<28}  {:>5}  {}",
                        s.pipeline,
                        if s.paused { "paused" } else { "active" },
                        s.spec,
                        s.action_count.unwrap_or(0),
                        s.next_runs.first().cloned().unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(0)
        }
        S::Describe {
            pipeline,
            json,
            connect,
        } => {
            let c = client::connect(&settings(&connect)).await?;
            let s = sch::describe(&c, &pipeline_name(&pipeline)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(0);
            }
            println!("schedule {} (pipeline {})", s.schedule_id, s.pipeline);
            println!(
                "  state      {}{}",
                if s.paused { "paused" } else { "active" },
                s.note.as_ref().map_or(String::new(), |n| format!(" — {n}"))
            );
            println!("  spec       {}", s.spec);
            println!(
                "  policies   overlap {}, catch-up window {}",
                s.overlap,
                s.catchup_window_s
                    .map_or("-".into(), |w| tidemark::monitor::human_ms(w as u64 * 1000))
            );
            println!(
                "  counts     {} started, {} skipped (overlap), {} missed (catch-up window)",
                s.action_count.unwrap_or(0),
                s.overlap_skipped.unwrap_or(0),
                s.missed_catchup_window.unwrap_or(0)
            );
            for r in &s.running {
                println!("  running    run id {r}");
            }
            for r in &s.recent {
                println!(
                    "  recent     scheduled {} started {}",
                    r.scheduled, r.started
                );
            }
            for t in s.next_runs.iter().take(5) {
                println!("  next       {t}");
            }
            Ok(0)
        }
        S::Pause {
            pipeline,
            note,
            connect,
        } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::pause(&c, &name, note).await?;
            println!("schedule of {name} paused (a run in progress finishes)");
            Ok(0)
        }
        S::Unpause {
            pipeline,
            note,
            connect,
        } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::unpause(&c, &name, note).await?;
            println!("schedule of {name} unpaused");
            Ok(0)
        }
        S::Trigger { pipeline, connect } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::trigger(&c, &name).await?;
            println!(
                "run of {name} requested (skipped if one is in progress); follow it with `tidemark status {name}`"
            );
            Ok(0)
        }
        S::Delete { pipeline, connect } => {
            let name = pipeline_name(&pipeline)?;
            let c = client::connect(&settings(&connect)).await?;
            sch::delete(&c, &name).await?;
            println!("schedule of {name} deleted");
            Ok(0)
        }
    }
}
