//! Builds and runs a Temporal worker: the `IncrementalRun` workflow from `tidemark-workflows`
//! and the activities of this crate, on one task queue, until told to stop.

use crate::activities::RunActivities;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use temporalio_client::Client;
use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
};
use temporalio_common::worker::WorkerDeploymentOptions;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Worker, WorkerOptions};
use tidemark_workflows::{
    Backfill, IncrementalRun, Maintain, Ping, ScheduledMaintain, ScheduledRun,
};

/// The worker's build id: the package version (workflow changes are guarded by patch
/// markers, not by worker versioning).
pub const BUILD_ID: &str = concat!("tidemark-", env!("CARGO_PKG_VERSION"));

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
    run_configured(
        client,
        task_queue,
        shutdown,
        WorkerConfig {
            sticky_timeout,
            metrics_addr: None,
        },
    )
    .await
}

/// Optional worker settings.
#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// See [`run_with`].
    pub sticky_timeout: Option<std::time::Duration>,
    /// Serve Prometheus metrics (tidemark's and the SDK's) on this address.
    pub metrics_addr: Option<SocketAddr>,
}

/// Starts the Prometheus endpoint and installs its meter for tidemark's own metrics.
/// Returns the meter for the SDK's runtime and the bound address.
fn start_metrics(addr: SocketAddr) -> anyhow::Result<(Arc<dyn CoreMeter>, SocketAddr)> {
    let options = PrometheusExporterOptions::builder()
        .socket_addr(addr)
        .counters_total_suffix(true)
        .use_seconds_for_durations(true)
        .build();
    let started = start_prometheus_metric_exporter(options)
        .with_context(|| format!("serve metrics on {addr} (is the port free?)"))?;
    let meter: Arc<dyn CoreMeter> = started.meter;
    crate::metrics::install(meter.clone());
    Ok((meter, started.bound_addr))
}

/// [`run`] with every optional setting.
pub async fn run_configured(
    client: Client,
    task_queue: &str,
    shutdown: impl Future<Output = ()> + 'static,
    config: WorkerConfig,
) -> anyhow::Result<()> {
    let sticky_timeout = config.sticky_timeout;
    crate::storage::sweep_dead_scratch();
    let telemetry = match config.metrics_addr {
        Some(addr) => {
            let (meter, bound) = start_metrics(addr)?;
            eprintln!("metrics on http://{bound}/metrics");
            TelemetryOptions::builder().metrics(meter).build()
        }
        None => TelemetryOptions::default(),
    };
    let runtime_options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| anyhow::anyhow!("runtime options: {e}"))?;
    let runtime = temporalio_sdk::Runtime::from_current_tokio(runtime_options)
        .context("start the Temporal SDK runtime")?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<IncrementalRun>()
        .context("register the IncrementalRun workflow")?
        .register_workflow::<ScheduledRun>()
        .context("register the ScheduledRun workflow")?
        .register_workflow::<Backfill>()
        .context("register the Backfill workflow")?
        .register_workflow::<Ping>()
        .context("register the Ping workflow")?
        .register_workflow::<Maintain>()
        .context("register the Maintain workflow")?
        .register_workflow::<ScheduledMaintain>()
        .context("register the ScheduledMaintain workflow")?
        .register_activities(RunActivities)
        .maybe_sticky_queue_schedule_to_start_timeout(sticky_timeout)
        // An explicit build id: the SDK's default hashes the whole executable at start-up
        // (hundreds of MB), and no worker versioning is used.
        .deployment_options(WorkerDeploymentOptions::from_build_id(BUILD_ID.to_string()))
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
