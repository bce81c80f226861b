//! Builds and runs a Temporal worker: the `IncrementalRun` workflow from `tidemark-workflows`
//! and the activities of this crate, on one task queue, until told to stop.

use crate::activities::RunActivities;
use anyhow::Context;
use std::future::Future;
use temporalio_client::Client;
use temporalio_sdk::{Worker, WorkerOptions};
use tidemark_workflows::IncrementalRun;

/// Runs a worker on `task_queue` until `shutdown` resolves, then shuts down gracefully
/// (in-flight activities finish or are abandoned to their heartbeat timeout).
pub async fn run(
    client: Client,
    task_queue: &str,
    shutdown: impl Future<Output = ()> + 'static,
) -> anyhow::Result<()> {
    run_with(client, task_queue, shutdown, None).await
}

/// [`run`] with a sticky-queue timeout: how long a workflow task waits for this worker's
/// cache before any worker may take it (the chaos fleet shortens it so a killed worker's
/// workflows move on within a second).
pub async fn run_with(
    client: Client,
    task_queue: &str,
    shutdown: impl Future<Output = ()> + 'static,
    sticky_timeout: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let runtime = temporalio_sdk::Runtime::from_current_tokio(Default::default())
        .context("start the Temporal SDK runtime")?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<IncrementalRun>()
        .context("register the IncrementalRun workflow")?
        .register_activities(RunActivities)
        .maybe_sticky_queue_schedule_to_start_timeout(sticky_timeout)
        .build();
    let mut worker = Worker::new(&runtime, client, options).context("create the worker")?;
    let stop = worker.shutdown_handle();
    let stopper = async move {
        shutdown.await;
        stop();
        std::future::pending::<()>().await
    };
    tracing::info!(task_queue, "worker started");
    tokio::select! {
        r = worker.run() => r.context("worker stopped with an error")?,
        _ = stopper => unreachable!("the stopper never completes"),
    }
    tracing::info!(task_queue, "worker stopped");
    Ok(())
}
