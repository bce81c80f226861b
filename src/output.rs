//! User-facing output of the CLI: one place that prints, as text tables or JSON.

use serde_json::json;
use tidemark::cursor::{format_cursor, format_opt};
use tidemark::monitor::{self, Alert, human_ms};
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
                "files_total": p.files_total,
                "files_skipped": p.files_skipped,
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
                "activities": p.run_activities(),
                "alerts": p.alerts,
                "schema_change": p.schema_change,
                "checks": p.checks,
                "batch_count": p.batch.max(1),
                "batches": batches_json(p),
                "batches_capped": p.batches_capped,
                "oversized_value": p.oversized_value,
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
    if !p.batches.is_empty() {
        println!(
            "  batches     {} committed (each its own run_seq {}..={}){}",
            p.batches.len(),
            p.batches.first().map_or(0, |b| b.run_seq),
            p.batches.last().map_or(0, |b| b.run_seq),
            if p.batches_capped {
                "; stopped at [execution] max_batches: the next run goes on"
            } else {
                ""
            }
        );
    }
    if let Some(v) = &p.oversized_value {
        println!(
            "  WARNING     cursor value {v} holds more rows than [source] max_batch_rows: read whole in one batch (rows tied at a value are never split)"
        );
    }
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
        .run_activities()
        .iter()
        .map(|a| {
            let local = if a.local { " local" } else { "" };
            match a.attempt {
                0 | 1 => format!("{} {} ms{local}", a.activity, a.elapsed_ms),
                n => format!("{} {} ms{local} (attempt {n})", a.activity, a.elapsed_ms),
            }
        })
        .collect();
    let over = match p.batches.len() {
        0 | 1 => String::new(),
        n => format!("; summed over {n} batches"),
    };
    println!("  time        {elapsed_ms} ms ({}{over})", steps.join(", "));
    if let Some(change) = &p.schema_change {
        println!("  schema      {}", change.summary());
    }
    if !p.checks.is_empty() {
        let shown: Vec<String> = p
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({})",
                    c.name,
                    if c.passed { "passed" } else { "FAILED" },
                    tidemark::checks::shown(c.value)
                )
            })
            .collect();
        println!("  checks      {}", shown.join(", "));
    }
    if !p.alerts.is_empty() {
        println!(
            "  ALERTS      {} (details: `tidemark status {pipeline}`)",
            p.alerts.join(", ")
        );
    }
}

/// The batches of a run, for `--json` (one entry, the run itself, when it took one).
fn batches_json(p: &tidemark::workflows::payloads::Progress) -> serde_json::Value {
    let ct = p.cursor_type;
    let list: Vec<serde_json::Value> = p
        .batches
        .iter()
        .map(|b| {
            json!({
                "run_seq": b.run_seq,
                "window_low": b.window_low.map(|v| format_opt(Some(v), ct)),
                "window_high": b.window_high.map(|v| format_opt(Some(v), ct)),
                "rows_batch": b.rows_batch,
                "rows_promoted": b.rows_promoted,
                "target_version": b.target_version,
                "elapsed_ms": b.elapsed_ms,
                "activities": b.activities,
            })
        })
        .collect();
    if !list.is_empty() {
        return serde_json::Value::Array(list);
    }
    json!([{
        "run_seq": p.run_seq,
        "window_low": p.window_low.map(|v| format_opt(Some(v), ct)),
        "window_high": p.window_high.map(|v| format_opt(Some(v), ct)),
        "rows_batch": p.rows_batch,
        "rows_promoted": p.rows_promoted,
        "target_version": p.target_version,
    }])
}

/// One line of a live run's progress, as `tidemark run` shows it on a terminal.
pub fn progress_line(p: &tidemark::workflows::payloads::Progress) -> String {
    let batch = if p.batches.is_empty() && p.batches_estimate.is_none() {
        String::new()
    } else {
        match p.batches_estimate {
            Some(n) => format!(" · batch {} of ~{}", p.batch, n.max(p.batch)),
            None => format!(" · batch {}", p.batch),
        }
    };
    format!(
        "  {:<16} run {}{batch} · extracted {} · promoted {}",
        p.phase.as_str(),
        p.run_seq.map_or("-".into(), |s| s.to_string()),
        p.rows_extracted,
        p.rows_promoted
    )
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

/// Everything `status` shows for one pipeline.
pub struct StatusView<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Stored watermark.
    pub wm: Option<&'a Watermark>,
    /// The ledger, oldest first.
    pub runs: &'a [LedgerEntry],
    /// Ledger lines to show.
    pub show_runs: usize,
    /// The server's view of the latest run (or why it is unavailable).
    pub live: Option<Result<tidemark::client::LiveRun, String>>,
    /// Active alerts.
    pub alerts: &'a [Alert],
    /// Backfills and their gaps.
    pub backfills: &'a [tidemark::backfill::Coverage],
}

impl StatusView<'_> {
    fn last(&self) -> Vec<&LedgerEntry> {
        let mut v: Vec<&LedgerEntry> = self.runs.iter().rev().take(self.show_runs).collect();
        v.reverse();
        v
    }

    /// The newest ledger line whose run changed columns under the schema contract.
    fn last_schema_change(&self) -> Option<&LedgerEntry> {
        self.runs
            .iter()
            .rev()
            .find(|e| e.schema.as_ref().is_some_and(|s| !s.is_empty()))
    }

    /// The newest ledger line that ran audit checks.
    fn last_checks(&self) -> Option<&LedgerEntry> {
        self.runs.iter().rev().find(|e| !e.checks.is_empty())
    }

    /// The JSON object of `status --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let wm = self.wm;
        let (status, progress, error, pending) = match &self.live {
            Some(Ok(l)) => (
                Some(format!("{:?}", l.status)),
                l.progress.clone(),
                None,
                l.pending.clone(),
            ),
            Some(Err(e)) => (None, None, Some(e.clone()), Vec::new()),
            None => (None, None, None, Vec::new()),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        json!({
            "pipeline": self.pipeline,
            "watermark": wm.and_then(|w| w.value.map(|v| format_cursor(v, w.value_type))),
            "watermark_type": wm.map(|w| w.value_type),
            "watermark_run_seq": wm.map(|w| w.run_seq),
            "target_version": wm.and_then(|w| w.target_version),
            "lag_seconds": monitor::watermark_lag_ms(wm, now_ms).map(|ms| ms / 1000),
            "alerts": self.alerts,
            "backfills": self.backfills,
            "last_runs": self.last(),
            "last_schema_change": self.last_schema_change().map(|e| json!({
                "run_seq": e.run_seq,
                "finished_at": e.finished_at,
                "change": e.schema,
                "summary": e.schema.as_ref().map(|s| s.summary()),
            })),
            "last_checks": self.last_checks().map(|e| json!({
                "run_seq": e.run_seq,
                "status": e.status,
                "finished_at": e.finished_at,
                "checks": e.checks,
            })),
            "live": {"status": status, "progress": progress, "pending_activities": pending, "error": error},
        })
    }

    /// The human table of `status`.
    pub fn print(&self) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        println!("pipeline {}", self.pipeline);
        match self.wm {
            Some(w) => println!(
                "  watermark  {} (run {}, target version {}){}",
                format_opt(w.value, Some(w.value_type)),
                w.run_seq,
                w.target_version.map_or("-".into(), |v| v.to_string()),
                monitor::watermark_lag_ms(Some(w), now_ms)
                    .map_or(String::new(), |ms| format!(", lag {}", human_ms(ms as u64)))
            ),
            None => println!("  watermark  none yet"),
        }
        if self.alerts.is_empty() {
            println!("  alerts     none");
        }
        for a in self.alerts {
            println!("  ALERT      {}: {}", a.rule, a.message);
        }
        for b in self.backfills {
            if b.gaps.is_empty() {
                println!(
                    "  backfill   {}: all {} windows loaded",
                    b.backfill, b.windows
                );
            } else {
                println!(
                    "  backfill   {}: {}/{} windows loaded; gaps {}",
                    b.backfill,
                    b.covered,
                    b.windows,
                    b.gaps.join(", ")
                );
            }
        }
        if let Some(e) = self.last_schema_change()
            && let Some(change) = &e.schema
        {
            println!(
                "  schema     run {} ({}): {}",
                e.run_seq.map_or("-".into(), |v| v.to_string()),
                e.finished_at,
                change.summary()
            );
        }
        if let Some(e) = self.last_checks() {
            let passed = e.checks.iter().filter(|c| c.passed).count();
            let failed: Vec<String> = e
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| {
                    format!(
                        "`{}` returned {} (expected {}, on_fail {:?})",
                        c.name,
                        tidemark::checks::shown(c.value),
                        c.expectation,
                        c.on_fail
                    )
                })
                .collect();
            let tail = if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join("; "))
            };
            println!(
                "  checks     run {} ({}): {passed}/{} passed{tail}",
                e.run_seq.map_or("-".into(), |v| v.to_string()),
                e.status,
                e.checks.len()
            );
        }
        let pending = match &self.live {
            Some(Ok(l)) => l.pending.clone(),
            _ => Vec::new(),
        };
        match &self.live {
            Some(Ok(l)) => match (&l.progress, format!("{:?}", l.status)) {
                (Some(p), _) => println!(
                    "  running    phase {}, run {}{}, extracted {}, promoted {}, window [{}, {}]",
                    p.phase.as_str(),
                    p.run_seq.map_or("-".into(), |v| v.to_string()),
                    match (p.batches.is_empty(), p.batches_estimate) {
                        (_, Some(n)) => format!(" (batch {} of ~{})", p.batch, n.max(p.batch)),
                        (false, None) => format!(" (batch {})", p.batch),
                        (true, None) => String::new(),
                    },
                    p.rows_extracted,
                    p.rows_promoted,
                    format_opt(p.window_low, p.cursor_type),
                    format_opt(p.window_high, p.cursor_type)
                ),
                (None, s) if s == "Running" && !pending.is_empty() => {
                    println!("  running    (no worker answered the progress query)")
                }
                (None, s) if s == "Running" => println!(
                    "  running    no progress reported yet: is a worker polling the task queue?"
                ),
                (None, s) => println!("  last run   {s}"),
            },
            Some(Err(e)) => println!("  live       unavailable ({e})"),
            None => println!("  live       no workflow found"),
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
        let last = self.last();
        if last.is_empty() {
            println!("  no runs recorded");
            return;
        }
        ledger_table(&last);
    }
}

/// The ledger as a table (status and history).
pub fn ledger_table(entries: &[&LedgerEntry]) {
    println!(
        "  {:>5}  {:<10}  {:>9}  {:>8}  {:>8}  {:>8}  {:>7}  {:>9}  {:<27}  finished",
        "run",
        "status",
        "extracted",
        "batch",
        "inserted",
        "updated",
        "version",
        "time",
        "watermark after"
    );
    for e in entries {
        println!(
            "  {:>5}  {:<10}  {:>9}  {:>8}  {:>8}  {:>8}  {:>7}  {:>9}  {:<27}  {}",
            e.run_seq.map_or("-".into(), |v| v.to_string()),
            e.status,
            e.rows_extracted,
            e.rows_batch,
            e.rows_inserted,
            e.rows_updated,
            e.target_version.map_or("-".into(), |v| v.to_string()),
            e.run_ms.map_or("-".into(), human_ms),
            e.watermark_after.clone().unwrap_or_else(|| "-".into()),
            e.finished_at
        );
        if let Some(err) = &e.error {
            println!("         error: {err}");
        }
        if let Some(note) = &e.note {
            println!("         {note}");
        }
        for a in &e.alerts {
            println!("         alert {}: {}", a.rule, a.message);
        }
    }
}
