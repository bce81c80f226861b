//! The `IncrementalRun` workflow: process → stage → promote → update_watermark.
//!
//! Deterministic by construction: it only calls activities, reads workflow time, and keeps
//! its state in the struct the `progress` query reads. The run's identity (run_seq) and window
//! come from `process` and are recorded in history, so every retry of a later activity reuses
//! them. The watermark is written only after promote returned.

#![allow(unreachable_pub)]

use crate::contracts as run_activities;
use crate::options::{bookkeeping_activity, data_activity};
use crate::payloads::{
    ActivityTiming, CommitInput, FailureInput, Phase, ProcessInput, Progress, RunIdentity,
    RunInput, RunSummary, WatermarkInput,
};
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

/// One incremental run of one pipeline.
#[workflow]
#[derive(Default)]
pub struct IncrementalRun {
    progress: Progress,
}

fn millis(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn elapsed_ms(ctx: &WorkflowContext<IncrementalRun>, since_ms: i64) -> u64 {
    (millis(ctx.workflow_time()) - since_ms).max(0) as u64
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
        ctx.state_mut(|s| s.progress.pipeline = spec.name.clone());

        // process
        set_phase(ctx, Phase::Process);
        let t0 = millis(ctx.workflow_time());
        let process_input = ProcessInput {
            spec: spec.clone(),
            run: run.clone(),
        };
        let manifest = match ctx
            .execute_activity(run_activities::Process, process_input, data_activity())
            .await
        {
            Ok(m) => m,
            Err(e) => {
                return fail(
                    ctx,
                    &spec,
                    &run,
                    None,
                    Phase::Process,
                    e.to_string(),
                    e.into(),
                )
                .await;
            }
        };
        let process_ms = elapsed_ms(ctx, t0);
        ctx.state_mut(|s| {
            let p = &mut s.progress;
            p.run_seq = Some(manifest.run_seq);
            p.cursor_type = Some(manifest.cursor_type);
            p.window_low = manifest.window_low;
            p.window_high = manifest.window_high;
            p.rows_extracted = manifest.rows_extracted;
            p.rows_deduplicated = manifest.rows_deduplicated;
            p.rows_late = manifest.rows_late;
            p.rows_quarantined = manifest.rows_quarantined;
            p.rows_batch = manifest.rows_batch;
            p.watermark_before = manifest.watermark_before;
            p.watermark_after = manifest.watermark_after;
            p.activities.push(ActivityTiming {
                activity: "process".into(),
                elapsed_ms: process_ms,
            });
        });

        let commit = CommitInput {
            spec: spec.clone(),
            run: run.clone(),
            manifest: manifest.clone(),
        };
        let run_seq = Some(manifest.run_seq);
        let mut promote_out = None;
        let mut stage_ms = 0;
        if manifest.has_rows() {
            // stage
            set_phase(ctx, Phase::Stage);
            let t0 = millis(ctx.workflow_time());
            if let Err(e) = ctx
                .execute_activity(run_activities::Stage, commit.clone(), data_activity())
                .await
            {
                return fail(
                    ctx,
                    &spec,
                    &run,
                    run_seq,
                    Phase::Stage,
                    e.to_string(),
                    e.into(),
                )
                .await;
            }
            stage_ms = elapsed_ms(ctx, t0);
            record_timing(ctx, "stage", stage_ms);

            // promote
            set_phase(ctx, Phase::Promote);
            let t0 = millis(ctx.workflow_time());
            let out = match ctx
                .execute_activity(run_activities::Promote, commit.clone(), data_activity())
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    return fail(
                        ctx,
                        &spec,
                        &run,
                        run_seq,
                        Phase::Promote,
                        e.to_string(),
                        e.into(),
                    )
                    .await;
                }
            };
            let ms = elapsed_ms(ctx, t0);
            ctx.state_mut(|s| {
                s.progress.rows_promoted = out.rows_inserted + out.rows_updated;
                s.progress.target_version = out.target_version;
                s.progress.already_promoted = out.already_promoted;
            });
            record_timing(ctx, "promote", ms);
            promote_out = Some(out);
        }

        // update_watermark: only after promote returned.
        set_phase(ctx, Phase::UpdateWatermark);
        let t0 = millis(ctx.workflow_time());
        let wm_input = WatermarkInput {
            commit,
            promote: promote_out,
            stage_ms,
        };
        if let Err(e) = ctx
            .execute_activity(
                run_activities::UpdateWatermark,
                wm_input,
                bookkeeping_activity(),
            )
            .await
        {
            return fail(
                ctx,
                &spec,
                &run,
                run_seq,
                Phase::UpdateWatermark,
                e.to_string(),
                e.into(),
            )
            .await;
        }
        let ms = elapsed_ms(ctx, t0);
        record_timing(ctx, "update_watermark", ms);

        set_phase(ctx, Phase::Succeeded);
        let duration_ms = elapsed_ms(ctx, started_ms);
        Ok(RunSummary {
            progress: ctx.state(|s| s.progress.clone()),
            duration_ms,
        })
    }

    /// Live progress: phase, window, counts so far, watermark before/after, finished activities.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        self.progress.clone()
    }
}

fn set_phase(ctx: &mut WorkflowContext<IncrementalRun>, phase: Phase) {
    ctx.state_mut(|s| s.progress.phase = phase);
}

fn record_timing(ctx: &mut WorkflowContext<IncrementalRun>, activity: &str, elapsed_ms: u64) {
    ctx.state_mut(|s| {
        s.progress.activities.push(ActivityTiming {
            activity: activity.to_string(),
            elapsed_ms,
        })
    });
}

/// Marks the run failed, records it in the ledger (best effort: a failure to record does not
/// hide the original error), and fails the workflow with the activity's error.
async fn fail<T>(
    ctx: &mut WorkflowContext<IncrementalRun>,
    spec: &crate::spec::PipelineSpec,
    run: &RunIdentity,
    run_seq: Option<u64>,
    phase: Phase,
    message: String,
    error: temporalio_sdk::WorkflowTermination,
) -> WorkflowResult<T> {
    ctx.state_mut(|s| {
        s.progress.phase = Phase::Failed;
        s.progress.error = Some(message.clone());
    });
    let input = FailureInput {
        spec: spec.clone(),
        run: run.clone(),
        run_seq,
        phase,
        message,
    };
    let _ = ctx
        .execute_activity(run_activities::RecordFailure, input, bookkeeping_activity())
        .await;
    Err(error)
}
