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
pub async fn run(client: Client, task_queue: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let runtime = crate::client::runtime()?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<IncrementalRun>()
        .context("register the IncrementalRun workflow")?
        .register_activities(RunActivities)
        .build();
    let mut worker = Worker::new(runtime, client, options).context("create the worker")?;
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown.await;
        stop();
    });
    tracing::info!(task_queue, "worker started");
    worker.run().await.context("worker stopped with an error")?;
    tracing::info!(task_queue, "worker stopped");
    Ok(())
}
