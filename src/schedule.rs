//! Temporal Schedules of pipelines: `tidemark schedule create | list | describe | pause |
//! unpause | trigger | delete`.
//!
//! One schedule per pipeline, id `tidemark-<pipeline>`, whose action starts `ScheduledRun`
//! (workflow id `tidemark-scheduled-<pipeline>-<action time>`) with the spec embedded; that
//! starts `IncrementalRun` as a child under the pipeline's own id `tidemark-run-<pipeline>`, so
//! a scheduled run and a run started by hand share the one-run-per-pipeline guard. Overlap is
//! `skip` (or `buffer_one`), never a policy that would run two at once. The run's window ends
//! at the schedule's action time (`TemporalScheduledStartTime`), however late it starts.

use crate::client;
use anyhow::{Context, anyhow};
use futures::StreamExt;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use temporalio_client::Client;
use temporalio_client::schedules::{
    CreateScheduleOptions, DeleteScheduleOptions, ListSchedulesOptions, PauseScheduleOptions,
    ScheduleAction, ScheduleDescription, ScheduleError, ScheduleHandle, ScheduleIntervalSpec,
    ScheduleOverlapPolicy, ScheduleSpec as TemporalScheduleSpec, TriggerScheduleOptions,
    UnpauseScheduleOptions,
};
use tidemark_workflows::payloads::{RunInput, RunOptions};
use tidemark_workflows::spec::{Overlap, PipelineSpec, ScheduleSpec};
use tidemark_workflows::{ScheduledRun, schedule_id};

/// What `create` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Schedule id.
    pub schedule_id: String,
    /// `created` or `updated`.
    pub action: &'static str,
    /// Whether the schedule is paused now.
    pub paused: bool,
    /// The next start times (RFC 3339).
    pub next_runs: Vec<String>,
}

/// One schedule, as `list` and `describe` report it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    /// Schedule id.
    pub schedule_id: String,
    /// Pipeline name (from the id).
    pub pipeline: String,
    /// Paused?
    pub paused: bool,
    /// The operator's note (why it was paused).
    pub note: Option<String>,
    /// `cron` / `every` as the server holds them.
    pub spec: String,
    /// Overlap policy.
    pub overlap: String,
    /// Catch-up window, seconds.
    pub catchup_window_s: Option<i64>,
    /// Runs started so far.
    pub action_count: Option<i64>,
    /// Starts skipped because a run was still going.
    pub overlap_skipped: Option<i64>,
    /// Starts missed by more than the catch-up window.
    pub missed_catchup_window: Option<i64>,
    /// Recent starts: scheduled time, actual time, workflow run id.
    pub recent: Vec<RecentRun>,
    /// A run of the schedule in progress.
    pub running: Vec<String>,
    /// Upcoming start times (RFC 3339).
    pub next_runs: Vec<String>,
}

/// One recent action of a schedule.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRun {
    /// The schedule's action time.
    pub scheduled: String,
    /// When the server actually started it.
    pub started: String,
    /// The workflow's run id.
    pub run_id: String,
}

fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn temporal_spec(s: &ScheduleSpec) -> TemporalScheduleSpec {
    let mut spec = TemporalScheduleSpec::default();
    if let Some(cron) = &s.cron {
        spec.cron_strings = vec![cron.clone()];
    }
    if let Some(ms) = s.every_ms {
        spec.intervals = vec![ScheduleIntervalSpec::new(Duration::from_millis(ms), None)];
    }
    spec.timezone_name = s.timezone.clone().unwrap_or_default();
    spec.jitter = s.jitter_ms.map(Duration::from_millis);
    spec
}

fn overlap(o: Overlap) -> ScheduleOverlapPolicy {
    match o {
        Overlap::Skip => ScheduleOverlapPolicy::Skip,
        Overlap::BufferOne => ScheduleOverlapPolicy::BufferOne,
    }
}

fn action(spec: &PipelineSpec, task_queue: &str, options: RunOptions) -> ScheduleAction {
    ScheduleAction::start_workflow(
        ScheduledRun::run,
        RunInput {
            spec: spec.clone(),
            options,
            as_of_ms: None,
            until: None,
            carried: None,
        },
        task_queue,
        format!("tidemark-scheduled-{}", spec.name),
    )
}

fn not_found(e: &ScheduleError) -> bool {
    matches!(e, ScheduleError::Rpc(s) if s.code() == tonic::Code::NotFound)
}

fn handle(client: &Client, pipeline: &str) -> ScheduleHandle<Client> {
    client.get_schedule_handle(schedule_id(pipeline))
}

/// Creates the pipeline's schedule from its `[schedule]` table, or updates it to match the
/// spec (spec, action, policies). An update keeps an operator's pause; `paused = true` in the
/// spec pauses.
pub async fn create_or_update(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
) -> anyhow::Result<Applied> {
    let sched = spec.schedule.clone().ok_or_else(|| {
        anyhow!(
            "{}: the spec has no [schedule] table; add one, e.g.\n  [schedule]\n  cron = \"*/15 * * * *\"   # or every = \"15m\"",
            spec.spec_path
        )
    })?;
    let options = RunOptions {
        alert_search_attribute: client::alert_attribute_registered(client).await,
        ..Default::default()
    };
    let h = handle(client, &spec.name);
    let existing = match h.describe(Default::default()).await {
        Ok(d) => Some(d),
        Err(e) if not_found(&e) => None,
        Err(e) => return Err(anyhow!(e).context("describe the schedule")),
    };
    let (verb, was_paused) = match &existing {
        Some(d) => ("updated", d.paused()),
        None => {
            // Created paused, so nothing fires before the policies below are in place.
            let create = CreateScheduleOptions::builder()
                .action(action(spec, task_queue, options))
                .spec(temporal_spec(&sched))
                .overlap_policy(overlap(sched.overlap))
                .paused(true)
                .note("tidemark: being configured")
                .build();
            client
                .create_schedule(schedule_id(&spec.name), create)
                .await
                .context("create the schedule")?;
            ("created", false)
        }
    };
    let paused = sched.paused || was_paused;
    let (tq, spec_c, sched_c) = (task_queue.to_string(), spec.clone(), sched.clone());
    h.update(
        move |u| {
            u.set_spec(temporal_spec(&sched_c))
                .set_action(action(&spec_c, &tq, options))
                .set_overlap_policy(overlap(sched_c.overlap))
                .set_catchup_window(Duration::from_millis(sched_c.catchup_window_ms))
                .set_pause_on_failure(false)
                .set_paused(paused);
            if !paused {
                u.set_note("");
            } else if sched_c.paused {
                u.set_note("paused by the spec ([schedule] paused = true)");
            }
        },
        Default::default(),
    )
    .await
    .context("apply the schedule's policies")?;
    let next_runs = match h.describe(Default::default()).await {
        Ok(d) => d.future_action_times().into_iter().map(rfc3339).collect(),
        Err(_) => Vec::new(),
    };
    Ok(Applied {
        schedule_id: schedule_id(&spec.name),
        action: verb,
        paused,
        next_runs,
    })
}

/// Creates or updates the pipeline's maintenance schedule (`tidemark-maintain-<pipeline>`)
/// from `[maintenance] cron` / `every`: its action starts `ScheduledMaintain`, which runs
/// `Maintain` under the pipeline's own id (a run in progress makes it a recorded skip).
/// `None` when the spec schedules no maintenance.
pub async fn create_or_update_maintenance(
    client: &Client,
    spec: &PipelineSpec,
    task_queue: &str,
) -> anyhow::Result<Option<Applied>> {
    use tidemark_workflows::ScheduledMaintain;
    use tidemark_workflows::maintain::maintain_schedule_id;
    use tidemark_workflows::payloads::{MaintainInput, RunIdentity};
    let Some(sched) = spec.maintenance.schedule.clone() else {
        return Ok(None);
    };
    let id = maintain_schedule_id(&spec.name);
    let action = |spec: &PipelineSpec, tq: &str| {
        ScheduleAction::start_workflow(
            ScheduledMaintain::run,
            MaintainInput {
                spec: spec.clone(),
                run: RunIdentity {
                    workflow_id: String::new(),
                    run_id: String::new(),
                    started_at_ms: 0,
                },
                dry_run: false,
                options: Default::default(),
            },
            tq,
            format!("tidemark-maintain-scheduled-{}", spec.name),
        )
    };
    let h = client.get_schedule_handle(id.clone());
    let existing = match h.describe(Default::default()).await {
        Ok(d) => Some(d),
        Err(e) if not_found(&e) => None,
        Err(e) => return Err(anyhow!(e).context("describe the maintenance schedule")),
    };
    let (verb, was_paused) = match &existing {
        Some(d) => ("updated", d.paused()),
        None => {
            let create = CreateScheduleOptions::builder()
                .action(action(spec, task_queue))
                .spec(temporal_spec(&sched))
                .overlap_policy(ScheduleOverlapPolicy::Skip)
                .paused(sched.paused)
                .build();
            client
                .create_schedule(id.clone(), create)
                .await
                .context("create the maintenance schedule")?;
            ("created", false)
        }
    };
    let paused = sched.paused || was_paused;
    if existing.is_some() {
        let (tq, spec_c, sched_c) = (task_queue.to_string(), spec.clone(), sched.clone());
        h.update(
            move |u| {
                u.set_spec(temporal_spec(&sched_c))
                    .set_action(action(&spec_c, &tq))
                    .set_overlap_policy(ScheduleOverlapPolicy::Skip)
                    .set_paused(paused);
            },
            Default::default(),
        )
        .await
        .context("update the maintenance schedule")?;
    }
    let next_runs = match h.describe(Default::default()).await {
        Ok(d) => d.future_action_times().into_iter().map(rfc3339).collect(),
        Err(_) => Vec::new(),
    };
    Ok(Some(Applied {
        schedule_id: id,
        action: verb,
        paused,
        next_runs,
    }))
}

fn info_of(pipeline: &str, d: &ScheduleDescription) -> ScheduleInfo {
    let raw = d.raw();
    let sched = raw.schedule.as_ref();
    let tspec = sched.and_then(|s| s.spec.as_ref());
    let mut parts = Vec::new();
    if let Some(t) = tspec {
        parts.extend(t.cron_string.iter().map(|c| format!("cron {c}")));
        for i in &t.interval {
            if let Some(every) = &i.interval {
                parts.push(format!("every {}s", every.seconds));
            }
        }
        for c in &t.structured_calendar {
            parts.push(format!("calendar {c:?}").chars().take(80).collect());
        }
        if !t.timezone_name.is_empty() {
            parts.push(format!("({})", t.timezone_name));
        }
    }
    let policies = sched.and_then(|s| s.policies.as_ref());
    let overlap = match policies.map(|p| p.overlap_policy).unwrap_or(0) {
        0 | 1 => "skip",
        2 => "buffer_one",
        3 => "buffer_all",
        4 => "cancel_other",
        5 => "terminate_other",
        _ => "allow_all",
    };
    let info = raw.info.as_ref();
    ScheduleInfo {
        schedule_id: schedule_id(pipeline),
        pipeline: pipeline.to_string(),
        paused: d.paused(),
        note: d.note().map(str::to_string).filter(|n| !n.is_empty()),
        spec: parts.join(", "),
        overlap: overlap.to_string(),
        catchup_window_s: policies
            .and_then(|p| p.catchup_window.as_ref())
            .map(|w| w.seconds),
        action_count: info.map(|i| i.action_count),
        overlap_skipped: info.map(|i| i.overlap_skipped),
        missed_catchup_window: info.map(|i| i.missed_catchup_window),
        recent: d
            .recent_actions()
            .into_iter()
            .map(|a| RecentRun {
                scheduled: a.schedule_time.map(rfc3339).unwrap_or_default(),
                started: a.actual_time.map(rfc3339).unwrap_or_default(),
                run_id: a.run_id,
            })
            .collect(),
        running: d.running_actions().into_iter().map(|a| a.run_id).collect(),
        next_runs: d.future_action_times().into_iter().map(rfc3339).collect(),
    }
}

/// Describes a pipeline's schedule.
pub async fn describe(client: &Client, pipeline: &str) -> anyhow::Result<ScheduleInfo> {
    match handle(client, pipeline).describe(Default::default()).await {
        Ok(d) => Ok(info_of(pipeline, &d)),
        Err(e) if not_found(&e) => Err(anyhow!(
            "pipeline `{pipeline}` has no schedule (create it with `tidemark schedule create SPEC`)"
        )),
        Err(e) => Err(anyhow!(e).context("describe the schedule")),
    }
}

/// Every tidemark schedule of the namespace.
pub async fn list(client: &Client) -> anyhow::Result<Vec<ScheduleInfo>> {
    let mut stream = client.list_schedules(ListSchedulesOptions::default());
    let mut ids = Vec::new();
    while let Some(item) = stream.next().await {
        let s = item.context("list schedules")?;
        if let Some(p) = s.schedule_id().strip_prefix("tidemark-") {
            ids.push(p.to_string());
        }
    }
    ids.sort();
    let mut out = Vec::new();
    for p in ids {
        out.push(describe(client, &p).await?);
    }
    Ok(out)
}

/// Pauses a pipeline's schedule, with the operator's note.
pub async fn pause(client: &Client, pipeline: &str, note: Option<String>) -> anyhow::Result<()> {
    describe(client, pipeline).await?;
    handle(client, pipeline)
        .pause(
            Some(note.unwrap_or_else(|| "paused with tidemark schedule pause".into())),
            PauseScheduleOptions::default(),
        )
        .await
        .context("pause the schedule")
}

/// Unpauses a pipeline's schedule.
pub async fn unpause(client: &Client, pipeline: &str, note: Option<String>) -> anyhow::Result<()> {
    describe(client, pipeline).await?;
    handle(client, pipeline)
        .unpause(
            Some(note.unwrap_or_default()),
            UnpauseScheduleOptions::default(),
        )
        .await
        .context("unpause the schedule")
}

/// Starts a run now through the schedule (skipped if a run is in progress).
pub async fn trigger(client: &Client, pipeline: &str) -> anyhow::Result<()> {
    describe(client, pipeline).await?;
    handle(client, pipeline)
        .trigger(
            ScheduleOverlapPolicy::Skip,
            TriggerScheduleOptions::default(),
        )
        .await
        .context("trigger the schedule")
}

/// Deletes a pipeline's schedule, and its maintenance schedule if it has one (runs in
/// progress continue).
pub async fn delete(client: &Client, pipeline: &str) -> anyhow::Result<()> {
    describe(client, pipeline).await?;
    handle(client, pipeline)
        .delete(DeleteScheduleOptions::default())
        .await
        .context("delete the schedule")?;
    let maintenance =
        client.get_schedule_handle(tidemark_workflows::maintain::maintain_schedule_id(pipeline));
    match maintenance.delete(DeleteScheduleOptions::default()).await {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(anyhow!(e).context("delete the maintenance schedule")),
    }
}
