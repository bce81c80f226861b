//! The Temporal client side of the CLI: connecting (Temporal's own conventions:
//! `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `temporal.toml` profiles, `TEMPORAL_TLS_*` and
//! `TEMPORAL_API_KEY`, under the CLI's `--tls-*` / `--api-key-env` flags), starting a run,
//! waiting for it, and querying its progress.

use anyhow::{Context, anyhow, bail};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
pub use temporalio_client::Client;
use temporalio_client::envconfig::{ConfigError, DataSource, LoadClientConfigProfileOptions};
use temporalio_client::{
    ClientOptions, Connection, ConnectionOptions, WorkflowDescribeOptions, WorkflowExecutionStatus,
    WorkflowGetResultOptions, WorkflowHandle, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowQueryOptions, WorkflowStartOptions,
};
use temporalio_common::envconfig::load_client_config_profile;
use tidemark_workflows::payloads::{Progress, RunInput, RunOptions, RunSummary};
use tidemark_workflows::spec::PipelineSpec;
use tidemark_workflows::{IncrementalRun, run_workflow_id};

/// Where to connect and how. `None` fields fall back to Temporal's own conventions, in the
/// `temporal` CLI's order: a flag, else the `TEMPORAL_*` environment, else the profile of
/// `temporal.toml`, else the default (`localhost:7233`, namespace `default`, no TLS).
///
/// Holds no secret: an API key is named by the environment variable that carries it.
#[derive(Debug, Clone, Default)]
pub struct ConnectSettings {
    /// `host:port` of the frontend.
    pub address: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// The `temporal.toml` profile (else `TEMPORAL_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// The `temporal.toml` file (else `TEMPORAL_CONFIG_FILE`, else
    /// `~/.config/temporalio/temporal.toml`); must exist when given.
    pub config_file: Option<PathBuf>,
    /// TLS on (`Some(true)`) or off (`Some(false)`); `None`: as the profile and environment
    /// say, on when any other TLS setting or an API key is given.
    pub tls: Option<bool>,
    /// The CA certificate (PEM) the server's certificate must chain to; else the system's
    /// trusted roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS; with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate is checked for (and sent as SNI), when it is not
    /// the address's host.
    pub tls_server_name: Option<String>,
    /// The environment variable holding the API key (else `TEMPORAL_API_KEY`, else the
    /// profile's `api_key`).
    pub api_key_env: Option<String>,
    /// A local dev server tidemark started itself: plain text, no profile, no environment
    /// (so a user's cloud settings neither reach nor break it).
    pub local: bool,
}

impl ConnectSettings {
    /// The settings of a local dev server tidemark started, at `address`.
    pub fn local(address: &str) -> Self {
        ConnectSettings {
            address: Some(address.to_string()),
            namespace: Some("default".into()),
            local: true,
            ..Default::default()
        }
    }
}

/// A Temporal settings error in words, never quoting a configuration file's contents (a
/// TOML error quotes the offending line, which may be an `api_key`).
fn config_error(e: ConfigError) -> anyhow::Error {
    let what = match e {
        ConfigError::LoadError(inner) => {
            let text = inner.to_string();
            let first = text.lines().next().unwrap_or_default().to_string();
            format!("cannot read or parse the settings: {first}")
        }
        other => other.to_string(),
    };
    anyhow!("Temporal connection settings (temporal.toml profile, TEMPORAL_* environment): {what}")
}

/// The connection and client options `settings` name, with `env` (None: the process's
/// environment) under the flags and over the profile.
pub fn connection_options(
    settings: &ConnectSettings,
    env: Option<&HashMap<String, String>>,
) -> anyhow::Result<(ConnectionOptions, ClientOptions)> {
    let namespace_default = || "default".to_string();
    if settings.local {
        let addr = settings.address.as_deref().unwrap_or("localhost:7233");
        let url: url::Url = format!("http://{addr}")
            .parse()
            .with_context(|| format!("bad Temporal address {addr:?}"))?;
        let ns = settings.namespace.clone().unwrap_or_else(namespace_default);
        return Ok((
            ConnectionOptions::new(url).build(),
            ClientOptions::new(ns).build(),
        ));
    }
    if let Some(f) = &settings.config_file
        && !f.is_file()
    {
        bail!("--config-file {}: no such file", f.display());
    }
    let load = LoadClientConfigProfileOptions::builder()
        .maybe_config_source(
            settings
                .config_file
                .as_ref()
                .map(|f| DataSource::Path(f.to_string_lossy().into_owned())),
        )
        .maybe_config_file_profile(settings.profile.clone())
        .build();
    let mut p = load_client_config_profile(load, env).map_err(config_error)?;
    if let Some(a) = &settings.address {
        p.address = Some(a.clone());
    }
    if let Some(ns) = &settings.namespace {
        p.namespace = Some(ns.clone());
    }
    if let Some(var) = &settings.api_key_env {
        let value = match env {
            Some(m) => m.get(var).cloned(),
            None => std::env::var(var).ok(),
        }
        .filter(|v| !v.is_empty());
        p.api_key = Some(value.ok_or_else(|| {
            anyhow!("environment variable {var} (--api-key-env) is not set or empty")
        })?);
    }
    let flags_name_tls = settings.tls_ca.is_some()
        || settings.tls_cert.is_some()
        || settings.tls_key.is_some()
        || settings.tls_server_name.is_some();
    if settings.tls == Some(false) && flags_name_tls {
        bail!("--no-tls contradicts the --tls-* settings given with it");
    }
    if flags_name_tls || settings.tls.is_some() {
        let t = p.tls.get_or_insert_with(Default::default);
        t.disabled = Some(settings.tls == Some(false));
        let path = |f: &PathBuf| DataSource::Path(f.to_string_lossy().into_owned());
        if let Some(f) = &settings.tls_ca {
            t.server_ca_cert = Some(path(f));
        }
        if let Some(f) = &settings.tls_cert {
            t.client_cert = Some(path(f));
        }
        if let Some(f) = &settings.tls_key {
            t.client_key = Some(path(f));
        }
        if let Some(n) = &settings.tls_server_name {
            t.server_name = Some(n.clone());
        }
    }
    if let Some(t) = &p.tls {
        if t.disable_host_verification && t.disabled != Some(true) {
            bail!(
                "TLS host verification cannot be turned off (TEMPORAL_TLS_DISABLE_HOST_VERIFICATION / disable_host_verification): the Temporal Rust SDK would ignore it; name the certificate's host with --tls-server-name (TEMPORAL_TLS_SERVER_NAME) instead"
            );
        }
        for (what, source) in [
            (
                "CA certificate (--tls-ca, TEMPORAL_TLS_SERVER_CA_CERT_PATH)",
                &t.server_ca_cert,
            ),
            (
                "client certificate (--tls-cert, TEMPORAL_TLS_CLIENT_CERT_PATH)",
                &t.client_cert,
            ),
            (
                "client key (--tls-key, TEMPORAL_TLS_CLIENT_KEY_PATH)",
                &t.client_key,
            ),
        ] {
            if let Some(DataSource::Path(f)) = source
                && !std::path::Path::new(f).is_file()
            {
                bail!("Temporal TLS {what} {f}: no such file");
            }
        }
    }
    let namespace = p.namespace.clone().unwrap_or_else(namespace_default);
    let shown_address = p.address.clone();
    let conn = ConnectionOptions::try_from(p).map_err(config_error)?;
    if conn.tls_options.is_some() && conn.target.scheme() == "http" {
        bail!(
            "the Temporal address {} says plain text (http://) but TLS is on: write it as host:port or https://host:port",
            shown_address.unwrap_or_default()
        );
    }
    if conn.api_key.is_some() && conn.tls_options.is_none() {
        let loopback = match conn.target.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !loopback {
            bail!(
                "an API key would travel in plain text to {}: turn TLS on (--tls, TEMPORAL_TLS=true) or drop --no-tls",
                conn.target
            );
        }
    }
    Ok((conn, ClientOptions::new(namespace).build()))
}

/// Connects to Temporal, failing within a few seconds with a message that says what to do.
pub async fn connect(settings: &ConnectSettings) -> anyhow::Result<Client> {
    let (conn, opts) = connection_options(settings, None)?;
    let target = conn.target.to_string();
    let tls = conn.tls_options.is_some();
    let connection = tokio::time::timeout(Duration::from_secs(10), Connection::connect(conn))
        .await
        .map_err(|_| anyhow!("timed out connecting to Temporal at {target}"))?
        .map_err(|e| {
            let hint = if tls {
                "check the CA (--tls-ca), the client certificate and key (--tls-cert, --tls-key) and the server name (--tls-server-name)"
            } else {
                "start a local server with `tidemark dev`, or set TEMPORAL_ADDRESS / --address (and --tls for a server that needs TLS)"
            };
            anyhow!(
                "cannot reach Temporal at {target}{}: {}\n  {hint}",
                if tls { " over TLS" } else { "" },
                error_chain(&e)
            )
        })?;
    Client::new(connection, opts).context("create the Temporal client")
}

/// A started run.
pub type RunHandle = WorkflowHandle<Client, IncrementalRun>;

/// How a run is started.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The run's options (recorded in its input).
    pub run: RunOptions,
    /// Workflow task timeout: how soon a workflow task held by a dead worker (and the local
    /// activities it was running) is handed to another; the server's default is 10 s.
    pub task_timeout: Option<Duration>,
    /// Eager workflow start: the server hands the first workflow task straight back to a
    /// worker of this process on the same client (the demo), saving a matching round trip.
    /// Ignored when this client has no worker on the task queue.
    pub eager: bool,
}

/// Starts `IncrementalRun` for a pipeline. Refuses (with the running execution's id) when a
/// run of the same pipeline is already in progress.
pub async fn start_run(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
) -> anyhow::Result<RunHandle> {
    let start = StartOptions::for_namespace(client).await;
    start_run_with(client, spec, task_queue, start).await
}

impl StartOptions {
    /// The default options of a run started on `client`'s namespace: the alert search
    /// attribute set only where the namespace has it.
    pub async fn for_namespace(client: &Client) -> StartOptions {
        StartOptions {
            run: RunOptions {
                alert_search_attribute: alert_attribute_registered(client).await,
                ..Default::default()
            },
            ..Default::default()
        }
    }
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

/// [`start_run`] with explicit start options.
pub async fn start_run_with(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
    start: StartOptions,
) -> anyhow::Result<RunHandle> {
    let workflow_id = run_workflow_id(&spec.name);
    let options = WorkflowStartOptions::new(task_queue, workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary(format!("tidemark incremental run of {}", spec.name))
        .maybe_task_timeout(start.task_timeout)
        .enable_eager_workflow_start(start.eager)
        .build();
    match client
        .start_workflow(
            IncrementalRun::run,
            RunInput {
                spec: spec.clone(),
                options: start.run,
                as_of_ms: None,
                until: None,
                carried: None,
            },
            options,
        )
        .await
    {
        Ok(_) => Ok(client.get_workflow_handle::<IncrementalRun>(workflow_id)),
        Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { .. }) => Err(anyhow!(
            "a run (or a maintenance) of pipeline {} is already in progress (workflow {workflow_id}); wait for it (`tidemark status {}`) or cancel it in the Temporal UI",
            spec.name,
            spec.name
        )),
        Err(e) => Err(anyhow!(e).context(format!("start workflow {workflow_id}"))),
    }
}

/// A started maintenance.
pub type MaintainHandle = WorkflowHandle<Client, tidemark_workflows::Maintain>;

/// Starts the pipeline's maintenance (`Maintain`) under the pipeline's own workflow id, so it
/// never runs beside a run of the pipeline: refused while a run (or a maintenance) is active.
pub async fn start_maintain(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
    dry_run: bool,
) -> anyhow::Result<MaintainHandle> {
    start_maintain_with(client, spec, task_queue, dry_run, RunOptions::default()).await
}

/// [`start_maintain`] with run options (the chaos harness's short heartbeat timeout).
pub async fn start_maintain_with(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
    dry_run: bool,
    options: RunOptions,
) -> anyhow::Result<MaintainHandle> {
    use tidemark_workflows::payloads::{MaintainInput, RunIdentity};
    let workflow_id = run_workflow_id(&spec.name);
    let start = WorkflowStartOptions::new(task_queue, workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary(format!("tidemark maintenance of {}", spec.name))
        .task_timeout(Duration::from_secs(2))
        .build();
    let input = MaintainInput {
        spec: spec.clone(),
        run: RunIdentity {
            workflow_id: workflow_id.clone(),
            run_id: String::new(),
            started_at_ms: chrono::Utc::now().timestamp_millis(),
        },
        dry_run,
        options,
    };
    match client
        .start_workflow(tidemark_workflows::Maintain::run, input, start)
        .await
    {
        Ok(_) => Ok(client.get_workflow_handle::<tidemark_workflows::Maintain>(workflow_id)),
        Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { .. }) => Err(anyhow!(
            "a run or maintenance of pipeline {} is in progress (workflow {workflow_id}); maintenance never runs beside a run: wait for it (`tidemark status {}`)",
            spec.name,
            spec.name
        )),
        Err(e) => Err(anyhow!(e).context(format!("start workflow {workflow_id}"))),
    }
}

/// Waits for a maintenance's report.
pub async fn wait_maintain(
    handle: &MaintainHandle,
) -> Result<tidemark_workflows::payloads::MaintainReport, RunFailure> {
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| RunFailure {
            message: error_chain(&e),
        })
}

/// Runs the `Ping` workflow (`activities` no-op activities) on `task_queue` and waits for
/// it, at most `timeout`: proves that a worker serves the queue. Returns the workflow id and
/// the round trip.
pub async fn ping(
    client: &Client,
    task_queue: &str,
    activities: u32,
    timeout: Duration,
) -> anyhow::Result<(String, Duration)> {
    let started = std::time::Instant::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let workflow_id = format!("tidemark-ping-{}-{nanos}", std::process::id());
    // A ping no worker answered must not linger: it expires a minute after the wait ends.
    let options = WorkflowStartOptions::new(task_queue, workflow_id.clone())
        .static_summary("tidemark ping".to_string())
        .execution_timeout(timeout + Duration::from_secs(60))
        .build();
    let handle = client
        .start_workflow(tidemark_workflows::Ping::run, activities, options)
        .await
        .map_err(|e| anyhow!(e).context(format!("start workflow {workflow_id}")))?;
    match tokio::time::timeout(
        timeout,
        handle.get_result(WorkflowGetResultOptions::default()),
    )
    .await
    {
        Ok(Ok(_)) => Ok((workflow_id, started.elapsed())),
        Ok(Err(e)) => Err(anyhow!(
            "ping workflow {workflow_id} failed: {}",
            error_chain(&e)
        )),
        Err(_) => Err(anyhow!(
            "no worker answered on task queue {task_queue} within {} s (workflow {workflow_id} stays queued until its task queue gets a worker): is `tidemark worker --task-queue {task_queue}` running against this server?",
            timeout.as_secs()
        )),
    }
}

/// The server work a finished workflow cost: its history's event count and how many
/// workflow tasks completed in it (the latest run of `workflow_id`).
pub async fn history_shape(client: &Client, workflow_id: &str) -> anyhow::Result<(u32, u32)> {
    use temporalio_client::WorkflowFetchHistoryOptions;
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    let events = client
        .get_workflow_handle::<IncrementalRun>(workflow_id.to_string())
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .with_context(|| format!("fetch the history of {workflow_id}"))?;
    let tasks = events
        .iter()
        .filter(|e| e.event_type() == EventType::WorkflowTaskCompleted)
        .count();
    Ok((events.len() as u32, tasks as u32))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Settings that read no file (the profile file is a missing path).
    fn settings() -> ConnectSettings {
        ConnectSettings {
            profile: None,
            ..Default::default()
        }
    }

    fn options(s: &ConnectSettings, e: &[(&str, &str)]) -> anyhow::Result<ConnectionOptions> {
        let mut vars = env(e);
        vars.insert(
            "TEMPORAL_CONFIG_FILE".into(),
            "/nonexistent/temporal.toml".into(),
        );
        connection_options(s, Some(&vars)).map(|(c, _)| c)
    }

    #[test]
    fn an_api_key_turns_tls_on_and_flags_win_over_the_environment() {
        let c = options(
            &settings(),
            &[
                ("TEMPORAL_ADDRESS", "ns.tmprl.cloud:7233"),
                ("TEMPORAL_API_KEY", "k-env"),
            ],
        )
        .unwrap();
        assert_eq!(c.api_key.as_deref(), Some("k-env"));
        assert!(c.tls_options.is_some());
        assert_eq!(c.target.scheme(), "https");
        let s = ConnectSettings {
            address: Some("other.example:7233".into()),
            api_key_env: Some("MY_KEY".into()),
            ..settings()
        };
        let c = options(&s, &[("TEMPORAL_API_KEY", "k-env"), ("MY_KEY", "k-flag")]).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("k-flag"));
        assert_eq!(c.target.host_str(), Some("other.example"));
    }

    #[test]
    fn tls_flags_set_the_ca_and_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
        );
        for f in [&ca, &cert, &key] {
            std::fs::write(f, "PEM").unwrap();
        }
        let s = ConnectSettings {
            address: Some("127.0.0.1:7233".into()),
            tls_ca: Some(ca),
            tls_cert: Some(cert),
            tls_key: Some(key),
            tls_server_name: Some("frontend.example".into()),
            ..settings()
        };
        let c = options(&s, &[]).unwrap();
        let tls = c.tls_options.expect("TLS on");
        assert_eq!(tls.server_root_ca_cert.as_deref(), Some(&b"PEM"[..]));
        assert!(tls.client_tls_options.is_some());
        assert_eq!(tls.domain.as_deref(), Some("frontend.example"));
        assert_eq!(c.target.scheme(), "https");
        // Without flags and environment: plain text to localhost.
        let c = options(&settings(), &[]).unwrap();
        assert!(c.tls_options.is_none());
        assert_eq!(c.target.as_str(), "http://localhost:7233/");
    }

    #[test]
    fn unsafe_or_contradictory_settings_are_refused_with_the_reason() {
        let e = options(
            &ConnectSettings {
                address: Some("temporal.example:7233".into()),
                tls: Some(false),
                ..settings()
            },
            &[("TEMPORAL_API_KEY", "secret-key")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("plain text") && !e.contains("secret-key"), "{e}");
        let e = options(
            &ConnectSettings {
                address: Some("http://temporal.example:7233".into()),
                tls: Some(true),
                ..settings()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("http://"), "{e}");
        let e = options(
            &settings(),
            &[("TEMPORAL_TLS_DISABLE_HOST_VERIFICATION", "true")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--tls-server-name"), "{e}");
        let e = options(
            &ConnectSettings {
                tls_ca: Some("/no/such/ca.pem".into()),
                ..settings()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such/ca.pem"), "{e}");
        let e = options(
            &ConnectSettings {
                api_key_env: Some("UNSET_VAR_FOR_TEST".into()),
                ..settings()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("UNSET_VAR_FOR_TEST"), "{e}");
    }

    #[test]
    fn a_malformed_config_file_is_reported_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("temporal.toml");
        std::fs::write(
            &f,
            "[profile.default]\napi_key = \"secret-in-file\"\nbroken = \n",
        )
        .unwrap();
        let e = options(
            &ConnectSettings {
                config_file: Some(f),
                ..settings()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Temporal connection settings"), "{e}");
        assert!(!e.contains("secret-in-file"), "{e}");
    }

    #[test]
    fn a_local_dev_server_ignores_the_environment() {
        let c = options(
            &ConnectSettings::local("127.0.0.1:7999"),
            &[("TEMPORAL_API_KEY", "k"), ("TEMPORAL_TLS", "true")],
        )
        .unwrap();
        assert!(c.tls_options.is_none() && c.api_key.is_none());
        assert_eq!(c.target.as_str(), "http://127.0.0.1:7999/");
    }
}
