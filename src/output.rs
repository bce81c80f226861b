//! User-facing output of the CLI: one place that prints, as text tables or JSON.

use serde_json::json;
use tidemark::cursor::{format_cursor, format_opt};
use tidemark::state::ledger::LedgerEntry;
use tidemark::state::watermark::Watermark;
use tidemark::workflows::payloads::RunSummary;

/// A run was started without waiting.
pub fn started(pipeline: &str, workflow_id: &str, json: bool) {
    if json {
        println!(
            "{}",
            json!({"pipeline": pipeline, "workflow_id": workflow_id, "status": "started"})
        );
    } else {
        println!(
            "started run of {pipeline}: workflow {workflow_id} (follow it with `tidemark status {pipeline}`)"
        );
    }
}

/// A run succeeded.
pub fn run_summary(
    pipeline: &str,
    workflow_id: &str,
    s: &RunSummary,
    elapsed_ms: u64,
    as_json: bool,
) {
    let p = &s.progress;
    let ct = p.cursor_type;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "pipeline": pipeline,
                "run_seq": p.run_seq,
                "workflow_id": workflow_id,
                "status": "succeeded",
                "rows_extracted": p.rows_extracted,
                "rows_deduplicated": p.rows_deduplicated,
                "rows_late": p.rows_late,
                "rows_quarantined": p.rows_quarantined,
                "rows_batch": p.rows_batch,
                "rows_promoted": p.rows_promoted,
                "already_promoted": p.already_promoted,
                "window_low": p.window_low.map(|v| format_opt(Some(v), ct)),
                "window_high": p.window_high.map(|v| format_opt(Some(v), ct)),
                "watermark_before": p.watermark_before.map(|v| format_opt(Some(v), ct)),
                "watermark_after": p.watermark_after.map(|v| format_opt(Some(v), ct)),
                "target_version": p.target_version,
                "duration_ms": elapsed_ms,
                "workflow_duration_ms": s.duration_ms,
                "activities": p.activities,
            }))
            .expect("summary serialises")
        );
        return;
    }
    println!(
        "run {} of {pipeline} succeeded ({workflow_id})",
        p.run_seq.unwrap_or(0)
    );
    println!(
        "  window      [{}, {}]",
        format_opt(p.window_low, ct),
        format_opt(p.window_high, ct)
    );
    println!(
        "  rows        extracted {}, deduplicated {}, late {}, quarantined {}, promoted {}",
        p.rows_extracted, p.rows_deduplicated, p.rows_late, p.rows_quarantined, p.rows_promoted
    );
    println!(
        "  watermark   {} -> {}",
        format_opt(p.watermark_before, ct),
        format_opt(p.watermark_after, ct)
    );
    println!(
        "  target      version {}{}",
        p.target_version.map_or("-".to_string(), |v| v.to_string()),
        if p.already_promoted {
            " (already promoted)"
        } else {
            ""
        }
    );
    let steps: Vec<String> = p
        .activities
        .iter()
        .map(|a| match a.attempt {
            0 | 1 => format!("{} {} ms", a.activity, a.elapsed_ms),
            n => format!("{} {} ms (attempt {n})", a.activity, a.elapsed_ms),
        })
        .collect();
    println!("  time        {elapsed_ms} ms ({})", steps.join(", "));
}

/// A run failed.
pub fn run_failed(
    pipeline: &str,
    workflow_id: &str,
    message: &str,
    elapsed_ms: u64,
    as_json: bool,
) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "pipeline": pipeline,
                "workflow_id": workflow_id,
                "status": "failed",
                "error": message,
                "duration_ms": elapsed_ms,
            }))
            .expect("failure serialises")
        );
    } else {
        eprintln!("run of {pipeline} failed ({workflow_id}): {message}");
        eprintln!(
            "  the target and the watermark are unchanged by this run; details: `tidemark status {pipeline}`"
        );
    }
}

fn lag_seconds(w: &Watermark) -> Option<i64> {
    match (w.value, w.value_type) {
        (Some(v), tidemark::workflows::cursor::CursorType::Timestamp) => {
            Some((chrono::Utc::now().timestamp_micros() - v) / 1_000_000)
        }
        _ => None,
    }
}

/// `status`.
pub fn status(
    pipeline: &str,
    wm: Option<&Watermark>,
    runs: &[LedgerEntry],
    live: Option<Result<tidemark::client::LiveRun, String>>,
    as_json: bool,
) {
    let last: Vec<&LedgerEntry> = runs.iter().rev().take(10).collect();
    let (live_status, live_progress, live_error) = match &live {
        Some(Ok(l)) => (Some(format!("{:?}", l.status)), l.progress.clone(), None),
        Some(Err(e)) => (None, None, Some(e.clone())),
        None => (None, None, None),
    };
    let pending = match &live {
        Some(Ok(l)) => l.pending.clone(),
        _ => Vec::new(),
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "pipeline": pipeline,
                "watermark": wm.and_then(|w| w.value.map(|v| format_cursor(v, w.value_type))),
                "watermark_type": wm.map(|w| w.value_type),
                "watermark_run_seq": wm.map(|w| w.run_seq),
                "target_version": wm.and_then(|w| w.target_version),
                "lag_seconds": wm.and_then(lag_seconds),
                "last_runs": last,
                "live": {"status": live_status, "progress": live_progress, "pending_activities": pending, "error": live_error},
            }))
            .expect("status serialises")
        );
        return;
    }
    println!("pipeline {pipeline}");
    match wm {
        Some(w) => {
            println!(
                "  watermark  {} (run {}, target version {}){}",
                format_opt(w.value, Some(w.value_type)),
                w.run_seq,
                w.target_version.map_or("-".into(), |v| v.to_string()),
                lag_seconds(w).map_or(String::new(), |s| format!(", lag {}", human_secs(s)))
            );
        }
        None => println!("  watermark  none yet"),
    }
    match (&live_status, &live_progress, &live_error) {
        (_, Some(p), _) => println!(
            "  running    phase {}, run {}, extracted {}, batch {}, window [{}, {}]",
            p.phase.as_str(),
            p.run_seq.map_or("-".into(), |v| v.to_string()),
            p.rows_extracted,
            p.rows_batch,
            format_opt(p.window_low, p.cursor_type),
            format_opt(p.window_high, p.cursor_type)
        ),
        (Some(s), None, _) if s == "Running" && !pending.is_empty() => {
            println!("  running    (no worker answered the progress query)")
        }
        (Some(s), None, _) if s == "Running" => {
            println!("  running    no progress reported yet: is a worker polling the task queue?")
        }
        (Some(s), None, _) => println!("  last run   {s}"),
        (_, _, Some(e)) => println!("  live       unavailable ({e})"),
        _ => println!("  live       no workflow found"),
    }
    for a in &pending {
        println!(
            "  activity   {} attempt {}{}",
            a.activity,
            a.attempt,
            a.last_failure
                .as_ref()
                .map_or(String::new(), |f| format!(" (last failure: {f})"))
        );
    }
    if last.is_empty() {
        println!("  no runs recorded");
        return;
    }
    println!(
        "  {:>5}  {:<10}  {:>9}  {:>8}  {:>8}  {:>7}  {:<27}  finished",
        "run", "status", "extracted", "inserted", "updated", "version", "watermark after"
    );
    for e in last {
        println!(
            "  {:>5}  {:<10}  {:>9}  {:>8}  {:>8}  {:>7}  {:<27}  {}",
            e.run_seq.map_or("-".into(), |v| v.to_string()),
            e.status,
            e.rows_extracted,
            e.rows_inserted,
            e.rows_updated,
            e.target_version.map_or("-".into(), |v| v.to_string()),
            e.watermark_after.clone().unwrap_or_else(|| "-".into()),
            e.finished_at
        );
        if let Some(err) = &e.error {
            println!("         error: {err}");
        }
    }
}

fn human_secs(s: i64) -> String {
    if s.abs() < 120 {
        format!("{s}s")
    } else if s.abs() < 7200 {
        format!("{}m", s / 60)
    } else if s.abs() < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}
