//! `Backfill`: loads a range of the source window by window, beside the live pipeline.
//!
//! Each window `[low, high)` is one `IncrementalRun` child of a pseudo-pipeline named
//! `<pipeline>@bf-<label>`: its own state directory and watermark, its own idempotency token in
//! the target (Delta app id, `tidemark_runs` row, Parquet marker), so a window is published
//! once however often it is retried, and the live watermark never moves. The window's run
//! reads from `low` (its `initial`) up to `high` exclusive (`until`). At most `parallel`
//! windows load at once; a window whose run fails is retried alone, up to
//! [`WINDOW_ATTEMPTS`] times. Windows that an earlier backfill already loaded are skipped, so a
//! stopped backfill is resumed by starting it again.

#![allow(unreachable_pub)]

use crate::contracts;
use crate::options::bookkeeping_activity;
use crate::payloads::{
    BackfillInput, BackfillPlanInput, BackfillProgress, BackfillWindow, RunInput,
};
use crate::{IncrementalRun, run_workflow_id};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

/// Runs per window before the backfill gives up on it.
pub const WINDOW_ATTEMPTS: u32 = 3;

/// The workflow id of a pipeline's backfill (one at a time per pipeline).
pub fn backfill_workflow_id(pipeline: &str) -> String {
    format!("tidemark-backfill-{pipeline}")
}

/// A backfill of one pipeline.
#[workflow]
#[derive(Default)]
pub struct Backfill {
    progress: BackfillProgress,
}

#[workflow_methods]
impl Backfill {
    /// Plans, then loads the windows not yet loaded, `parallel` at a time.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: BackfillInput,
    ) -> WorkflowResult<BackfillProgress> {
        let spec = input.spec.clone();
        let opts = input.options;
        let covered = ctx
            .execute_activity(
                contracts::BackfillPlan,
                BackfillPlanInput {
                    spec: spec.clone(),
                    windows: input.windows.clone(),
                    summary: None,
                },
                bookkeeping_activity(&opts),
            )
            .await?;
        let mut pending: Vec<(BackfillWindow, u32)> = input
            .windows
            .iter()
            .zip(covered.iter().copied().chain(std::iter::repeat(false)))
            .filter(|(_, c)| !c)
            .map(|(w, _)| (w.clone(), 0))
            .collect();
        ctx.state_mut(|s| {
            s.progress.pipeline = spec.name.clone();
            s.progress.windows_total = input.windows.len() as u32;
            s.progress.already_covered = input.windows.len() as u32 - pending.len() as u32;
        });
        let parallel = input.parallel.max(1) as usize;
        while !pending.is_empty() {
            let take = parallel.min(pending.len());
            let batch: Vec<(BackfillWindow, u32)> = pending.drain(..take).collect();
            ctx.state_mut(|s| {
                s.progress.running = batch.iter().map(|(w, _)| w.label.clone()).collect();
            });
            let runs = batch.iter().map(|(w, _)| {
                let mut window_spec = spec.clone();
                window_spec.name = w.pipeline_name(&spec.name);
                window_spec.source.initial = Some(w.low_text.clone());
                let child = RunInput {
                    spec: window_spec.clone(),
                    options: opts,
                    as_of_ms: None,
                    until: Some(w.high),
                    carried: None,
                };
                let options = ChildWorkflowOptions::workflow_id(run_workflow_id(&window_spec.name));
                let started = ctx.start_child_workflow(IncrementalRun::run, child, options);
                async move {
                    match started.await {
                        Ok(s) => s.result().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            });
            let results = futures::future::join_all(runs).await;
            for ((window, attempts), result) in batch.into_iter().zip(results) {
                match result {
                    Ok(summary) => {
                        let rows = summary.progress.rows_promoted;
                        ctx.execute_activity(
                            contracts::RecordBackfill,
                            BackfillPlanInput {
                                spec: spec.clone(),
                                windows: vec![window],
                                summary: Some(summary),
                            },
                            bookkeeping_activity(&opts),
                        )
                        .await?;
                        ctx.state_mut(|s| {
                            s.progress.done += 1;
                            s.progress.rows_promoted += rows;
                        });
                    }
                    Err(_) if attempts + 1 < WINDOW_ATTEMPTS => {
                        ctx.state_mut(|s| s.progress.retried += 1);
                        pending.push((window, attempts + 1));
                    }
                    Err(_) => ctx.state_mut(|s| s.progress.failed.push(window.label.clone())),
                }
            }
            ctx.state_mut(|s| s.progress.running.clear());
        }
        ctx.state_mut(|s| s.progress.finished = true);
        Ok(ctx.state(|s| s.progress.clone()))
    }

    /// Windows total, skipped, done, running, retried and failed, and rows so far.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> BackfillProgress {
        self.progress.clone()
    }
}
