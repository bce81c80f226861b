//! `Ping`: a workflow of N no-op activities, for `tidemark ping`. It proves that a worker
//! serves the task queue, and its round trip is the orchestration floor a run is compared
//! with (`tidemark-bench overhead`): the same server, task queue and worker, no data work.

#![allow(unreachable_pub)]

use crate::contracts;
use crate::options::bookkeeping_activity;
use crate::payloads::RunOptions;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// The no-op workflow.
#[workflow]
#[derive(Default)]
pub struct Ping;

#[workflow_methods]
impl Ping {
    /// Runs `activities` no-op activities one after the other (regular activities, through
    /// the task queue); returns how many ran.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, activities: u32) -> WorkflowResult<u32> {
        let options = bookkeeping_activity(&RunOptions::default());
        for _ in 0..activities {
            ctx.execute_activity(contracts::Noop, (), options.clone())
                .await?;
        }
        Ok(activities)
    }
}
