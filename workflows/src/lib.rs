//! `tidemark-workflows`: the deterministic half of tidemark.
//!
//! This crate owns everything that crosses Temporal: the resolved pipeline spec embedded in
//! each run's input, the activity contracts (names, inputs, outputs), the activity options,
//! and the `IncrementalRun` workflow itself. It performs no I/O and depends on no data or
//! database crate; the side effects live in the root `tidemark` crate, which implements the
//! contracts declared here.

pub mod backfill;
pub mod contracts;
pub mod cursor;
pub mod maintain;
pub mod options;
pub mod payloads;
pub mod ping;
pub mod scheduled;
pub mod spec;
pub mod workflow;

pub use backfill::Backfill;
pub use maintain::{Maintain, ScheduledMaintain};
pub use ping::Ping;
pub use scheduled::ScheduledRun;
pub use workflow::IncrementalRun;

/// The default task queue of every tidemark command.
pub const DEFAULT_TASK_QUEUE: &str = "tidemark";

/// The workflow id of a pipeline's live incremental run. One id per pipeline, started with a
/// conflict policy that refuses a second running execution, is how Temporal itself enforces
/// "at most one run per pipeline at a time".
pub fn run_workflow_id(pipeline: &str) -> String {
    format!("tidemark-run-{pipeline}")
}

/// Name of the KeywordList search attribute that lists a run's alerts.
pub const ALERT_ATTRIBUTE_NAME: &str = "TidemarkAlert";

/// The schedule id of a pipeline's Temporal Schedule.
pub fn schedule_id(pipeline: &str) -> String {
    format!("tidemark-{pipeline}")
}

/// The Delta / ledger idempotency application id of a pipeline's promotes.
pub fn app_id(pipeline: &str) -> String {
    format!("tidemark:{pipeline}")
}
