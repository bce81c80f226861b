//! Activity implementations: thin, idempotent wrappers that bind the contracts of
//! `tidemark_workflows::contracts` to the engine, keyed by `(pipeline, run_seq)`, never by
//! attempt number.
//!
//! Each activity classifies its error at this boundary: a non-retryable engine error becomes a
//! non-retryable Temporal failure, so the run fails on the first attempt with a clear message.
//! Long activities heartbeat while they work (a no-op when the workflow runs them as local
//! activities, which the workflow task's own timeout watches instead).

use crate::error::EngineError;
use crate::run_steps;
use std::future::Future;
use std::time::Duration;
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tidemark_workflows::contracts;
use tidemark_workflows::payloads::{
    BackfillPlanInput, CommitInput, FailureInput, LocalProcessInput, LocalProcessOutcome,
    MaintainInput, MaintainReport, ProcessInput, ProcessManifest, PromoteOutput, StageOutput,
    WatermarkInput, WatermarkOutput,
};
use tracing::Instrument;

/// The activities of an incremental run, registered on every worker.
pub struct RunActivities;

fn to_activity_error(e: EngineError) -> ActivityError {
    tracing::warn!(error = %e, retryable = e.is_retryable(), "activity failed");
    let failure = if e.is_retryable() {
        ApplicationFailure::new(e.to_string())
    } else {
        ApplicationFailure::non_retryable(e.to_string())
    };
    ActivityError::application(failure)
}

/// Runs `work` while heartbeating every few seconds, so a killed worker is noticed within the
/// heartbeat timeout rather than the start-to-close timeout.
async fn with_heartbeat<T>(ctx: &ActivityContext, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    // A third of the heartbeat timeout, so two missed beats still leave one in time.
    let every = ctx
        .info()
        .heartbeat_timeout
        .map_or(Duration::from_secs(5), |t| {
            (t / 3).clamp(Duration::from_millis(100), Duration::from_secs(5))
        });
    // The first beat after one period, not at once: a heartbeat in flight when a short
    // activity completes costs its completion a round trip.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => { let _ = ctx.record_heartbeat("working".to_string()).await; }
        }
    }
}

/// Result types that carry the attempt that produced them.
trait Attempted {
    fn set_attempt(&mut self, attempt: u32);
}

macro_rules! attempted {
    ($($t:ty),*) => {
        $(impl Attempted for $t {
            fn set_attempt(&mut self, attempt: u32) {
                self.attempt = attempt;
            }
        })*
    };
}
attempted!(ProcessManifest, StageOutput, PromoteOutput, WatermarkOutput);

impl Attempted for LocalProcessOutcome {
    fn set_attempt(&mut self, attempt: u32) {
        if let LocalProcessOutcome::Done(m) = self {
            m.attempt = attempt;
        }
    }
}

impl Attempted for Vec<bool> {
    fn set_attempt(&mut self, _: u32) {}
}

impl Attempted for () {
    fn set_attempt(&mut self, _: u32) {}
}

impl Attempted for MaintainReport {
    fn set_attempt(&mut self, _: u32) {}
}

/// Runs one activity's work: in a span carrying pipeline, run_seq, workflow_id and attempt,
/// heartbeating, with the attempt stamped on the result and the error classified.
async fn run<T: Attempted>(
    ctx: &ActivityContext,
    activity: &str,
    pipeline: &str,
    run_seq: Option<u64>,
    work: impl Future<Output = crate::error::Result<T>>,
) -> Result<T, ActivityError> {
    let info = ctx.info();
    let span = tracing::info_span!(
        "activity",
        activity,
        pipeline,
        run_seq,
        workflow_id = info.workflow_id.as_deref().unwrap_or(""),
        attempt = info.attempt
    );
    let attempt = info.attempt;
    let done = with_heartbeat(ctx, work).instrument(span).await;
    // What the activity freed goes back to the system before the next one starts, so one
    // batch's peak does not stand on the last one's leftovers.
    crate::allocator::release_free_memory();
    let mut out = done.map_err(to_activity_error)?;
    out.set_attempt(attempt);
    Ok(out)
}

#[activities]
impl RunActivities {
    #[activity(definition = contracts::Process)]
    pub async fn process(
        ctx: ActivityContext,
        input: ProcessInput,
    ) -> Result<ProcessManifest, ActivityError> {
        let name = input.spec.name.clone();
        let work = run_steps::process_bounded(input.spec, input.as_of_ms, input.until);
        run(&ctx, "process", &name, None, work).await
    }

    #[activity(definition = contracts::ProcessLocal)]
    pub async fn process_local(
        ctx: ActivityContext,
        input: LocalProcessInput,
    ) -> Result<LocalProcessOutcome, ActivityError> {
        let name = input.process.spec.name.clone();
        let work = run_steps::process_local(input);
        run(&ctx, "process_local", &name, None, work).await
    }

    #[activity(definition = contracts::Stage)]
    pub async fn stage(
        ctx: ActivityContext,
        input: CommitInput,
    ) -> Result<StageOutput, ActivityError> {
        let (name, seq) = (input.spec.name.clone(), input.manifest.run_seq);
        run(&ctx, "stage", &name, Some(seq), run_steps::stage(input)).await
    }

    #[activity(definition = contracts::Promote)]
    pub async fn promote(
        ctx: ActivityContext,
        input: CommitInput,
    ) -> Result<PromoteOutput, ActivityError> {
        let (name, seq) = (input.spec.name.clone(), input.manifest.run_seq);
        run(&ctx, "promote", &name, Some(seq), run_steps::promote(input)).await
    }

    #[activity(definition = contracts::UpdateWatermark)]
    pub async fn update_watermark(
        ctx: ActivityContext,
        input: WatermarkInput,
    ) -> Result<WatermarkOutput, ActivityError> {
        let (name, seq) = (
            input.commit.spec.name.clone(),
            input.commit.manifest.run_seq,
        );
        let work = run_steps::update_watermark(input);
        run(&ctx, "update_watermark", &name, Some(seq), work).await
    }

    #[activity(definition = contracts::BackfillPlan)]
    pub async fn backfill_plan(
        ctx: ActivityContext,
        input: BackfillPlanInput,
    ) -> Result<Vec<bool>, ActivityError> {
        let name = input.spec.name.clone();
        let work = crate::backfill::plan(input.spec, input.windows);
        run(&ctx, "backfill_plan", &name, None, work).await
    }

    #[activity(definition = contracts::RecordBackfill)]
    pub async fn record_backfill(
        ctx: ActivityContext,
        input: BackfillPlanInput,
    ) -> Result<(), ActivityError> {
        let name = input.spec.name.clone();
        let work = crate::backfill::record(input.spec, input.windows, input.summary);
        run(&ctx, "record_backfill", &name, None, work).await
    }

    #[activity(definition = contracts::Maintain)]
    pub async fn maintain(
        ctx: ActivityContext,
        input: MaintainInput,
    ) -> Result<MaintainReport, ActivityError> {
        let name = input.spec.name.clone();
        run(
            &ctx,
            "maintain",
            &name,
            None,
            crate::maintain::maintain(input),
        )
        .await
    }

    #[activity(definition = contracts::Noop)]
    pub async fn noop(_ctx: ActivityContext, _input: ()) -> Result<(), ActivityError> {
        Ok(())
    }

    #[activity(definition = contracts::RecordFailure)]
    pub async fn record_failure(
        ctx: ActivityContext,
        input: FailureInput,
    ) -> Result<(), ActivityError> {
        let (name, seq) = (input.spec.name.clone(), input.run_seq);
        run(
            &ctx,
            "record_failure",
            &name,
            seq,
            run_steps::record_failure(input),
        )
        .await
    }
}
