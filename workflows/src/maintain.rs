//! `Maintain`: one table maintenance of a pipeline (compact, checkpoint, vacuum), under the
//! pipeline's own workflow id, `tidemark-run-<pipeline>` — the guard that keeps two runs of a
//! pipeline apart keeps maintenance and runs apart too (a run started meanwhile is refused,
//! and so is a maintenance while a run goes on). `ScheduledMaintain` is what the pipeline's
//! maintenance schedule starts: it starts `Maintain` as a child under that id, and a run in
//! progress makes it a recorded skip, as `ScheduledRun` does for runs.

#![allow(unreachable_pub)]

use crate::contracts;
use crate::options::data_activity;
use crate::payloads::{MaintainInput, MaintainReport, Phase, Progress, RunIdentity};
use crate::run_workflow_id;
use serde::{Deserialize, Serialize};
use temporalio_common::error::{ChildWorkflowStartError, StartChildWorkflowExecutionFailedCause};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ChildWorkflowOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

/// One maintenance.
#[workflow]
#[derive(Default)]
pub struct Maintain {
    progress: Progress,
}

#[workflow_methods]
impl Maintain {
    /// Runs the `maintain` activity (regular, heartbeating, retried) and returns its report.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: MaintainInput,
    ) -> WorkflowResult<MaintainReport> {
        // The maintenance's identity is this execution: a retry of its activity finds its
        // own commit by the run id.
        let input = MaintainInput {
            run: RunIdentity {
                workflow_id: ctx.workflow_id().to_string(),
                run_id: ctx.run_id().to_string(),
                started_at_ms: input.run.started_at_ms,
            },
            ..input
        };
        let pipeline = input.spec.name.clone();
        ctx.state_mut(|s| {
            s.progress.pipeline = pipeline;
            s.progress.phase = Phase::Maintain;
        });
        let options = data_activity(&input.options);
        let report = ctx
            .execute_activity(contracts::Maintain, input, options)
            .await?;
        ctx.state_mut(|s| s.progress.phase = Phase::Succeeded);
        Ok(report)
    }

    /// The phase (`maintain`), so `status` shows what holds the pipeline's id.
    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        self.progress.clone()
    }
}

/// Result of a scheduled maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduledMaintainOutcome {
    /// The maintenance happened.
    Maintained(Box<MaintainReport>),
    /// A run (or another maintenance) was in progress; this one did nothing.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// The maintenance schedule's action.
#[workflow]
#[derive(Default)]
pub struct ScheduledMaintain;

#[workflow_methods]
impl ScheduledMaintain {
    /// Starts `Maintain` as a child (id `tidemark-run-<pipeline>`) and waits for it.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: MaintainInput,
    ) -> WorkflowResult<ScheduledMaintainOutcome> {
        let workflow_id = run_workflow_id(&input.spec.name);
        let options = ChildWorkflowOptions::workflow_id(workflow_id.clone());
        match ctx
            .start_child_workflow(Maintain::run, input, options)
            .await
        {
            Ok(started) => Ok(ScheduledMaintainOutcome::Maintained(Box::new(
                started.result().await?,
            ))),
            Err(ChildWorkflowStartError::StartFailed {
                cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                ..
            }) => Ok(ScheduledMaintainOutcome::Skipped {
                reason: format!("a run or maintenance is in progress ({workflow_id})"),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// The schedule id of a pipeline's maintenance schedule.
pub fn maintain_schedule_id(pipeline: &str) -> String {
    format!("tidemark-maintain-{pipeline}")
}
