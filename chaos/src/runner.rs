//! Plays a case against a fleet: writes each round's files, runs the pipeline through
//! Temporal while injecting the case's faults, waits for a terminal state, and checks the
//! invariants after every round.

use crate::case::{Case, Mode, Target, materialize};
use crate::fleet::{Fleet, HEARTBEAT_MS};
use crate::oracle::check_round;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
};
use tidemark::client::{self, StartOptions, start_run_with};
use tidemark::workflows::payloads::RunOptions;
use tidemark::workflows::spec::PipelineSpec;
use tidemark::workflows::{IncrementalRun, run_workflow_id};

/// How long one run may take before the case is a violation (no terminal state).
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// Runs of a round before "the round never succeeded" is a violation.
const MAX_RUNS_PER_ROUND: u32 = 4;

/// What a case did and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseReport {
    /// Invariant violations (empty = pass).
    pub violations: Vec<String>,
    /// Target rows compared with the model.
    pub rows_checked: usize,
    /// Runs started.
    pub runs: u32,
    /// Runs that failed and were started again (retries exhausted by the fault plan).
    pub reruns: u32,
    /// Crash points that fired.
    pub crashes: BTreeMap<String, u32>,
    /// Worker connections to the object store that a store fault dropped, failed or delayed.
    pub store_faulted: u64,
    /// Wall time.
    pub duration_ms: u64,
}

/// Where a case's target lives.
pub enum TargetPlace {
    /// Delta table at `lake/orders`.
    Delta,
    /// Parquet dataset at `lake/orders`.
    Parquet,
    /// Delta table and state under `prefix` (`s3://bucket/<case>`) on the S3 server at
    /// `endpoint`.
    DeltaS3 {
        /// The workers' endpoint (through the fault proxy), `http://127.0.0.1:PORT`.
        endpoint: String,
        /// The server's own endpoint, which the oracle reads through.
        direct: String,
        /// The case's own prefix.
        prefix: String,
    },
    /// PostgreSQL table `<schema>.orders`.
    Postgres {
        /// Server URL.
        url: String,
        /// The case's own schema.
        schema: String,
    },
}

fn spec_text(mode: Mode, place: &TargetPlace) -> String {
    let (lookback, mode) = match mode {
        Mode::Merge => ("2h", "merge"),
        Mode::Append => ("0s", "append"),
        Mode::PartitionOverwrite => ("2h", "partition_overwrite"),
        Mode::Cdc => return cdc_spec_text(place),
    };
    let target = match place {
        TargetPlace::Delta => {
            "kind = \"delta\"\npath = \"lake/orders\"\npartition_by = [\"order_date\"]".to_string()
        }
        TargetPlace::DeltaS3 { .. } => format!(
            "kind = \"delta\"\n{}\npartition_by = [\"order_date\"]",
            s3_target_keys(place)
        ),
        TargetPlace::Parquet => {
            "kind = \"parquet\"\npath = \"lake/orders\"\npartition_by = [\"order_date\"]"
                .to_string()
        }
        TargetPlace::Postgres { url, schema } => {
            format!("kind = \"postgres\"\nurl = \"{url}\"\ntable = \"{schema}.orders\"")
        }
    };
    format!(
        "name = \"chaos\"\n{}[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\nlookback = \"{lookback}\"\n[target]\n{target}\nmode = \"{mode}\"\nkey = [\"order_id\"]\n",
        state_dir_line(place)
    )
}

/// `state_dir = …` of a case whose state is on object storage, else nothing (the default,
/// beside the spec).
fn state_dir_line(place: &TargetPlace) -> String {
    match place {
        TargetPlace::DeltaS3 { prefix, .. } => format!("state_dir = \"{prefix}/state\"\n"),
        _ => String::new(),
    }
}

/// `path` and the non-secret `storage_options` of an S3 case's table (the workers' keys come
/// from their environment).
fn s3_target_keys(place: &TargetPlace) -> String {
    match place {
        TargetPlace::DeltaS3 {
            endpoint, prefix, ..
        } => format!(
            "path = \"{prefix}/lake/orders\"\nstorage_options = {{ aws_endpoint = \"{endpoint}\", aws_allow_http = \"true\", aws_region = \"us-east-1\" }}"
        ),
        _ => String::new(),
    }
}

/// The spec the harness itself reads the case's table and state with: an S3 case's with the
/// test server's key pair among its storage options, in this process only (the spec the
/// workflow carries has none).
fn reader_spec(spec: &PipelineSpec, place: &TargetPlace) -> PipelineSpec {
    let mut reader = spec.clone();
    if let TargetPlace::DeltaS3 { direct, .. } = place {
        let options = &mut reader.target.storage_options;
        for (k, v) in tidemark_testkit::s3server::env_for(direct) {
            if k.starts_with("AWS_") && k != "AWS_EC2_METADATA_DISABLED" {
                options.insert(k.to_ascii_lowercase(), v);
            }
        }
        options.insert("aws_endpoint".into(), direct.clone());
        tidemark::storage::use_spec_options(&reader);
    }
    reader
}

/// A `debezium-jsonl` pipeline into the case's target (Delta or PostgreSQL).
fn cdc_spec_text(place: &TargetPlace) -> String {
    let target = match place {
        TargetPlace::Postgres { url, schema } => {
            format!("kind = \"postgres\"\nurl = \"{url}\"\ntable = \"{schema}.orders\"")
        }
        TargetPlace::DeltaS3 { .. } => format!("kind = \"delta\"\n{}", s3_target_keys(place)),
        _ => "kind = \"delta\"\npath = \"lake/orders\"".to_string(),
    };
    format!(
        "name = \"chaos\"\n{}[source]\nkind = \"debezium-jsonl\"\npath = \"data\"\nkey = [\"order_id\"]\ntypes = {{ updated_at = \"timestamp\" }}\n[target]\n{target}\n[monitor]\nmax_lag = \"off\"\n",
        state_dir_line(place)
    )
}

/// The case's target, made fresh (a Postgres case gets an empty schema named after `dir`).
async fn prepare_target(fleet: &mut Fleet, case: &Case, dir: &Path) -> anyhow::Result<TargetPlace> {
    Ok(match case.target {
        Target::Delta => TargetPlace::Delta,
        Target::DeltaS3 => {
            let s3 = fleet.s3()?;
            let id = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos();
            TargetPlace::DeltaS3 {
                endpoint: s3.workers,
                direct: s3.direct,
                prefix: format!("s3://{}/case-{id}", s3.bucket),
            }
        }
        Target::Parquet => TargetPlace::Parquet,
        Target::Postgres => {
            let url = fleet.pg_url()?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let schema: String = format!("chaos_{name}")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let client =
                tidemark::pg::connect(&tidemark::workflows::spec::ConnSpec::Url(url.clone()))
                    .await?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await?;
            TargetPlace::Postgres { url, schema }
        }
    })
}

/// Plays `case` in a fresh directory `dir` on `fleet`.
pub async fn run_case(fleet: &mut Fleet, case: &Case, dir: &Path) -> anyhow::Result<CaseReport> {
    let started = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let place = prepare_target(fleet, case, dir).await?;
    let spec_path = dir.join("chaos.toml");
    let mut text = spec_text(case.mode, &place);
    if case.regular_steps {
        text.push_str("[execution]\nlocal_activities = \"off\"\n");
    }
    if case.uses_deletion_vectors() {
        text = text.replacen("[target]\n", "[target]\ndeletion_vectors = true\n", 1);
    }
    if case.maintain {
        // Thresholds that make a small table compact: any deleted row, any small pair.
        text.push_str(
            "[maintenance]\ndeleted_fraction = 0.01\nsmall_file_mb = 64\nvacuum_retention = \"0s\"\n",
        );
    }
    if case.by_region() {
        text = text.replacen(
            "\npartition_by = [\"order_date\"]",
            "\npartition_by = [\"region\"]\npartition_stable = true",
            1,
        );
    }
    if case.unpartitioned && matches!(case.target, Target::Delta | Target::DeltaS3) {
        text = text.replacen("\npartition_by = [\"order_date\"]", "", 1);
    }
    if let Some(rows) = case.batch_rows {
        text = text.replacen(
            "[source]\n",
            &format!("[source]\nmax_batch_rows = {rows}\n"),
            1,
        );
    }
    if case.schema_change {
        text.push_str("[schema]\nnew_columns = \"add\"\n");
        if case.widens() {
            text.push_str("type_changes = \"widen\"\n");
        }
    }
    std::fs::write(&spec_path, text)?;
    let spec = tidemark::spec::load(&spec_path)?;
    let reader = reader_spec(&spec, &place);
    let m = materialize(case);
    let armed_from = usize::from(case.faults.crash_from_round);
    let plan = case.faults.plan();
    let skip = u32::from(case.faults.crash_skip);
    fleet.set_plan_skipping(if armed_from == 0 { &plan } else { &[] }, skip)?;
    let mut report = CaseReport::default();
    let mut client = client::connect(&fleet.settings()).await?;
    let mut previous = None;
    let faulted_before = fleet.store_faulted();
    for (r, files) in m.files.iter().enumerate() {
        if r > 0 && r == armed_from {
            fleet.set_plan_skipping(&plan, skip)?;
        }
        for (f, rows) in files.iter().enumerate() {
            let path = Path::new(&spec.source.path).join(format!("part-{r:03}-{f:02}.parquet"));
            write_round_file(&path, rows, case, r)?;
        }
        for (f, lines) in m.lines.get(r).into_iter().flatten().enumerate() {
            std::fs::create_dir_all(&spec.source.path)?;
            let path = Path::new(&spec.source.path).join(format!("part-{r:03}-{f:02}.jsonl"));
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(&path, text)?;
        }
        let mut succeeded = false;
        let mut last_error = String::new();
        for attempt in 0..MAX_RUNS_PER_ROUND {
            if attempt > 0 {
                report.reruns += 1;
            }
            report.runs += 1;
            let store_faults = case.target == Target::DeltaS3;
            let played = play_run(
                fleet,
                &mut client,
                &spec,
                case,
                (r == 0, store_faults),
                &mut report,
            )
            .await;
            fleet.store_fault(None);
            match played? {
                Ok(()) => {
                    succeeded = true;
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        if !succeeded {
            report.violations.push(format!(
                "round {r}: never succeeded in {MAX_RUNS_PER_ROUND} runs: {last_error}"
            ));
            break;
        }
        let (violations, rows) =
            check_round(&reader, case, &m.models[r], m.watermarks[r], previous, dir).await;
        report.rows_checked += rows;
        report
            .violations
            .extend(violations.into_iter().map(|v| format!("round {r}: {v}")));
        if !report.violations.is_empty() {
            break;
        }
        previous = m.watermarks[r];
    }
    if case.maintain && report.violations.is_empty() {
        let last = m.models.len() - 1;
        play_maintenance(fleet, &mut client, &spec, case, &mut report).await?;
        if report.violations.is_empty() {
            let (violations, rows) = check_round(
                &reader,
                case,
                &m.models[last],
                m.watermarks[last],
                previous,
                dir,
            )
            .await;
            report.rows_checked += rows;
            report.violations.extend(
                violations
                    .into_iter()
                    .map(|v| format!("after maintenance: {v}")),
            );
        }
    }
    count_crashes(fleet, &mut report)?;
    report.store_faulted = fleet.store_faulted() - faulted_before;
    fleet.set_plan(&[])?;
    fleet.supervise()?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The stable partition column of a [`Case::by_region`] case.
const REGION: &str = "region";

/// Writes one source file of round `r`: the orders, and in a schema-change case later
/// rounds' rows with the new column (and, where the target widens, the first round's
/// `customer_id` as int32).
fn write_round_file(
    path: &Path,
    rows: &[tidemark::demo::Order],
    case: &Case,
    r: usize,
) -> anyhow::Result<()> {
    use tidemark::polars::prelude::*;
    if !case.schema_change && !case.by_region() {
        return tidemark::demo::write_orders(path, rows);
    }
    let mut df = tidemark::demo::orders_frame(rows)?;
    if case.by_region() {
        let regions: Vec<String> = rows
            .iter()
            .map(|o| format!("r{}", o.order_id.rem_euclid(3)))
            .collect();
        df.with_column(Column::new(REGION.into(), regions))?;
    }
    if case.schema_change && r == 0 {
        if case.widens() {
            let narrow = df.column("customer_id")?.cast(&DataType::Int32)?;
            df.with_column(narrow)?;
        }
    } else if case.schema_change {
        let values: Vec<Option<String>> = rows
            .iter()
            .map(|o| crate::case::channel_of(&o.status))
            .collect();
        df.with_column(Column::new(crate::case::NEW_COLUMN.into(), values))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    ParquetWriter::new(std::fs::File::create(path)?).finish(&mut df)?;
    Ok(())
}

/// The case's maintenance through its workflow with the maintenance crash plan armed (run
/// again, as an operator would, while it fails), then a second one without faults, which must
/// find nothing left to compact.
async fn play_maintenance(
    fleet: &mut Fleet,
    client: &mut Client,
    spec: &PipelineSpec,
    case: &Case,
    report: &mut CaseReport,
) -> anyhow::Result<()> {
    // The rounds' crashes are counted before their tokens go with the plan.
    count_crashes(fleet, report)?;
    fleet.set_plan(&case.faults.maintain_plan())?;
    let options = RunOptions {
        heartbeat_timeout_ms: Some(HEARTBEAT_MS),
        ..Default::default()
    };
    let mut done = None;
    let mut last_error = String::new();
    for _ in 0..MAX_RUNS_PER_ROUND {
        fleet.supervise()?;
        let handle = match client::start_maintain_with(
            client,
            spec,
            &fleet.task_queue,
            false,
            options,
        )
        .await
        {
            Ok(h) => h,
            Err(e) => {
                last_error = format!("{e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let waited = tokio::time::timeout(RUN_DEADLINE, async {
            loop {
                fleet.supervise()?;
                if let Ok(d) = handle.describe(WorkflowDescribeOptions::default()).await
                    && d.status() != WorkflowExecutionStatus::Running
                {
                    return anyhow::Ok(d.status());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let waited = match waited {
            Ok(status) => Ok(status?),
            Err(e) => Err(e),
        };
        match waited {
            Ok(WorkflowExecutionStatus::Completed) => {
                done = client::wait_maintain(&handle).await.ok();
                break;
            }
            Ok(_) => {
                last_error = client::wait_maintain(&handle)
                    .await
                    .err()
                    .map_or_else(String::new, |f| f.message);
            }
            Err(_) => {
                report.violations.push(format!(
                    "maintenance did not reach a terminal state within {} s",
                    RUN_DEADLINE.as_secs()
                ));
                return Ok(());
            }
        }
    }
    count_crashes(fleet, report)?;
    fleet.set_plan(&[])?;
    if done.is_none() {
        report.violations.push(format!(
            "maintenance never succeeded in {MAX_RUNS_PER_ROUND} attempts: {last_error}"
        ));
        return Ok(());
    }
    let handle =
        client::start_maintain_with(client, spec, &fleet.task_queue, false, options).await?;
    match client::wait_maintain(&handle).await {
        Ok(again) if again.files_compacted > 0 => report.violations.push(format!(
            "a second maintenance compacted {} file(s) again (not idempotent)",
            again.files_compacted
        )),
        Ok(_) => {}
        Err(f) => report
            .violations
            .push(format!("a second maintenance failed: {}", f.message)),
    }
    Ok(())
}

/// Adds the crashes fired since the plan was set to the report (before a new plan clears
/// their tokens).
fn count_crashes(fleet: &Fleet, report: &mut CaseReport) -> anyhow::Result<()> {
    for (point, n) in fleet.crashes_fired()? {
        *report.crashes.entry(point).or_default() += n;
    }
    Ok(())
}

/// One run with the case's timed faults. `Ok(Err(msg))` is a run that failed (retries
/// exhausted); `Err` is a harness problem.
async fn play_run(
    fleet: &mut Fleet,
    client: &mut Client,
    spec: &PipelineSpec,
    case: &Case,
    (first_round, store_faults): (bool, bool),
    report: &mut CaseReport,
) -> anyhow::Result<Result<(), String>> {
    let faults = &case.faults;
    let store = faults.store.filter(|_| store_faults);
    // A short workflow task timeout: a killed worker's workflow task (and the local
    // activities it ran) moves to another worker within seconds.
    let start = || StartOptions {
        run: RunOptions {
            heartbeat_timeout_ms: Some(HEARTBEAT_MS),
            // A run in batches continues as new every two of them.
            batches_per_execution: case.batch_rows.map(|_| 2),
            ..Default::default()
        },
        task_timeout: Some(Duration::from_secs(2)),
        eager: false,
    };
    let mut tries = 0;
    loop {
        fleet.supervise()?;
        match start_run_with(client, spec, &fleet.task_queue, start()).await {
            Ok(_) => break,
            Err(e) if tries < 50 => {
                tries += 1;
                if tries % 10 == 0 {
                    *client = client::connect(&fleet.settings())
                        .await
                        .unwrap_or(client.clone());
                }
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context("start the run")),
        }
    }
    if faults.start_twice
        && start_run_with(client, spec, &fleet.task_queue, start())
            .await
            .is_ok()
    {
        report
            .violations
            .push("a second run of the same pipeline was accepted while one was active".into());
    }
    let workflow_id = run_workflow_id(&spec.name);
    let t0 = Instant::now();
    let zombie = 1 % fleet.size().max(1);
    let (mut killed, mut paused_at, mut resumed, mut restarted) = (false, None, false, false);
    let (mut store_on, mut store_off) = (false, false);
    let status = loop {
        fleet.supervise()?;
        let elapsed = t0.elapsed();
        if let Some(plan) = store {
            let on = Duration::from_millis(plan.after_ms as u64);
            if !store_on && elapsed >= on {
                fleet.store_fault(Some(plan.fault));
                store_on = true;
            }
            if store_on && !store_off && elapsed >= on + Duration::from_millis(plan.for_ms as u64) {
                fleet.store_fault(None);
                store_off = true;
            }
        }
        if let Some(ms) = faults.kill_after_ms
            && !killed
            && elapsed >= Duration::from_millis(ms as u64)
        {
            fleet.kill_worker(report.runs as usize);
            killed = true;
        }
        if faults.zombie && paused_at.is_none() && elapsed >= Duration::from_millis(150) {
            fleet.pause_worker(zombie);
            paused_at = Some(Instant::now());
        }
        if let Some(p) = paused_at
            && !resumed
            && p.elapsed() >= Duration::from_millis(HEARTBEAT_MS * 5 / 2)
        {
            fleet.resume_worker(zombie);
            resumed = true;
        }
        if faults.server_restart
            && first_round
            && !restarted
            && elapsed >= Duration::from_millis(300)
        {
            fleet.restart_server().await?;
            *client = client::connect(&fleet.settings()).await?;
            restarted = true;
        }
        let handle = client.get_workflow_handle::<IncrementalRun>(workflow_id.clone());
        if let Ok(d) = handle.describe(WorkflowDescribeOptions::default()).await
            && d.status() != WorkflowExecutionStatus::Running
        {
            break d.status();
        }
        if elapsed > RUN_DEADLINE {
            if paused_at.is_some() && !resumed {
                fleet.resume_worker(zombie);
            }
            report.violations.push(format!(
                "run did not reach a terminal state within {} s",
                RUN_DEADLINE.as_secs()
            ));
            return Ok(Err("deadline".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if paused_at.is_some() && !resumed {
        // Let the zombie wake up after the run: it must not be able to commit anything.
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
        fleet.resume_worker(zombie);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if status == WorkflowExecutionStatus::Completed {
        return Ok(Ok(()));
    }
    let handle = client.get_workflow_handle::<IncrementalRun>(workflow_id);
    let message = match handle.get_result(WorkflowGetResultOptions::default()).await {
        Ok(_) => format!("{status:?}"),
        Err(e) => client::error_chain(&e),
    };
    Ok(Err(message))
}
