//! `tidemark maintain`: one table maintenance of a pipeline — the `maintain` activity of the
//! `Maintain` workflow, which holds the pipeline's workflow id so no run goes on meanwhile.
//! Delegates to the target (`Target::maintain`: compaction, checkpoint and vacuum for Delta;
//! clearing debris elsewhere), with the vacuum retention floored at the pipeline's longest
//! run, and records the result in the ledger (`maintained`).

use crate::error::Result;
use crate::state::ledger::LedgerEntry;
use crate::{state, target};
use std::time::Instant;
use tidemark_workflows::payloads::{MaintainInput, MaintainReport};

/// Runs (or, with `dry_run`, plans) one maintenance.
pub async fn maintain(input: MaintainInput) -> Result<MaintainReport> {
    let started = Instant::now();
    let spec = &input.spec;
    let state = state::open(spec)?;
    let ledger = state.read_ledger()?;
    // A file a run may still need is never vacuumed: the retention covers the longest run.
    let longest_run_ms = ledger.iter().filter_map(|e| e.run_ms).max().unwrap_or(0);
    let target = target::open(spec)?;
    let mut report = target
        .maintain(
            &input.run.run_id,
            &spec.maintenance,
            input.dry_run,
            longest_run_ms,
        )
        .await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        pipeline = %spec.name,
        dry_run = input.dry_run,
        files_compacted = report.files_compacted,
        files_written = report.files_written,
        rows_purged = report.rows_purged,
        files_vacuumed = report.files_vacuumed,
        "maintenance: {}",
        summary(&report)
    );
    if !input.dry_run {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        state.append_ledger(&LedgerEntry {
            status: "maintained".into(),
            workflow_id: input.run.workflow_id.clone(),
            run_id: input.run.run_id.clone(),
            started_at: now.clone(),
            finished_at: now,
            target_version: report.compaction_version,
            note: Some(summary(&report)),
            run_ms: Some(report.duration_ms),
            ..Default::default()
        })?;
    }
    Ok(report)
}

/// One line: what the maintenance did.
pub fn summary(r: &MaintainReport) -> String {
    let verb = if r.dry_run {
        "would compact"
    } else {
        "compacted"
    };
    let mut parts = vec![format!(
        "{verb} {} file(s) into {} ({} deleted rows purged)",
        r.files_compacted, r.files_written, r.rows_purged
    )];
    if let Some(v) = r.checkpoint_version {
        parts.push(format!("checkpoint at version {v}"));
    }
    let vacuumed = if r.dry_run {
        "would vacuum"
    } else {
        "vacuumed"
    };
    parts.push(format!(
        "{vacuumed} {} file(s) older than {} h",
        r.files_vacuumed,
        r.vacuum_retention_ms / 3_600_000
    ));
    parts.join("; ")
}
