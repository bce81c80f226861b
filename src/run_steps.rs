//! The four steps of a run (and failure recording) as plain async functions over the payload
//! types: what the activities call, and what tests call directly to exercise retries and
//! crashes without a worker.

use crate::batch::{RunContext, read_next_watermark};
use crate::crash;
use crate::cursor::format_opt;
use crate::error::{EngineError, Result};
use crate::state::ledger::LedgerEntry;
use crate::state::watermark::{Advance, Watermark};
use crate::state::{self, StateStore};
use crate::target::delta::{self, PromoteRequest};
use crate::target::{self, Target};
use crate::{metrics, monitor, source};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Instant;
use tidemark_workflows::payloads::{
    CheckResult, CommitInput, FailureInput, LocalProcessInput, LocalProcessOutcome, Phase,
    ProcessManifest, PromoteOutput, RunIdentity, SchemaChange, StageOutput, WatermarkInput,
    WatermarkOutput,
};
use tidemark_workflows::spec::{PipelineSpec, WriteMode};

/// The app id of the quarantine table's commits.
pub fn quarantine_app_id(pipeline: &str) -> String {
    format!("{}:quarantine", tidemark_workflows::app_id(pipeline))
}

/// Brings the watermark store up to the target: if the target holds a run the store does not
/// (a crash after promote, before the watermark update), installs that run's watermark from
/// the commit metadata and records it in the ledger. Returns the store's watermark.
pub async fn reconcile(spec: &PipelineSpec) -> Result<Option<Watermark>> {
    let state = state::open(spec)?;
    let target = target::open(spec)?;
    reconcile_with(spec, &*state, &*target).await
}

/// [`reconcile`] with the pipeline's store and target already opened.
async fn reconcile_with(
    spec: &PipelineSpec,
    state: &dyn StateStore,
    target: &dyn Target,
) -> Result<Option<Watermark>> {
    let stored = state.read_watermark()?;
    let Some(committed) = target.committed_run().await? else {
        return Ok(stored);
    };
    let current = match stored {
        Some(w) if w.run_seq >= committed.run_seq => Some(w),
        _ => {
            let mut wm = target::committed_watermark(&committed, target, &spec.name)?;
            wm.target_version = Some(committed.version);
            tracing::warn!(
                pipeline = %spec.name,
                run_seq = committed.run_seq,
                version = committed.version,
                "watermark store was behind the target; reconciled from the commit metadata"
            );
            state.advance_watermark(&wm)?;
            Some(wm)
        }
    };
    // The ledger records every committed run, whichever interleaving of crashes left it out.
    if state.committed_entry(committed.run_seq)?.is_none() {
        let now = now_rfc3339();
        let after = committed
            .watermark
            .as_ref()
            .map(|w| format_opt(w.value, Some(w.value_type)));
        state.append_ledger(&LedgerEntry {
            run_seq: Some(committed.run_seq),
            status: "reconciled".into(),
            started_at: now.clone(),
            finished_at: now,
            rows_inserted: committed.rows_inserted,
            rows_updated: committed.rows_updated,
            watermark_after: after,
            target_version: Some(committed.version),
            ..Default::default()
        })?;
    }
    Ok(current)
}

/// `process`: reconcile, then build the batch on a blocking thread.
pub async fn process(spec: PipelineSpec) -> Result<ProcessManifest> {
    process_as_of(spec, None).await
}

/// [`process`] for a scheduled run: a timestamp cursor's rows past `as_of_ms` (the schedule's
/// action time) are left to the next run.
pub async fn process_as_of(spec: PipelineSpec, as_of_ms: Option<i64>) -> Result<ProcessManifest> {
    process_bounded(spec, as_of_ms, None).await
}

/// [`process_as_of`] with an exclusive upper bound in cursor units (a backfill window's end).
pub async fn process_bounded(
    spec: PipelineSpec,
    as_of_ms: Option<i64>,
    until: Option<i64>,
) -> Result<ProcessManifest> {
    let Ok(manifest) = process_unless(spec, as_of_ms, until, |_| Ok::<(), Infallible>(())).await?;
    Ok(manifest)
}

/// [`process_bounded`], unless `gate`, given the reconciled watermark, says why not: then
/// nothing is read and the gate's reason is returned.
async fn process_unless<E>(
    spec: PipelineSpec,
    as_of_ms: Option<i64>,
    until: Option<i64>,
    gate: impl FnOnce(Option<&Watermark>) -> std::result::Result<(), E>,
) -> Result<std::result::Result<ProcessManifest, E>> {
    let started = Instant::now();
    let state = state::open(&spec)?;
    let target = target::open(&spec)?;
    let store = reconcile_with(&spec, &*state, &*target).await?;
    if let Err(reason) = gate(store.as_ref()) {
        return Ok(Err(reason));
    }
    let reconcile_ms = started.elapsed().as_secs_f64() * 1e3;
    let as_of_us = as_of_ms.map(|ms| ms.saturating_mul(1000));
    let name = spec.name.clone();
    let group_by = target.batch_groups();
    let manifest = tokio::task::spawn_blocking(move || {
        let run_seq = store.as_ref().map_or(0, |w| w.run_seq) + 1;
        // Runs of a pipeline never overlap, so files of earlier runs are debris (of a run
        // that died, or of a zombie attempt that woke after its run ended): clear them. The
        // current run's files are left alone: a zombie attempt of this same run may be
        // writing them, and every one is replaced atomically.
        state.clear_runs_before(run_seq)?;
        target.clear_staging_before(run_seq)?;
        source::build(&RunContext {
            spec: &spec,
            store: store.as_ref(),
            state: &*state,
            run_seq,
            as_of_us,
            until,
            started,
            group_by: &group_by,
        })
    })
    .await
    .map_err(|e| EngineError::io("process task", std::io::Error::other(e.to_string())))??;
    tracing::debug!(
        pipeline = %name,
        reconcile_ms,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "process phases"
    );
    crash::point("after_process");
    Ok(Ok(manifest))
}

/// `process_local`: [`process_bounded`] inside the workflow task, when the previous run was
/// small and recent (its window was, so this one likely is); otherwise it reads nothing past
/// the reconcile and says why, and the workflow runs `process` as a regular, heartbeating
/// activity.
pub async fn process_local(input: LocalProcessInput) -> Result<LocalProcessOutcome> {
    let p = input.process;
    let name = p.spec.name.clone();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let gate = |previous: Option<&Watermark>| match p.until {
        Some(_) => Err("a backfill window".to_string()),
        None => match local_refusal(previous, input.max_rows, input.max_age_ms, now_ms) {
            Some(reason) => Err(reason),
            None => Ok(()),
        },
    };
    match process_unless(p.spec, p.as_of_ms, p.until, gate).await? {
        Ok(manifest) => Ok(LocalProcessOutcome::Done(Box::new(manifest))),
        Err(reason) => {
            tracing::debug!(pipeline = %name, %reason, "process runs as a regular activity");
            Ok(LocalProcessOutcome::Deferred(reason))
        }
    }
}

/// Why `process` should not run inside a workflow task, judged from the previous run's
/// watermark (None: it may).
fn local_refusal(
    previous: Option<&Watermark>,
    max_rows: u64,
    max_age_ms: u64,
    now_ms: i64,
) -> Option<String> {
    let Some(w) = previous else {
        return Some("the pipeline's first run".into());
    };
    if w.row_count > max_rows {
        return Some(format!(
            "the previous run committed {} rows (more than local_max_rows = {max_rows})",
            w.row_count
        ));
    }
    let written_ms = chrono::DateTime::parse_from_rfc3339(&w.updated_at)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    let age_ms = now_ms.saturating_sub(written_ms);
    if age_ms < 0 || age_ms as u64 > max_age_ms {
        return Some(format!(
            "the previous run's watermark is {} s old (a pause may have left a big window)",
            age_ms / 1000
        ));
    }
    None
}

/// `stage`: copy the batch files into the target's staging area.
pub async fn stage(input: CommitInput) -> Result<StageOutput> {
    let started = Instant::now();
    let (spec, m) = (&input.spec, &input.manifest);
    let mut files = Vec::new();
    let mut bytes = 0;
    if let (Some(q), Some(qpath)) = (&m.quarantine, &spec.late.quarantine_path) {
        let (q, qpath, name, seq) = (q.clone(), qpath.clone(), spec.name.clone(), m.run_seq);
        crate::storage::use_spec_options(spec);
        let (dest, n) = target::blocking(move || {
            let local = crate::storage::local_batch(&q.path, &q.sha256)?;
            delta::stage_file(local.path(), &q.sha256, &qpath, &name, seq)
        })
        .await?;
        files.push(dest);
        bytes += n;
    }
    if let Some(b) = &m.batch {
        let staged = target::open(spec)?.stage(b, &m.schema, m.run_seq).await?;
        files.extend(staged.locations);
        bytes += staged.bytes;
    }
    crash::point("after_stage");
    Ok(StageOutput {
        files,
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        attempt: 0,
    })
}

/// `promote`: the audit checks, then one idempotent commit per table (quarantine first, then
/// the target). A failed `fail` check publishes nothing.
pub async fn promote(input: CommitInput) -> Result<PromoteOutput> {
    if crash::fails("promote") {
        return Err(EngineError::Injected("promote"));
    }
    let started = Instant::now();
    let (spec, m) = (&input.spec, &input.manifest);
    let state = state::open(spec)?;
    let next = read_next_watermark(&*state, m)?;
    let watermark_json = next.to_json();
    let target = target::open(spec)?;
    let mut out = PromoteOutput {
        checks: audit(spec, m, &*state, &*target).await?,
        ..PromoteOutput::default()
    };
    let cdc = target::CdcApply::of(spec, m);
    if let (Some(q_file), Some(qpath)) = (&m.quarantine, &spec.late.quarantine_path) {
        crate::storage::use_spec_options(spec);
        let staged = delta::ensure_staged(q_file, qpath, &spec.name, m.run_seq)?;
        let app_id = quarantine_app_id(&spec.name);
        let q = delta::promote(&PromoteRequest {
            table: qpath,
            app_id: &app_id,
            pipeline: &spec.name,
            run_seq: m.run_seq,
            staged: staged.path(),
            staged_rows: q_file.rows,
            mode: WriteMode::Append,
            key: &[],
            cursor: &spec.source.cursor,
            partition_by: &[],
            partition_stable: false,
            watermark_json: &watermark_json,
            cdc: None,
            contract: &spec.schema,
            columns: &m.schema,
            deletion_vectors: false,
        })
        .await?;
        out.quarantine_version = q.version;
    }
    let mut committed = None;
    if let Some(b) = &m.batch {
        let p = target
            .promote(b, &m.schema, m.run_seq, &watermark_json, cdc)
            .await?;
        crash::point("promote_after_commit");
        out.rows_stale = b.rows.saturating_sub(p.inserted + p.updated + p.deleted);
        committed = Some(p);
    } else if cdc.is_some_and(|c| c.truncate) {
        // A truncate with no change after it in the batch: empty the target, one commit.
        let p = target.promote_truncate(m.run_seq, &watermark_json).await?;
        crash::point("promote_after_commit");
        committed = Some(p);
    }
    if let Some(p) = committed {
        out.target_version = p.version;
        out.already_promoted = p.already;
        out.rows_inserted = p.inserted;
        out.rows_updated = p.updated;
        out.rows_deleted = p.deleted;
        out.schema_change = schema_change_of(spec, m, &*state, p.schema, p.already)?;
    }
    out.duration_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

/// The schema change a promote made, kept in the run's files so that a retry that finds the
/// run committed reports it too (and logged once, when made).
fn schema_change_of(
    spec: &PipelineSpec,
    m: &ProcessManifest,
    state: &dyn StateStore,
    made: Option<SchemaChange>,
    already: bool,
) -> Result<Option<SchemaChange>> {
    if let Some(change) = made {
        tracing::warn!(
            pipeline = %spec.name,
            run_seq = m.run_seq,
            added = change.added.len(),
            widened = change.widened.len(),
            nulled = change.nulled.len(),
            ignored = change.ignored.len(),
            applied = change.applied.as_deref().unwrap_or(""),
            "schema change: {}",
            change.summary()
        );
        let json = serde_json::to_vec(&change).expect("serialisable");
        state.write_run_file(m.run_seq, "schema_change.json", &json)?;
        return Ok(Some(change));
    }
    if !already {
        return Ok(None);
    }
    Ok(state
        .read_run_file(&state.run_file_location(m.run_seq, "schema_change.json"))?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Runs the spec's audit checks over the staged batch (unless the run is already committed:
/// then their recorded results), records them in the run's files, and refuses the batch when
/// a `fail` check fails.
async fn audit(
    spec: &PipelineSpec,
    m: &ProcessManifest,
    state: &dyn StateStore,
    target: &dyn Target,
) -> Result<Vec<CheckResult>> {
    let Some(b) = &m.batch else {
        return Ok(Vec::new());
    };
    if spec.checks.is_empty() {
        return Ok(Vec::new());
    }
    let recorded = || -> Result<Vec<CheckResult>> {
        Ok(state
            .read_run_file(&state.run_file_location(m.run_seq, "checks.json"))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    };
    if target
        .committed_run()
        .await?
        .is_some_and(|c| c.run_seq >= m.run_seq)
    {
        return recorded();
    }
    let frame = if spec.checks.iter().any(|c| c.reads_target) {
        Some(target.scan().await?)
    } else {
        None
    };
    let (checks, path, sha) = (spec.checks.clone(), b.path.clone(), b.sha256.clone());
    let results = target::blocking(move || {
        let local = crate::storage::local_batch(&path, &sha)?;
        let target = || {
            frame
                .clone()
                .ok_or_else(|| EngineError::CheckFailed("no target frame".into()))
        };
        crate::checks::run(&checks, local.path(), &target)
    })
    .await?;
    for r in &results {
        tracing::info!(
            pipeline = %spec.name,
            run_seq = m.run_seq,
            check = %r.name,
            value = ?r.value,
            passed = r.passed,
            "check {} returned {} (expected {})",
            r.name,
            crate::checks::shown(r.value),
            r.expectation
        );
    }
    let json = serde_json::to_vec(&results).expect("serialisable");
    state.write_run_file(m.run_seq, "checks.json", &json)?;
    if let Some(refused) = crate::checks::refusal(&results) {
        return Err(refused);
    }
    Ok(results)
}

/// `update_watermark`: install the run's watermark (only ever forwards), record the run in the
/// ledger once, and remove its batch files.
pub async fn update_watermark(input: WatermarkInput) -> Result<WatermarkOutput> {
    let started = Instant::now();
    let (spec, m) = (&input.commit.spec, &input.commit.manifest);
    let state = state::open(spec)?;
    let target = target::open(spec)?;
    let (advance, value) = match read_next_watermark(&*state, m) {
        Ok(mut next) => {
            next.target_version = match &input.promote {
                Some(p) => p.target_version,
                None => state.read_watermark()?.and_then(|w| w.target_version),
            };
            crash::point("before_watermark_write");
            let advanced = state.advance_watermark(&next)?;
            crash::point("after_watermark_write");
            (advanced, next.value)
        }
        // The run directory is gone: a previous attempt finished and cleaned up.
        Err(EngineError::Integrity(_)) => {
            let cur = state.read_watermark()?;
            match cur {
                Some(w) if w.run_seq >= m.run_seq => (Advance::AlreadyCurrent, w.value),
                _ => {
                    return Err(EngineError::Integrity(format!(
                        "run {} of {} lost its batch directory before its watermark was stored",
                        m.run_seq, spec.name
                    )));
                }
            }
        }
        Err(e) => return Err(e),
    };
    let alerts = if let Some(done) = state.committed_entry(m.run_seq)? {
        done.alerts
    } else {
        let p = input.promote.clone();
        let mut durations = BTreeMap::new();
        durations.insert("process".to_string(), m.duration_ms);
        durations.insert("stage".to_string(), input.stage_ms);
        if let Some(p) = &p {
            durations.insert("promote".to_string(), p.duration_ms);
        }
        durations.insert(
            "update_watermark".to_string(),
            started.elapsed().as_millis() as u64,
        );
        // A run is `succeeded` when the target holds a commit of it: Delta writes none for a
        // MERGE that changes nothing, but one that changes only the schema (a batch whose
        // rows all lose, carrying a new column) is a commit; PostgreSQL and Parquet always
        // commit a non-empty batch.
        let committed = |p: &PromoteOutput| {
            p.rows_inserted + p.rows_updated + p.rows_deleted > 0
                || p.already_promoted
                || (p.schema_change.is_some() && p.target_version.is_some())
                || (target.commits_every_batch() && p.target_version.is_some())
        };
        let status = if p.as_ref().is_some_and(committed) {
            "succeeded"
        } else {
            "empty"
        };
        let mut entry = LedgerEntry {
            run_seq: Some(m.run_seq),
            status: status.into(),
            workflow_id: input.commit.run.workflow_id.clone(),
            run_id: input.commit.run.run_id.clone(),
            started_at: ms_rfc3339(input.commit.run.started_at_ms),
            finished_at: now_rfc3339(),
            window_low: m
                .window_low
                .map(|v| format_opt(Some(v), Some(m.cursor_type))),
            window_high: m
                .window_high
                .map(|v| format_opt(Some(v), Some(m.cursor_type))),
            rows_extracted: m.rows_extracted,
            rows_deduplicated: m.rows_deduplicated,
            rows_late: m.rows_late,
            rows_quarantined: m.rows_quarantined,
            rows_inserted: p.as_ref().map_or(0, |p| p.rows_inserted),
            rows_updated: p.as_ref().map_or(0, |p| p.rows_updated),
            watermark_before: m
                .watermark_before
                .map(|v| format_opt(Some(v), Some(m.cursor_type))),
            watermark_after: value.map(|v| format_opt(Some(v), Some(m.cursor_type))),
            target_version: p.as_ref().and_then(|p| p.target_version),
            durations_ms: durations,
            error: None,
            rows_batch: m.rows_batch,
            rows_deleted: p.as_ref().map_or(0, |p| p.rows_deleted),
            cdc: m.cdc.clone(),
            schema: combined_schema_change(m, p.as_ref()),
            checks: p.as_ref().map(|p| p.checks.clone()).unwrap_or_default(),
            ..Default::default()
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let run_ms = (now_ms - input.commit.run.started_at_ms).max(0) as u64;
        let stored = state.read_watermark()?;
        entry.lag_ms = monitor::watermark_lag_ms(stored.as_ref(), now_ms);
        entry.run_ms = Some(run_ms);
        let previous = state.recent_committed(m.run_seq, monitor::history_needed(&spec.monitor))?;
        entry.alerts = monitor::evaluate(
            &spec.monitor,
            &previous,
            &entry,
            run_ms,
            stored.as_ref(),
            now_ms,
        );
        for a in &entry.alerts {
            tracing::warn!(
                pipeline = %spec.name,
                run_seq = m.run_seq,
                alert = %a.rule,
                "alert: {}",
                a.message
            );
        }
        state.append_ledger(&entry)?;
        metrics::record_run(&spec.name, &entry);
        entry.alerts
    };
    cleanup_run(spec, m.run_seq).await?;
    if let Ok(stored) = read_stored(&*state) {
        // Advisory (Kafka tools see the group's progress); the watermark is the truth.
        let spec = spec.clone();
        let _ = tokio::task::spawn_blocking(move || {
            source::of(&spec).after_commit(&spec, &stored.positions)
        })
        .await;
    }
    Ok(WatermarkOutput {
        watermark: value,
        updated: advance == Advance::Written,
        alerts: alerts.iter().map(|a| a.rule.clone()).collect(),
        duration_ms: started.elapsed().as_millis() as u64,
        attempt: 0,
    })
}

/// What the schema contract did in a run: the unification of its inputs (process) and the
/// table's change (promote).
pub fn combined_schema_change(
    m: &ProcessManifest,
    promoted: Option<&PromoteOutput>,
) -> Option<SchemaChange> {
    let mut all = m.schema_resolution.clone().unwrap_or_default();
    if let Some(change) = promoted.and_then(|p| p.schema_change.as_ref()) {
        all.absorb(change);
    }
    (!all.is_empty()).then_some(all)
}

/// `record_failure`: append a failed entry and remove the run's staging and batch files.
pub async fn record_failure(input: FailureInput) -> Result<()> {
    let state = state::open(&input.spec)?;
    metrics::record_failure(&input.spec.name);
    let RunIdentity {
        workflow_id,
        run_id,
        started_at_ms,
    } = &input.run;
    // Checks that refused the batch: recorded with the failure, and the batch stays staged
    // (and its run files kept) for inspection until the next run clears them.
    let by_checks = input.phase == Phase::Promote && input.message.contains("check failed");
    let checks: Vec<CheckResult> = match input.run_seq {
        Some(seq) if by_checks => state
            .read_run_file(&state.run_file_location(seq, "checks.json"))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let refused = crate::checks::refusal(&checks).is_some();
    state.append_ledger(&LedgerEntry {
        run_seq: input.run_seq,
        status: "failed".into(),
        workflow_id: workflow_id.clone(),
        run_id: run_id.clone(),
        started_at: ms_rfc3339(*started_at_ms),
        finished_at: now_rfc3339(),
        error: Some(format!("{}: {}", input.phase.as_str(), input.message)),
        checks,
        ..Default::default()
    })?;
    if let Some(seq) = input.run_seq
        && !refused
    {
        cleanup_run(&input.spec, seq).await?;
    }
    Ok(())
}

/// Removes a run's staging (directories or table) and batch directory.
pub async fn cleanup_run(spec: &PipelineSpec, run_seq: u64) -> Result<()> {
    target::open(spec)?.cleanup(run_seq).await?;
    if let Some(q) = &spec.late.quarantine_path {
        crate::storage::use_spec_options(spec);
        delta::remove_staging(q, &spec.name, run_seq)?;
    }
    state::open(spec)?.remove_run(run_seq)
}

fn read_stored(state: &dyn StateStore) -> Result<Watermark> {
    state
        .read_watermark()?
        .ok_or_else(|| EngineError::Watermark("no stored watermark".into()))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms_rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_workflows::cursor::CursorType;

    fn written(row_count: u64, at: &str) -> Watermark {
        Watermark {
            row_count,
            updated_at: at.into(),
            ..Watermark::sample(1, 1, CursorType::Integer)
        }
    }

    #[test]
    fn process_runs_locally_only_after_a_small_recent_run() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .timestamp_millis();
        let hour = 3_600_000;
        let small_recent = written(10, "2026-12-04T11:59:00Z");
        assert_eq!(local_refusal(Some(&small_recent), 100, hour, now), None);
        assert!(
            local_refusal(None, 100, hour, now)
                .unwrap()
                .contains("first run")
        );
        let big = written(101, "2026-12-04T11:59:00Z");
        assert!(
            local_refusal(Some(&big), 100, hour, now)
                .unwrap()
                .contains("101 rows")
        );
        let old = written(10, "2026-12-04T10:00:00Z");
        assert!(
            local_refusal(Some(&old), 100, hour, now)
                .unwrap()
                .contains("7200 s old")
        );
        let unreadable = written(10, "yesterday");
        assert!(local_refusal(Some(&unreadable), 100, hour, now).is_some());
    }
}
