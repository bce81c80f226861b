//! `tidemark backfill`: load a past range window by window beside the live pipeline, with a
//! progress bar on a terminal.

use super::{ConnectArgs, load_spec, settings};
use anyhow::{Result, bail};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tidemark::client;
use tidemark::state;

// The subcommand's help text is the doc comment of `Command::Backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// Start of the range (inclusive cursor value: 2026-01-01, 2026-01-01T06:00:00Z, 1000).
    #[arg(long)]
    pub from: String,
    /// End of the range (exclusive).
    #[arg(long)]
    pub to: String,
    /// Window size: a duration for timestamp cursors (1d, 6h), a number for integer ones.
    #[arg(long, default_value = "1d")]
    pub step: String,
    /// Windows loaded at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: u32,
    /// Attach to the backfill in progress instead of refusing.
    #[arg(long)]
    pub resume: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Exit 0 when every window loaded, 1 when some failed.
pub async fn run(args: BackfillArgs) -> Result<u8> {
    let BackfillArgs {
        spec: path,
        from,
        to,
        step,
        parallel,
        resume,
        json,
        connect,
    } = args;
    let spec = load_spec(&path)?;
    if spec.source.kind.is_cdc() {
        bail!(
            "{} reads change events, which have no cursor range to backfill; replay the stream instead (`tidemark reset {} --epoch`: events apply idempotently by position)",
            spec.name,
            path.display()
        );
    }
    let store = state::open(&spec)?;
    let cursor_type = spec
        .source
        .cursor_type
        .or_else(|| store.read_watermark().ok().flatten().map(|w| w.value_type))
        .unwrap_or(tidemark::workflows::cursor::CursorType::Timestamp);
    let windows = tidemark::backfill::windows(cursor_type, &from, &to, &step)?;
    let client = client::connect(&settings(&connect)).await?;
    let input = tidemark::workflows::payloads::BackfillInput {
        spec: spec.clone(),
        windows: windows.clone(),
        parallel,
        options: tidemark::workflows::payloads::RunOptions {
            alert_search_attribute: client::alert_attribute_registered(&client).await,
            ..Default::default()
        },
    };
    let (handle, attached) =
        client::start_backfill(&client, input, &connect.task_queue, resume).await?;
    if !json {
        eprintln!(
            "{} backfill of {}: {} windows of {step} from {from} to {to}, {parallel} at a time",
            if attached {
                "following the"
            } else {
                "started a"
            },
            spec.name,
            windows.len()
        );
    }
    let result = handle.get_result(Default::default());
    tokio::pin!(result);
    let show = !json && std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let outcome = loop {
        tokio::select! {
            r = &mut result => break r,
            _ = tick.tick(), if show => {
                if let Some(p) = client::backfill_progress(&handle).await {
                    let settled = p.done + p.already_covered + p.failed.len() as u32;
                    let width = 30usize;
                    let filled = (settled as usize * width) / (p.windows_total.max(1) as usize);
                    eprint!(
                        "\r  [{}{}] {settled}/{} windows · {} running · {} retried · {} failed · {} rows   ",
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        p.windows_total,
                        p.running.len(),
                        p.retried,
                        p.failed.len(),
                        p.rows_promoted
                    );
                }
            }
        }
    };
    if show {
        eprintln!();
    }
    let p = outcome.map_err(|e| anyhow::anyhow!(client::error_chain(&e)))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!(
            "backfill of {}: {} windows loaded, {} already loaded before, {} failed, {} rows promoted",
            p.pipeline,
            p.done,
            p.already_covered,
            p.failed.len(),
            p.rows_promoted
        );
        for f in &p.failed {
            println!("  failed window {f} (run the same command again to retry it)");
        }
        println!(
            "  the live watermark was not moved; coverage: `tidemark status {}`",
            path.display()
        );
    }
    Ok(if p.failed.is_empty() { 0 } else { 1 })
}
