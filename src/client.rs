//! The Temporal client side of the CLI: connecting (Temporal's own conventions:
//! `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `temporal.toml` profiles), starting a run, waiting
//! for it, and querying its progress.

use anyhow::{Context, anyhow};
use std::time::Duration;
use temporalio_client::envconfig::LoadClientConfigProfileOptions;
use temporalio_client::{
    Client, ClientOptions, Connection, WorkflowDescribeOptions, WorkflowExecutionStatus,
    WorkflowGetResultOptions, WorkflowHandle, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowQueryOptions, WorkflowStartOptions,
};
use tidemark_workflows::payloads::{Progress, RunInput, RunOptions, RunSummary};
use tidemark_workflows::spec::PipelineSpec;
use tidemark_workflows::{IncrementalRun, run_workflow_id};

/// Where to connect; `None` fields fall back to Temporal's env vars and profile.
#[derive(Debug, Clone, Default)]
pub struct ConnectSettings {
    /// `host:port` of the frontend.
    pub address: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
}

/// Connects to Temporal, failing within a few seconds with a message that says what to do.
pub async fn connect(settings: &ConnectSettings) -> anyhow::Result<Client> {
    let (mut conn, mut opts) = ClientOptions::load_from_config(
        LoadClientConfigProfileOptions::default(),
    )
    .map_err(|e| {
        anyhow!("read the Temporal connection settings (TEMPORAL_ADDRESS, temporal.toml): {e:?}")
    })?;
    if let Some(addr) = &settings.address {
        let with_scheme = if addr.contains("://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        conn.target = with_scheme
            .parse()
            .with_context(|| format!("bad Temporal address {addr:?}"))?;
    }
    if let Some(ns) = &settings.namespace {
        opts = ClientOptions::new(ns.clone()).build();
    }
    let target = conn.target.to_string();
    let connection = tokio::time::timeout(Duration::from_secs(10), Connection::connect(conn))
        .await
        .map_err(|_| anyhow!("timed out connecting to Temporal at {target}"))?
        .map_err(|e| {
            anyhow!(
                "cannot reach Temporal at {target}: {e}\n  start a local server with `tidemark dev`, or set TEMPORAL_ADDRESS / --address"
            )
        })?;
    Client::new(connection, opts).context("create the Temporal client")
}

/// A started run.
pub type RunHandle = WorkflowHandle<Client, IncrementalRun>;

/// Starts `IncrementalRun` for a pipeline. Refuses (with the running execution's id) when a
/// run of the same pipeline is already in progress.
pub async fn start_run(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
) -> anyhow::Result<RunHandle> {
    let options = RunOptions {
        alert_search_attribute: alert_attribute_registered(client).await,
        ..Default::default()
    };
    start_run_with(client, spec, task_queue, options, None).await
}

/// Whether the namespace has the `TidemarkAlert` search attribute (a run may only set a
/// registered attribute). `tidemark dev` registers it; on a cluster:
/// `temporal operator search-attribute create --name TidemarkAlert --type KeywordList`.
pub async fn alert_attribute_registered(client: &Client) -> bool {
    use temporalio_client::NamespacedClient;
    use temporalio_client::grpc::OperatorService;
    use temporalio_common::protos::temporal::api::operatorservice::v1::ListSearchAttributesRequest;
    use tonic::IntoRequest;
    let request = ListSearchAttributesRequest {
        namespace: client.namespace(),
    };
    match OperatorService::list_search_attributes(&mut client.clone(), request.into_request()).await
    {
        Ok(r) => r
            .into_inner()
            .custom_attributes
            .contains_key(tidemark_workflows::ALERT_ATTRIBUTE_NAME),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list search attributes");
            false
        }
    }
}

/// [`start_run`] with run options and a workflow task timeout (how soon a workflow task held
/// by a dead worker is handed to another; the server's default is 10 s).
pub async fn start_run_with(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
    run_options: RunOptions,
    task_timeout: Option<Duration>,
) -> anyhow::Result<RunHandle> {
    let workflow_id = run_workflow_id(&spec.name);
    let options = WorkflowStartOptions::new(task_queue, workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary(format!("tidemark incremental run of {}", spec.name))
        .maybe_task_timeout(task_timeout)
        .build();
    match client
        .start_workflow(
            IncrementalRun::run,
            RunInput {
                spec: spec.clone(),
                options: run_options,
                as_of_ms: None,
                until: None,
            },
            options,
        )
        .await
    {
        Ok(_) => Ok(client.get_workflow_handle::<IncrementalRun>(workflow_id)),
        Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { .. }) => Err(anyhow!(
            "a run of pipeline {} is already in progress (workflow {workflow_id}); wait for it (`tidemark status {}`) or cancel it in the Temporal UI",
            spec.name,
            spec.name
        )),
        Err(e) => Err(anyhow!(e).context(format!("start workflow {workflow_id}"))),
    }
}

/// Waits for a run's result. After `no_worker_after`, if no worker has picked the run up,
/// `on_no_worker` is called once (the CLI prints a hint) and the wait goes on.
pub async fn wait_run(
    handle: &RunHandle,
    no_worker_after: Duration,
    on_no_worker: impl FnOnce(),
) -> Result<RunSummary, RunFailure> {
    let result = handle.get_result(WorkflowGetResultOptions::default());
    tokio::pin!(result);
    let mut on_no_worker = Some(on_no_worker);
    let check = tokio::time::sleep(no_worker_after);
    tokio::pin!(check);
    loop {
        tokio::select! {
            r = &mut result => {
                return r.map_err(|e| RunFailure { message: error_chain(&e) });
            }
            _ = &mut check, if on_no_worker.is_some() => {
                if let Ok(d) = handle.describe(WorkflowDescribeOptions::default()).await
                    && d.status() == WorkflowExecutionStatus::Running
                    && d.history_length() <= 2
                    && let Some(f) = on_no_worker.take()
                {
                    f();
                }
                on_no_worker = None;
            }
        }
    }
}

/// A run that did not succeed, with the root cause spelled out.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RunFailure {
    /// The error chain, outermost first.
    pub message: String,
}

/// Joins an error's source chain into one line, skipping repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// An activity the server is running or retrying for a live run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingActivity {
    /// Activity name.
    pub activity: String,
    /// Current attempt (1 = first try).
    pub attempt: i32,
    /// Why the previous attempt failed, when retrying.
    pub last_failure: Option<String>,
}

/// What the server knows of a pipeline's latest run.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// Execution status.
    pub status: WorkflowExecutionStatus,
    /// The workflow's `progress` query (running runs only, when a worker answers).
    pub progress: Option<Progress>,
    /// Activities in flight, with their attempts.
    pub pending: Vec<PendingActivity>,
}

/// The latest run of a pipeline, or `None` when no execution exists.
pub async fn query_progress(client: &Client, pipeline: &str) -> anyhow::Result<Option<LiveRun>> {
    let handle = client.get_workflow_handle::<IncrementalRun>(run_workflow_id(pipeline));
    let description = match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) => d,
        Err(_) => return Ok(None),
    };
    let status = description.status();
    let pending = description
        .raw()
        .pending_activities
        .iter()
        .map(|a| PendingActivity {
            activity: a
                .activity_type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            attempt: a.attempt,
            last_failure: a.last_failure.as_ref().map(|f| f.message.clone()),
        })
        .collect();
    let progress = if status == WorkflowExecutionStatus::Running {
        handle
            .query(
                IncrementalRun::progress,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .ok()
    } else {
        None
    };
    Ok(Some(LiveRun {
        status,
        progress,
        pending,
    }))
}

/// A started backfill.
pub type BackfillHandle = WorkflowHandle<Client, tidemark_workflows::Backfill>;

/// Starts the pipeline's backfill, or with `resume` attaches to the one running (starting a
/// new one when none runs: windows already loaded are skipped).
pub async fn start_backfill(
    client: &Client,
    input: tidemark_workflows::payloads::BackfillInput,
    task_queue: &str,
    resume: bool,
) -> anyhow::Result<(BackfillHandle, bool)> {
    use tidemark_workflows::backfill::backfill_workflow_id;
    let workflow_id = backfill_workflow_id(&input.spec.name);
    let handle = client.get_workflow_handle::<tidemark_workflows::Backfill>(workflow_id.clone());
    if let Ok(d) = handle.describe(WorkflowDescribeOptions::default()).await
        && d.status() == WorkflowExecutionStatus::Running
    {
        if resume {
            return Ok((handle, true));
        }
        return Err(anyhow!(
            "a backfill of {} is in progress (workflow {workflow_id}); follow it with --resume",
            input.spec.name
        ));
    }
    let options = WorkflowStartOptions::new(task_queue, workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary(format!("tidemark backfill of {}", input.spec.name))
        .build();
    client
        .start_workflow(tidemark_workflows::Backfill::run, input, options)
        .await
        .map_err(|e| anyhow!(e).context(format!("start workflow {workflow_id}")))?;
    Ok((handle, false))
}

/// The backfill's `progress` query.
pub async fn backfill_progress(
    handle: &BackfillHandle,
) -> Option<tidemark_workflows::payloads::BackfillProgress> {
    handle
        .query(
            tidemark_workflows::Backfill::progress,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
        .ok()
}
