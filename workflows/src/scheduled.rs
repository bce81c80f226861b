//! `ScheduledRun`: what a Temporal Schedule starts for a pipeline.
//!
//! A schedule's workflow ids carry a timestamp suffix, so a schedule cannot start
//! `IncrementalRun` under the pipeline's own id (`tidemark-run-<pipeline>`), and that id is the
//! guard that keeps two runs of a pipeline from overlapping. `ScheduledRun` reads its action
//! time and starts `IncrementalRun` as a child under the pipeline's id, passing that time on:
//! a run started by hand and a scheduled one exclude each other, `status` finds the scheduled
//! run under the usual id, and a run already in progress turns the scheduled one into a
//! recorded skip instead of a failure.

#![allow(unreachable_pub)]

use crate::payloads::{RunInput, RunSummary};
use crate::workflow::scheduled_start_ms;
use crate::{IncrementalRun, run_workflow_id};
use serde::{Deserialize, Serialize};
use temporalio_common::error::{ChildWorkflowStartError, StartChildWorkflowExecutionFailedCause};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowResult};

/// Result of a scheduled run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduledOutcome {
    /// The run happened.
    Ran(Box<RunSummary>),
    /// Another run of the pipeline was in progress; this one did nothing.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// The schedule's action: one incremental run under the pipeline's own workflow id.
#[workflow]
#[derive(Default)]
pub struct ScheduledRun;

#[workflow_methods]
impl ScheduledRun {
    /// Starts `IncrementalRun` as a child (id `tidemark-run-<pipeline>`) and waits for it.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RunInput,
    ) -> WorkflowResult<ScheduledOutcome> {
        let workflow_id = run_workflow_id(&input.spec.name);
        let child_input = RunInput {
            as_of_ms: input.as_of_ms.or_else(|| scheduled_start_ms(ctx)),
            ..input
        };
        let options = ChildWorkflowOptions::workflow_id(workflow_id.clone());
        match ctx
            .start_child_workflow(IncrementalRun::run, child_input, options)
            .await
        {
            Ok(started) => Ok(ScheduledOutcome::Ran(Box::new(started.result().await?))),
            Err(ChildWorkflowStartError::StartFailed {
                cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                ..
            }) => Ok(ScheduledOutcome::Skipped {
                reason: format!("a run is already in progress ({workflow_id})"),
            }),
            Err(e) => Err(e.into()),
        }
    }
}
