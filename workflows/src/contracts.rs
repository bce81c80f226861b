//! Activity contracts: the names and payload types of the activities `IncrementalRun` calls.
//!
//! Each contract is a public marker type implementing `ActivityDefinition`. The workflow
//! schedules activities through these markers, and the implementations in
//! `tidemark::activities` bind to them with `#[activity(definition = ...)]`, so the compiler
//! checks that both sides agree on names and types.

use crate::payloads::{
    BackfillPlanInput, CommitInput, FailureInput, LocalProcessInput, LocalProcessOutcome,
    MaintainInput, MaintainReport, ProcessInput, ProcessManifest, PromoteOutput, StageOutput,
    WatermarkInput, WatermarkOutput,
};
use temporalio_common::ActivityDefinition;

macro_rules! contract {
    ($(#[$doc:meta])* $marker:ident, $name:literal, $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $marker;

        impl ActivityDefinition for $marker {
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $name
            }
        }
    };
}

contract!(
    /// Extract rows past the watermark (minus lookback), dedup, transform; write the batch.
    Process, "process", ProcessInput => ProcessManifest
);
contract!(
    /// `process` as a local activity: defers (reading nothing) unless the previous run was
    /// small and recent, so a big window never runs inside a workflow task.
    ProcessLocal, "process_local", LocalProcessInput => LocalProcessOutcome
);
contract!(
    /// Load the batch into the target's staging area, invisible to readers.
    Stage, "stage", CommitInput => StageOutput
);
contract!(
    /// Atomically and idempotently publish the staged batch to the target.
    Promote, "promote", CommitInput => PromoteOutput
);
contract!(
    /// Persist the new watermark (only after promote) and the ledger entry.
    UpdateWatermark, "update_watermark", WatermarkInput => WatermarkOutput
);
contract!(
    /// Record a failed run in the ledger (best effort) and clean its staging.
    RecordFailure, "record_failure", FailureInput => ()
);
contract!(
    /// Which backfill windows are already loaded (reconciling each window's state with the
    /// target); writes the backfill's manifest for `status`.
    BackfillPlan, "backfill_plan", BackfillPlanInput => Vec<bool>
);
contract!(
    /// Record a loaded backfill window in the pipeline's ledger (once).
    RecordBackfill, "record_backfill", BackfillPlanInput => ()
);
contract!(
    /// Does nothing: the activity of the `Ping` workflow.
    Noop, "noop", () => ()
);
contract!(
    /// Table maintenance: compact, checkpoint, vacuum (idempotent: planned from the table's
    /// current state, committed with its own token).
    Maintain, "maintain", MaintainInput => MaintainReport
);
