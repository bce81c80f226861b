//! The `IncrementalRun` workflow: process → stage → promote → update_watermark.
//!
//! Deterministic by construction: it only calls activities, reads workflow time, and keeps
//! its state in the struct the `progress` query reads. The run's identity (run_seq) and window
//! come from `process` and are recorded in history, so every retry of a later activity reuses
//! them. The watermark is written only after promote returned.

#![allow(unreachable_pub)]

use crate::contracts;
use crate::options::{bookkeeping_activity, data_activity};
use crate::payloads::{
    ActivityTiming, CommitInput, FailureInput, Phase, ProcessInput, Progress, RunIdentity,
    RunInput, RunOptions, RunSummary, WatermarkInput,
};
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_common::search_attributes::{SearchAttributeKey, Timestamp};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

/// The search attribute a Temporal Schedule sets on the runs it starts.
const SCHEDULED_START_TIME: SearchAttributeKey<Timestamp> =
    SearchAttributeKey::datetime("TemporalScheduledStartTime");

/// The search attribute listing the alert rules that fired for a run (KeywordList), so the
/// Temporal UI can list alerting runs: `TidemarkAlert IS NOT NULL`.
pub const ALERT_ATTRIBUTE: SearchAttributeKey<Vec<String>> =
    SearchAttributeKey::keyword_list(crate::ALERT_ATTRIBUTE_NAME);

/// One incremental run of one pipeline.
#[workflow]
#[derive(Default)]
pub struct IncrementalRun {
    progress: Progress,
    options: RunOptions,
}

fn millis(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn elapsed_ms(ctx: &WorkflowContext<IncrementalRun>, since_ms: i64) -> u64 {
    (millis(ctx.workflow_time()) - since_ms).max(0) as u64
}

/// Awaits an activity; on error records the failure (phase, message) and fails the run.
macro_rules! or_fail {
    ($ctx:expr, $failure:expr, $phase:expr, $call:expr) => {
        match $call.await {
            Ok(out) => out,
            Err(e) => return fail($ctx, $failure, $phase, e.to_string(), e.into()).await,
        }
    };
}

#[workflow_methods]
impl IncrementalRun {
    /// Runs the four activities in order; on failure records it in the ledger and fails.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RunInput,
    ) -> WorkflowResult<RunSummary> {
        let started_ms = millis(ctx.workflow_time());
        let run = RunIdentity {
            workflow_id: ctx.workflow_id().to_string(),
            run_id: ctx.run_id().to_string(),
            started_at_ms: started_ms,
        };
        let spec = input.spec;
        let opts = input.options;
        // A run started by a Temporal Schedule carries its action time: the run's window ends
        // there, however late the run starts or however often it is retried.
        let as_of_ms = input.as_of_ms.or_else(|| scheduled_start_ms(ctx));
        ctx.state_mut(|s| s.options = opts);
        ctx.state_mut(|s| {
            s.progress.pipeline = spec.name.clone();
            s.progress.as_of_ms = as_of_ms;
        });
        let mut failure = FailureInput {
            spec: spec.clone(),
            run: run.clone(),
            run_seq: None,
            phase: Phase::Process,
            message: String::new(),
        };

        // process: fixes run_seq and the window for every later retry.
        set_phase(ctx, Phase::Process);
        let t0 = millis(ctx.workflow_time());
        let process_input = ProcessInput {
            spec: spec.clone(),
            run: run.clone(),
            as_of_ms,
            until: input.until,
        };
        let manifest = or_fail!(
            ctx,
            &failure,
            Phase::Process,
            ctx.execute_activity(contracts::Process, process_input, data_activity(&opts))
        );
        failure.run_seq = Some(manifest.run_seq);
        let process_ms = elapsed_ms(ctx, t0);
        ctx.state_mut(|s| {
            let p = &mut s.progress;
            p.run_seq = Some(manifest.run_seq);
            p.cursor_type = Some(manifest.cursor_type);
            p.window_low = manifest.window_low;
            p.window_high = manifest.window_high;
            p.files_total = manifest.files_total;
            p.files_skipped = manifest.files_skipped;
            p.rows_extracted = manifest.rows_extracted;
            p.rows_deduplicated = manifest.rows_deduplicated;
            p.rows_late = manifest.rows_late;
            p.rows_quarantined = manifest.rows_quarantined;
            p.rows_batch = manifest.rows_batch;
            p.watermark_before = manifest.watermark_before;
            p.watermark_after = manifest.watermark_after;
        });
        record_timing(ctx, "process", process_ms, manifest.attempt);

        let commit = CommitInput {
            spec: spec.clone(),
            run: run.clone(),
            manifest: manifest.clone(),
        };
        let mut promoted = None;
        let mut stage_ms = 0;
        if manifest.has_rows() {
            set_phase(ctx, Phase::Stage);
            let t0 = millis(ctx.workflow_time());
            let staged = or_fail!(
                ctx,
                &failure,
                Phase::Stage,
                ctx.execute_activity(contracts::Stage, commit.clone(), data_activity(&opts))
            );
            stage_ms = elapsed_ms(ctx, t0);
            record_timing(ctx, "stage", stage_ms, staged.attempt);

            set_phase(ctx, Phase::Promote);
            let t0 = millis(ctx.workflow_time());
            let out = or_fail!(
                ctx,
                &failure,
                Phase::Promote,
                ctx.execute_activity(contracts::Promote, commit.clone(), data_activity(&opts))
            );
            let ms = elapsed_ms(ctx, t0);
            ctx.state_mut(|s| {
                s.progress.rows_promoted = out.rows_inserted + out.rows_updated;
                s.progress.target_version = out.target_version;
                s.progress.already_promoted = out.already_promoted;
            });
            record_timing(ctx, "promote", ms, out.attempt);
            promoted = Some(out);
        }

        // update_watermark: only after promote returned.
        set_phase(ctx, Phase::UpdateWatermark);
        let t0 = millis(ctx.workflow_time());
        let wm_input = WatermarkInput {
            commit,
            promote: promoted,
            stage_ms,
        };
        let updated = or_fail!(
            ctx,
            &failure,
            Phase::UpdateWatermark,
            ctx.execute_activity(
                contracts::UpdateWatermark,
                wm_input,
                bookkeeping_activity(&opts)
            )
        );
        let ms = elapsed_ms(ctx, t0);
        record_timing(ctx, "update_watermark", ms, updated.attempt);
        if !updated.alerts.is_empty() {
            ctx.state_mut(|s| s.progress.alerts = updated.alerts.clone());
            if opts.alert_search_attribute {
                ctx.upsert_search_attributes([ALERT_ATTRIBUTE.value_set(updated.alerts.clone())]);
            }
        }

        set_phase(ctx, Phase::Succeeded);
        let duration_ms = elapsed_ms(ctx, started_ms);
        Ok(RunSummary {
            progress: ctx.state(|s| s.progress.clone()),
            duration_ms,
        })
    }

    /// Live progress: phase, window, counts so far, watermark before/after, and each finished
    /// activity's time and attempt.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        self.progress.clone()
    }
}

/// The action time of a run a Temporal Schedule started (ms since epoch).
pub(crate) fn scheduled_start_ms<W>(ctx: &WorkflowContext<W>) -> Option<i64> {
    ctx.search_attributes()
        .get(&SCHEDULED_START_TIME)
        .map(|t| t.seconds() * 1000 + i64::from(t.nanos()) / 1_000_000)
}

fn set_phase(ctx: &mut WorkflowContext<IncrementalRun>, phase: Phase) {
    ctx.state_mut(|s| s.progress.phase = phase);
}

fn record_timing(
    ctx: &mut WorkflowContext<IncrementalRun>,
    activity: &str,
    elapsed_ms: u64,
    attempt: u32,
) {
    ctx.state_mut(|s| {
        s.progress.activities.push(ActivityTiming {
            activity: activity.to_string(),
            elapsed_ms,
            attempt,
        })
    });
}

/// Marks the run failed, records it in the ledger (best effort: a failure to record does not
/// hide the original error), and fails the workflow with the activity's error.
async fn fail<T>(
    ctx: &mut WorkflowContext<IncrementalRun>,
    failure: &FailureInput,
    phase: Phase,
    message: String,
    error: temporalio_sdk::WorkflowTermination,
) -> WorkflowResult<T> {
    ctx.state_mut(|s| {
        s.progress.phase = Phase::Failed;
        s.progress.error = Some(message.clone());
    });
    let input = FailureInput {
        phase,
        message,
        ..failure.clone()
    };
    let opts = ctx.state(|s| s.options);
    let _ = ctx
        .execute_activity(contracts::RecordFailure, input, bookkeeping_activity(&opts))
        .await;
    Err(error)
}
