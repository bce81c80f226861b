//! Production operation against the real dev server: a schedule fires runs and pauses, a run
//! is watched through its query while it is in `stage`, each alert rule fires on data built to
//! trip it and stays quiet otherwise, a reset makes the next run reprocess everything once,
//! and the CLI's status/history/reset speak JSON.

use crate::harness::{
    CrashingWorkers, Pipeline, queue, run, server_address, settings, with_worker,
};
use std::time::Duration;
use tidemark::client;
use tidemark::demo::{
    BASE_US, Order, newest_per_key, read_orders_table, table_matches, write_orders,
};
use tidemark::reset::{self, ResetTo};
use tidemark::workflows::payloads::Phase;

const MINUTE: i64 = 60_000_000;

/// `n` orders with ids from `first`, cursor values from `at_us` a second apart.
fn orders(first: i64, n: i64, at_us: i64) -> Vec<Order> {
    (0..n)
        .map(|i| Order {
            order_id: first + i,
            customer_id: i % 7,
            status: "new".into(),
            amount: 10.0 + i as f64,
            updated_at_us: at_us + i * 1_000_000,
            order_date_days: (at_us / 86_400_000_000) as i32,
        })
        .collect()
}

fn alert_rules(p: &Pipeline) -> Vec<Vec<String>> {
    p.state()
        .read_ledger()
        .unwrap()
        .iter()
        .filter(|e| e.status != "failed")
        .map(|e| e.alerts.iter().map(|a| a.rule.clone()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alert_rule_fires_on_data_built_to_trip_it_and_stays_quiet_otherwise() {
    // Recent data: the lag rule stays quiet. Three steady batches, a spike, then empty runs.
    let now_us = chrono::Utc::now().timestamp_micros();
    let p = Pipeline::new(
        "alerts",
        "",
        "[monitor]\nmax_lag = \"2h\"\nempty_runs_alert = 2\nspike_factor = 5\n",
    );
    let q = queue("alerts");
    with_worker(&q, async {
        let mut files = Vec::new();
        for round in 0..3 {
            let batch = orders(round * 10, 10, now_us - (30 - round) * MINUTE);
            write_orders(&p.source_file(round as usize), &batch).unwrap();
            files.push(batch);
            let s = run(&p.spec, &q).await.expect("steady run");
            assert!(
                s.progress.alerts.is_empty(),
                "round {round}: {:?}",
                s.progress.alerts
            );
        }
        // 100 rows against an average of 10: above 5×.
        let spike = orders(1000, 100, now_us - 5 * MINUTE);
        write_orders(&p.source_file(3), &spike).unwrap();
        files.push(spike);
        let s = run(&p.spec, &q).await.expect("spike run");
        assert_eq!(s.progress.alerts, vec!["spike".to_string()]);
        // No new data twice: the second empty run trips empty_runs_alert = 2.
        let first_empty = run(&p.spec, &q).await.expect("empty run");
        assert!(first_empty.progress.alerts.is_empty());
        let second_empty = run(&p.spec, &q).await.expect("empty run");
        assert_eq!(second_empty.progress.alerts, vec!["empty_runs".to_string()]);
        let table = read_orders_table(&p.spec.target.path).await.unwrap();
        assert!(table_matches(&table, &newest_per_key(&files)));
    })
    .await;
    let rules = alert_rules(&p);
    assert_eq!(
        rules,
        vec![
            vec![],
            vec![],
            vec![],
            vec!["spike".to_string()],
            vec![],
            vec!["empty_runs".to_string()]
        ]
    );

    // Old data and an SLA no run can meet: lag and sla fire on the first run.
    let old = Pipeline::new(
        "alerts_lag",
        "",
        "[monitor]\nmax_lag = \"1h\"\nsla = \"1ms\"\n",
    );
    let q = queue("alerts_lag");
    with_worker(&q, async {
        write_orders(&old.source_file(0), &orders(1, 5, BASE_US)).unwrap();
        let s = run(&old.spec, &q).await.expect("run");
        assert_eq!(
            s.progress.alerts,
            vec!["lag".to_string(), "sla".to_string()]
        );
    })
    .await;
    // The alerting run carries the TidemarkAlert search attribute (the dev server registers it).
    let c = client::connect(&settings()).await.unwrap();
    let h = c.get_workflow_handle::<tidemark::workflows::IncrementalRun>(
        tidemark::workflows::run_workflow_id(&old.spec.name),
    );
    let d = h.describe(Default::default()).await.unwrap();
    let attrs = d.search_attributes();
    let alert: Option<Vec<String>> = attrs.get(&tidemark::workflows::workflow::ALERT_ATTRIBUTE);
    assert_eq!(alert, Some(vec!["lag".to_string(), "sla".to_string()]));

    // `status` reports the active alerts and exits 3.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--json", "--address", &server_address()])
        .arg(&old.spec.spec_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["lag", "sla"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_watched_through_its_query_while_it_is_in_stage() {
    // A long step is a regular activity (big batches' are): the query answers while it runs.
    // (A local step runs inside the workflow task, which answers queries when it completes.)
    let p = Pipeline::new(
        "query_stage",
        "",
        "[execution]\nlocal_activities = \"off\"\n",
    );
    write_orders(&p.source_file(0), &orders(1, 50, BASE_US)).unwrap();
    let q = queue("query_stage");
    // A real worker process that lingers 4 s inside stage (after the batch's first copy).
    let workers = CrashingWorkers::start(&q, "", &[("TIDEMARK_DELAY", "mid_stage=4000".into())]);
    let c = client::connect(&settings()).await.unwrap();
    let handle = client::start_run(&c, &p.spec, &q).await.unwrap();
    let mut seen = None;
    for _ in 0..100 {
        if let Some(live) = client::query_progress(&c, &p.spec.name).await.unwrap()
            && let Some(progress) = live.progress
            && progress.phase == Phase::Stage
        {
            seen = Some(progress);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let progress = seen.expect("the query saw the run in stage");
    assert_eq!(progress.run_seq, Some(1));
    assert_eq!(progress.rows_batch, 50);
    assert_eq!(
        progress.activities.len(),
        1,
        "process finished, stage not yet"
    );
    let summary = client::wait_run(&handle, Duration::from_secs(30), || {})
        .await
        .expect("run succeeds");
    assert_eq!(summary.progress.phase, Phase::Succeeded);
    workers.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_makes_the_next_run_reprocess_everything_once() {
    let p = Pipeline::new("reset", "lookback = \"0s\"", "");
    let q = queue("reset");
    let first = orders(1, 20, BASE_US);
    let second = orders(100, 10, BASE_US + 60 * MINUTE);
    with_worker(&q, async {
        write_orders(&p.source_file(0), &first).unwrap();
        run(&p.spec, &q).await.expect("run 1");
        write_orders(&p.source_file(1), &second).unwrap();
        run(&p.spec, &q).await.expect("run 2");
        let again = run(&p.spec, &q).await.expect("run 3");
        // Only the row tied at the watermark is re-read (the window's bound is inclusive).
        assert_eq!(
            again.progress.rows_extracted, 1,
            "nothing new without a reset"
        );

        // Forwards is refused; a dry plan changes nothing.
        let ahead = reset::plan(&p.spec, &ResetTo::Value("2030-01-01".into()), false).await;
        assert!(
            ahead
                .unwrap_err()
                .to_string()
                .contains("only moves it backwards")
        );
        let plan = reset::plan(&p.spec, &ResetTo::Epoch, false).await.unwrap();
        assert_eq!(plan.run_seq, 3);
        assert!(plan.watermark_before.is_some() && plan.watermark_after.is_none());
        reset::apply(&p.spec, &plan).await.unwrap();
        assert_eq!(p.watermark(), None);

        let s = run(&p.spec, &q).await.expect("run after reset");
        assert_eq!(s.progress.run_seq, Some(4), "run numbering goes on");
        assert_eq!(s.progress.rows_extracted, 30, "every source row read once");
        assert_eq!(s.progress.rows_batch, 30);
        let table = read_orders_table(&p.spec.target.path).await.unwrap();
        assert!(table_matches(
            &table,
            &newest_per_key(&[first.clone(), second.clone()])
        ));
        let after = run(&p.spec, &q).await.expect("next run");
        assert_eq!(
            after.progress.rows_extracted, 1,
            "the reset reprocessed once"
        );

        // Partial: back to the second file's start, with the target emptied first.
        let plan = reset::plan(
            &p.spec,
            &ResetTo::Value("2026-01-01T01:00:00Z".into()),
            true,
        )
        .await
        .unwrap();
        reset::apply(&p.spec, &plan).await.unwrap();
        assert!(
            read_orders_table(&p.spec.target.path)
                .await
                .unwrap()
                .is_empty()
        );
        let s = run(&p.spec, &q).await.expect("run after partial reset");
        assert_eq!(s.progress.rows_extracted, 10);
        let table = read_orders_table(&p.spec.target.path).await.unwrap();
        assert!(table_matches(
            &table,
            &newest_per_key(std::slice::from_ref(&second))
        ));
    })
    .await;
    let statuses: Vec<String> = p
        .state()
        .read_ledger()
        .unwrap()
        .into_iter()
        .map(|e| e.status)
        .collect();
    // The reprocessing run read all 30 rows and merged them; the table already held exactly
    // those versions, so Delta wrote no commit and the run counts as empty.
    assert_eq!(
        statuses,
        [
            "succeeded",
            "succeeded",
            "empty",
            "reset",
            "empty",
            "empty",
            "reset",
            "succeeded"
        ]
    );

    // The CLI: --dry-run prints the plan as JSON and changes nothing; history lists the resets.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "reset",
            "--epoch",
            "--dry-run",
            "--json",
            "--address",
            &server_address(),
        ])
        .arg(&p.spec.spec_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["applied"], false);
    assert_eq!(v["plan"]["watermark_after"], serde_json::Value::Null);
    assert!(p.watermark().is_some(), "a dry run changes nothing");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["history", "--json"])
        .arg(&p.spec.spec_path)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("\"reset\"")).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_runs_and_pauses() {
    let p = Pipeline::new("scheduled", "", "[schedule]\nevery = \"2s\"\n");
    write_orders(&p.source_file(0), &orders(1, 5, BASE_US)).unwrap();
    let q = queue("scheduled");
    let c = client::connect(&settings()).await.unwrap();
    with_worker(&q, async {
        let applied = tidemark::schedule::create_or_update(&c, &p.spec, &q)
            .await
            .unwrap();
        assert_eq!(applied.action, "created");
        assert!(!applied.paused);
        // Runs fire; the first loads the file.
        let mut runs = 0;
        for _ in 0..100 {
            runs = p.state().read_ledger().unwrap().len();
            if runs >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(runs >= 2, "the schedule started runs ({runs})");
        let table = read_orders_table(&p.spec.target.path).await.unwrap();
        assert_eq!(table.len(), 5);
        // A scheduled run is the pipeline's IncrementalRun, under its usual id.
        let live = client::query_progress(&c, &p.spec.name).await.unwrap();
        assert!(live.is_some(), "status finds the scheduled run");

        tidemark::schedule::pause(&c, &p.spec.name, Some("test".into()))
            .await
            .unwrap();
        let described = tidemark::schedule::describe(&c, &p.spec.name)
            .await
            .unwrap();
        assert!(described.paused);
        assert_eq!(described.note.as_deref(), Some("test"));
        // Let a run that was already going finish, then nothing more starts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = p.state().read_ledger().unwrap().len();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = p.state().read_ledger().unwrap().len();
        assert_eq!(before, after, "a paused schedule starts no run");

        // Re-applying the spec keeps the operator's pause.
        let applied = tidemark::schedule::create_or_update(&c, &p.spec, &q)
            .await
            .unwrap();
        assert_eq!((applied.action, applied.paused), ("updated", true));
        tidemark::schedule::delete(&c, &p.spec.name).await.unwrap();
        assert!(
            tidemark::schedule::describe(&c, &p.spec.name)
                .await
                .is_err()
        );
    })
    .await;
    let entries = p.state().read_ledger().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.status == "succeeded" || e.status == "empty")
    );
    assert_eq!(
        entries.iter().filter(|e| e.status == "succeeded").count(),
        1
    );
}

/// `GET /metrics` over a plain TCP connection.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_serves_run_metrics_for_prometheus() {
    let p = Pipeline::new("metrics", "", "");
    write_orders(&p.source_file(0), &orders(1, 12, BASE_US)).unwrap();
    let q = queue("metrics");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(["worker", "--address", &server_address(), "--task-queue", &q])
        .args(["--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut worker = tidemark::devserver::tie_to_parent(&mut cmd)
        .spawn()
        .unwrap();
    let c = client::connect(&settings()).await.unwrap();
    let handle = client::start_run(&c, &p.spec, &q).await.unwrap();
    client::wait_run(&handle, Duration::from_secs(30), || {})
        .await
        .expect("run succeeds");
    let body = scrape(&addr);
    let _ = worker.kill();
    let _ = worker.wait();
    let line = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains("pipeline=\"metrics\""))
            .unwrap_or_else(|| panic!("no {name} for the pipeline in:\n{body}"))
            .to_string()
    };
    assert!(line("tidemark_runs_total").contains("status=\"succeeded\""));
    assert!(line("tidemark_batch_rows").ends_with(" 12"));
    assert!(line("tidemark_rows_promoted_total").ends_with(" 12"));
    assert!(line("tidemark_watermark_lag_seconds").contains('}'));
    assert!(line("tidemark_alert").contains("rule="));
    assert!(
        body.contains("temporal_"),
        "the SDK's own metrics are served too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_ten_windows_with_one_failing_once_loads_each_window_once() {
    const DAY: i64 = 24 * 60 * MINUTE;
    // The live pipeline starts at day 10; days 0–9 exist in the source and are backfilled.
    let p = Pipeline::new(
        "backfill",
        "lookback = \"0s\"\ninitial = \"2026-01-11T00:00:00Z\"",
        "",
    );
    let mut days = Vec::new();
    for d in 0..13 {
        let day = orders(d * 100, 3, BASE_US + d * DAY + 60 * MINUTE);
        write_orders(&p.source_file(d as usize), &day).unwrap();
        days.push(day);
    }
    let live_q = queue("backfill_live");
    with_worker(&live_q, async {
        let s = run(&p.spec, &live_q).await.expect("live run");
        assert_eq!(s.progress.rows_extracted, 9, "days 10-12 only");
    })
    .await;
    let live_watermark = p.watermark();
    let live_version = p.table_version().await;

    // Real worker processes; the first promote anywhere fails its whole window run.
    let q = queue("backfill");
    let workers = CrashingWorkers::start(&q, "fail promote 1\n", &[]);
    let c = client::connect(&settings()).await.unwrap();
    let spec_type = tidemark::workflows::cursor::CursorType::Timestamp;
    let windows = tidemark::backfill::windows(spec_type, "2026-01-01", "2026-01-11", "1d").unwrap();
    assert_eq!(windows.len(), 10);
    let input = tidemark::workflows::payloads::BackfillInput {
        spec: p.spec.clone(),
        windows: windows.clone(),
        parallel: 3,
        options: tidemark::workflows::payloads::RunOptions {
            heartbeat_timeout_ms: Some(2_000),
            ..Default::default()
        },
    };
    let (handle, attached) = client::start_backfill(&c, input.clone(), &q, false)
        .await
        .unwrap();
    assert!(!attached);
    let result = handle
        .get_result(Default::default())
        .await
        .expect("backfill finishes");
    assert_eq!(workers.fired("fail-promote"), 1, "the failure was injected");
    assert_eq!((result.done, result.retried), (10, 1), "{result:?}");
    assert!(result.failed.is_empty());
    assert_eq!(result.rows_promoted, 30);

    // Every window once: ten commits, ten ledger lines, the table holds every day.
    assert_eq!(p.table_version().await, live_version.map(|v| v + 10));
    assert_eq!(
        p.watermark(),
        live_watermark,
        "the live watermark did not move"
    );
    let entries = p.state().read_ledger().unwrap();
    let mut notes: Vec<String> = entries
        .iter()
        .filter(|e| e.status == "backfill")
        .filter_map(|e| e.note.clone())
        .collect();
    notes.sort();
    notes.dedup();
    assert_eq!(notes.len(), 10);
    assert_eq!(
        entries.iter().filter(|e| e.status == "backfill").count(),
        10
    );
    let table = read_orders_table(&p.spec.target.path).await.unwrap();
    assert!(table_matches(&table, &newest_per_key(&days)));

    // The same command again, from the CLI, finds every window loaded and writes nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "backfill",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-11",
            "--step",
            "1d",
        ])
        .args(["--json", "--address", &server_address(), "--task-queue", &q])
        .arg(&p.spec.spec_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (again["already_covered"].as_u64(), again["done"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(p.table_version().await, live_version.map(|v| v + 10));
    workers.stop();

    // status reports the backfill's coverage without gaps.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["status", "--json", "--address", &server_address()])
        .arg(&p.spec.spec_path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backfills"][0]["windows"], 10, "{v}");
    assert_eq!(v["backfills"][0]["covered"], 10);
    assert_eq!(v["backfills"][0]["gaps"].as_array().map(Vec::len), Some(0));
}
