//! Activity options: timeouts, heartbeats and retry policies of each activity.
//!
//! Every activity has an explicit start-to-close timeout and a bounded retry policy, so a run
//! always reaches a terminal state. Errors the activities classify as non-retryable (bad spec,
//! missing cursor column, corrupt input, schema drift) fail the run on the first attempt.
//!
//! Local activities (run inside the workflow task by the worker that holds it) get the same
//! retry policy and a schedule-to-close timeout as long as the regular activity's whole
//! budget (the SDK's default would be 100 s). They cannot heartbeat: a worker that dies while
//! running one is noticed through the workflow task timeout, and the next worker re-runs it.

use crate::payloads::RunOptions;
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityOptions, LocalActivityOptions};

/// Attempts per activity before the run fails.
pub const MAX_ATTEMPTS: u32 = 5;

fn retry_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(500))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(MAX_ATTEMPTS)
        .build()
}

/// Default heartbeat timeout.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

fn heartbeat_timeout(run: &RunOptions) -> Duration {
    run.heartbeat_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT)
}

/// Options of the data-moving activities (`process`, `stage`, `promote`): long, heartbeating.
pub fn data_activity(run: &RunOptions) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60 * 60))
        .heartbeat_timeout(heartbeat_timeout(run))
        .retry_policy(retry_policy())
        .build()
}

/// Options of the short bookkeeping activities (`update_watermark`, `record_failure`).
pub fn bookkeeping_activity(run: &RunOptions) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .heartbeat_timeout(heartbeat_timeout(run))
        .retry_policy(retry_policy())
        .build()
}

/// Options of a data-moving step run as a local activity.
pub fn local_data_activity() -> LocalActivityOptions {
    local(Duration::from_secs(60 * 60))
}

/// Options of a bookkeeping step run as a local activity.
pub fn local_bookkeeping_activity() -> LocalActivityOptions {
    local(Duration::from_secs(60))
}

fn local(start_to_close: Duration) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(retry_policy())
        .start_to_close_timeout(start_to_close)
        .schedule_to_close_timeout(start_to_close * MAX_ATTEMPTS * 2)
        .build()
}
