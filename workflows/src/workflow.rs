//! The `IncrementalRun` workflow: process → stage → promote → update_watermark.
//!
//! Deterministic by construction: it only calls activities, reads workflow time, and keeps
//! its state in the struct the `progress` query reads. The run's identity (run_seq) and window
//! come from `process` and are recorded in history, so every retry of a later activity reuses
//! them. The watermark is written only after promote returned.
//!
//! Runs started since the [`LOCAL_STEPS_PATCH`] marker execute their short steps as local
//! activities (inside the workflow task, a marker in history instead of a task-queue round
//! trip): `update_watermark` and `record_failure` always, `stage` and `promote` when the
//! manifest's batch is at most `[execution] local_max_rows`, and `process` when its local
//! attempt (`process_local`) finds the previous run small and recent; otherwise that attempt
//! reads nothing and `process` runs as a regular heartbeating activity. Every decision is a
//! function of the input and of recorded results, so replay takes the same path. Runs
//! recorded before the patch replay the all-regular path.

#![allow(unreachable_pub)]

use crate::contracts;
use crate::options::{
    bookkeeping_activity, data_activity, local_bookkeeping_activity, local_data_activity,
};
use crate::payloads::{
    ActivityTiming, BatchDone, Carried, CommitInput, FailureInput, LocalProcessInput,
    LocalProcessOutcome, Phase, ProcessInput, Progress, RunIdentity, RunInput, RunOptions,
    RunSummary, WatermarkInput,
};
use crate::spec::{LocalActivities, PipelineSpec};
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_common::ActivityDefinition;
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_common::search_attributes::{SearchAttributeKey, Timestamp};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ContinueAsNewOptions, LocalActivityOptions,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The search attribute a Temporal Schedule sets on the runs it starts.
const SCHEDULED_START_TIME: SearchAttributeKey<Timestamp> =
    SearchAttributeKey::datetime("TemporalScheduledStartTime");

/// The search attribute listing the alert rules that fired for a run (KeywordList), so the
/// Temporal UI can list alerting runs: `TidemarkAlert IS NOT NULL`.
pub const ALERT_ATTRIBUTE: SearchAttributeKey<Vec<String>> =
    SearchAttributeKey::keyword_list(crate::ALERT_ATTRIBUTE_NAME);

/// The patch marker of the local-activity path. Never remove or rename it while runs
/// recorded without it may still be replayed.
pub const LOCAL_STEPS_PATCH: &str = "tidemark-local-steps-1";

/// The patch marker of the catch-up loop (a window bigger than a batch is committed batch
/// after batch in one run). Runs recorded without it commit one batch.
pub const CATCH_UP_PATCH: &str = "tidemark-catch-up-1";

/// `process` runs locally only when the previous run's watermark is at most this old (ms):
/// a pipeline that paused for longer may have a big window to catch up.
pub const LOCAL_PROCESS_MAX_AGE_MS: u64 = 60 * 60 * 1000;

/// One incremental run of one pipeline.
#[workflow]
#[derive(Default)]
pub struct IncrementalRun {
    progress: Progress,
    options: RunOptions,
    /// This run may use local activities (the patch is in its history).
    local: bool,
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

/// Where a step runs: through the task queue, or inside the workflow task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Regular,
    Local,
}

impl Placement {
    /// Local when `local`, else regular.
    fn local_if(local: bool) -> Placement {
        if local {
            Placement::Local
        } else {
            Placement::Regular
        }
    }
}

/// Runs one step with the options of its kind, placed as asked.
async fn step<AD>(
    ctx: &WorkflowContext<IncrementalRun>,
    activity: AD,
    input: AD::Input,
    placement: Placement,
    regular: ActivityOptions,
    local: LocalActivityOptions,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition,
    AD::Output: TemporalDeserializable,
{
    match placement {
        Placement::Regular => ctx.execute_activity(activity, input, regular).await,
        Placement::Local => ctx.execute_local_activity(activity, input, local).await,
    }
}

/// What one batch of a run did, for the loop that catches up a big window.
struct BatchOutcome {
    done: BatchDone,
    /// The window was cut: rows remain past it.
    more: bool,
    /// About how many rows remain past the cut.
    rows_remaining: Option<u64>,
}

/// The step placements and options a run's batches share.
struct Plan {
    spec: PipelineSpec,
    run: RunIdentity,
    opts: RunOptions,
    as_of_ms: Option<i64>,
    until: Option<i64>,
    local: bool,
}

#[workflow_methods]
impl IncrementalRun {
    /// Runs the four activities in order; on failure records it in the ledger and fails. A
    /// window bigger than a batch (`[source] max_batch_rows` / `max_batch_bytes`) is cut, and
    /// runs started since [`CATCH_UP_PATCH`] go on with the next batch after each commit
    /// (its own run_seq, token, ledger line and watermark) until the window is caught up or
    /// `[execution] max_batches` is reached, continuing as a new execution when the history
    /// grows long.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RunInput,
    ) -> WorkflowResult<RunSummary> {
        let started_ms = input
            .carried
            .as_ref()
            .map_or_else(|| millis(ctx.workflow_time()), |c| c.started_at_ms);
        let run = RunIdentity {
            workflow_id: ctx.workflow_id().to_string(),
            run_id: ctx.run_id().to_string(),
            started_at_ms: started_ms,
        };
        let spec = input.spec.clone();
        let opts = input.options;
        // Decided once, from the input, before the first command: replay decides the same.
        let local = spec.execution.local_activities == LocalActivities::Auto
            && ctx.patched(LOCAL_STEPS_PATCH);
        let catch_up = ctx.patched(CATCH_UP_PATCH);
        // A run started by a Temporal Schedule carries its action time: the run's window ends
        // there, however late the run starts or however often it is retried.
        let as_of_ms = input.as_of_ms.or_else(|| scheduled_start_ms(ctx));
        ctx.state_mut(|s| {
            s.options = opts;
            s.local = local;
            if let Some(c) = &input.carried {
                s.progress = c.progress.clone();
            }
            s.progress.pipeline = spec.name.clone();
            s.progress.as_of_ms = as_of_ms;
        });
        let plan = Plan {
            spec,
            run,
            opts,
            as_of_ms,
            until: input.until,
            local,
        };
        let mut this_execution = 0u32;
        loop {
            let number = ctx.state(|s| s.progress.batches.len()) as u32 + 1;
            let outcome = batch(ctx, &plan, number).await?;
            this_execution += 1;
            let more = catch_up && outcome.more;
            let capped = more && number >= plan.spec.execution.max_batches;
            ctx.state_mut(|s| {
                let p = &mut s.progress;
                if number > 1 || more {
                    p.batches.push(outcome.done.clone());
                    p.batches_estimate = outcome.rows_remaining.map(|left| {
                        let per = outcome.done.rows_batch.max(1);
                        number.saturating_add(left.div_ceil(per).min(u64::from(u32::MAX)) as u32)
                    });
                }
                if !more {
                    p.batches_estimate = None;
                }
                p.batches_capped = capped;
            });
            if !more || capped {
                // Caught up, or capped: the rest waits for the next run (the watermark of
                // every committed batch is stored).
                break;
            }
            let per_execution = opts
                .batches_per_execution
                .unwrap_or(BATCHES_PER_EXECUTION)
                .max(1);
            if this_execution >= per_execution || ctx.continue_as_new_suggested() {
                let next = RunInput {
                    carried: Some(Carried {
                        started_at_ms: started_ms,
                        progress: ctx.state(|s| s.progress.clone()),
                    }),
                    as_of_ms,
                    ..input.clone()
                };
                ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
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
    /// activity's time and attempt; for a run in batches, the batch and the batches done.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        self.progress.clone()
    }
}

/// Batches one execution commits before it continues as a new one, by default (a batch adds
/// about 20 history events on the regular path).
pub const BATCHES_PER_EXECUTION: u32 = 100;

/// One batch: process → stage → promote → update_watermark.
async fn batch(
    ctx: &mut WorkflowContext<IncrementalRun>,
    plan: &Plan,
    number: u32,
) -> WorkflowResult<BatchOutcome> {
    let (spec, run, opts, local) = (&plan.spec, &plan.run, plan.opts, plan.local);
    let small = |rows: u64| Placement::local_if(local && rows <= spec.execution.local_max_rows);
    let bookkeeping = Placement::local_if(local);
    let batch_started = millis(ctx.workflow_time());
    ctx.state_mut(|s| {
        let p = &mut s.progress;
        p.batch = number;
        p.activities.clear();
        p.run_seq = None;
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
        as_of_ms: plan.as_of_ms,
        until: plan.until,
    };
    let mut local_manifest = None;
    if local {
        let try_local = LocalProcessInput {
            process: process_input.clone(),
            max_rows: spec.execution.local_max_rows,
            max_age_ms: LOCAL_PROCESS_MAX_AGE_MS,
        };
        let outcome = or_fail!(
            ctx,
            &failure,
            Phase::Process,
            ctx.execute_local_activity(contracts::ProcessLocal, try_local, local_data_activity())
        );
        if let LocalProcessOutcome::Done(m) = outcome {
            local_manifest = Some(*m);
        }
    }
    let (manifest, process_placement) = match local_manifest {
        Some(m) => (m, Placement::Local),
        None => (
            or_fail!(
                ctx,
                &failure,
                Phase::Process,
                ctx.execute_activity(contracts::Process, process_input, data_activity(&opts))
            ),
            Placement::Regular,
        ),
    };
    failure.run_seq = Some(manifest.run_seq);
    let process_ms = elapsed_ms(ctx, t0);
    ctx.state_mut(|s| {
        // The run's counts: the first batch opens the window, each batch adds its rows.
        let p = &mut s.progress;
        p.run_seq = Some(manifest.run_seq);
        p.cursor_type = Some(manifest.cursor_type);
        if number == 1 {
            p.window_low = manifest.window_low;
            p.watermark_before = manifest.watermark_before;
        }
        p.window_high = manifest.window_high.or(p.window_high);
        p.watermark_after = manifest.watermark_after;
        p.files_total = manifest.files_total;
        p.files_skipped = manifest.files_skipped;
        p.rows_extracted += manifest.rows_extracted;
        p.rows_deduplicated += manifest.rows_deduplicated;
        p.rows_late += manifest.rows_late;
        p.rows_quarantined += manifest.rows_quarantined;
        p.rows_batch += manifest.rows_batch;
        if manifest.oversized_value.is_some() {
            p.oversized_value = manifest.oversized_value.clone();
        }
    });
    record_timing(
        ctx,
        "process",
        process_ms,
        manifest.attempt,
        process_placement,
    );

    let commit = CommitInput {
        spec: spec.clone(),
        run: run.clone(),
        manifest: manifest.clone(),
    };
    let mut promoted = None;
    let mut stage_ms = 0;
    if manifest.has_rows() {
        let placement = small(manifest.rows_batch);
        set_phase(ctx, Phase::Stage);
        let t0 = millis(ctx.workflow_time());
        let staged = or_fail!(
            ctx,
            &failure,
            Phase::Stage,
            step(
                ctx,
                contracts::Stage,
                commit.clone(),
                placement,
                data_activity(&opts),
                local_data_activity()
            )
        );
        stage_ms = elapsed_ms(ctx, t0);
        record_timing(ctx, "stage", stage_ms, staged.attempt, placement);

        set_phase(ctx, Phase::Promote);
        let t0 = millis(ctx.workflow_time());
        let out = or_fail!(
            ctx,
            &failure,
            Phase::Promote,
            step(
                ctx,
                contracts::Promote,
                commit.clone(),
                placement,
                data_activity(&opts),
                local_data_activity()
            )
        );
        let ms = elapsed_ms(ctx, t0);
        let mut schema_change = ctx
            .state(|s| s.progress.schema_change.clone())
            .unwrap_or_default();
        if let Some(change) = &manifest.schema_resolution {
            schema_change.absorb(change);
        }
        if let Some(change) = &out.schema_change {
            schema_change.absorb(change);
        }
        ctx.state_mut(|s| {
            s.progress.rows_promoted += out.rows_inserted + out.rows_updated;
            s.progress.target_version = out.target_version;
            s.progress.already_promoted = out.already_promoted;
            s.progress.schema_change = (!schema_change.is_empty()).then_some(schema_change);
            s.progress.checks = out.checks.clone();
        });
        record_timing(ctx, "promote", ms, out.attempt, placement);
        promoted = Some(out);
    }

    // update_watermark: only after promote returned.
    set_phase(ctx, Phase::UpdateWatermark);
    let t0 = millis(ctx.workflow_time());
    let wm_input = WatermarkInput {
        commit,
        promote: promoted.clone(),
        stage_ms,
    };
    let updated = or_fail!(
        ctx,
        &failure,
        Phase::UpdateWatermark,
        step(
            ctx,
            contracts::UpdateWatermark,
            wm_input,
            bookkeeping,
            bookkeeping_activity(&opts),
            local_bookkeeping_activity()
        )
    );
    let ms = elapsed_ms(ctx, t0);
    record_timing(ctx, "update_watermark", ms, updated.attempt, bookkeeping);
    if !updated.alerts.is_empty() {
        ctx.state_mut(|s| s.progress.alerts = updated.alerts.clone());
        if opts.alert_search_attribute {
            ctx.upsert_search_attributes([ALERT_ATTRIBUTE.value_set(updated.alerts.clone())]);
        }
    }
    let rows_promoted = promoted
        .as_ref()
        .map_or(0, |p| p.rows_inserted + p.rows_updated);
    Ok(BatchOutcome {
        done: BatchDone {
            run_seq: manifest.run_seq,
            window_low: manifest.window_low,
            window_high: manifest.window_high,
            rows_batch: manifest.rows_batch,
            rows_promoted,
            target_version: promoted.as_ref().and_then(|p| p.target_version),
            elapsed_ms: elapsed_ms(ctx, batch_started),
            activities: ctx.state(|s| s.progress.activities.clone()),
        },
        more: manifest.more,
        rows_remaining: manifest.rows_remaining_estimate,
    })
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
    placement: Placement,
) {
    ctx.state_mut(|s| {
        s.progress.activities.push(ActivityTiming {
            activity: activity.to_string(),
            elapsed_ms,
            attempt,
            local: placement == Placement::Local,
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
    let (opts, local) = ctx.state(|s| (s.options, s.local));
    let _ = step(
        ctx,
        contracts::RecordFailure,
        input,
        Placement::local_if(local),
        bookkeeping_activity(&opts),
        local_bookkeeping_activity(),
    )
    .await;
    Err(error)
}
