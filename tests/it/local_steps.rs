//! Local activities: which steps of a run execute inside the workflow task, decided per run
//! from recorded results, and what that saves the server (history events, workflow tasks).

use crate::harness::{Pipeline, queue, run, settings, with_worker};
use tidemark::demo::{BASE_US, Order, write_orders};
use tidemark::workflows::payloads::RunSummary;
use tidemark::workflows::run_workflow_id;

fn local_steps(s: &RunSummary) -> Vec<&str> {
    s.progress
        .activities
        .iter()
        .filter(|a| a.local)
        .map(|a| a.activity.as_str())
        .collect()
}

async fn shape(pipeline: &str) -> (u32, u32) {
    let client = tidemark::client::connect(&settings()).await.unwrap();
    tidemark::client::history_shape(&client, &run_workflow_id(pipeline))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_runs_run_their_steps_locally_and_big_ones_through_the_task_queue() {
    let q = queue("local_steps");
    let auto = Pipeline::new("local_auto", "", "");
    let capped = Pipeline::new("local_capped", "", "[execution]\nlocal_max_rows = 1\n");
    let off = Pipeline::new("local_off", "", "[execution]\nlocal_activities = \"off\"\n");
    // `[execution]` lands in the [target] table's text: check it parsed as its own table.
    assert_eq!(capped.spec.execution.local_max_rows, 1);
    for p in [&auto, &capped, &off] {
        write_orders(
            &p.source_file(0),
            &[
                Order::new(1, "new", BASE_US),
                Order::new(2, "new", BASE_US + 1),
            ],
        )
        .unwrap();
    }
    with_worker(&q, async {
        // First run: no watermark yet, so `process` (a first load may be big) is regular;
        // the 2-row batch is small, so the rest is local.
        let first = run(&auto.spec, &q).await.unwrap();
        assert_eq!(first.progress.rows_promoted, 2);
        assert_eq!(local_steps(&first), ["stage", "promote", "update_watermark"]);
        // Second run, moments later after a small one: every step local, one workflow task.
        write_orders(&auto.source_file(1), &[Order::new(3, "new", BASE_US + 2)]).unwrap();
        let second = run(&auto.spec, &q).await.unwrap();
        assert_eq!(second.progress.rows_promoted, 1);
        assert_eq!(
            local_steps(&second),
            ["process", "stage", "promote", "update_watermark"]
        );
        let (auto_events, auto_tasks) = shape("local_auto").await;
        assert_eq!(auto_tasks, 1, "one workflow task for the whole run");

        // local_max_rows = 1: a 2-row batch's stage and promote go through the task queue,
        // and the next run's process too (the previous run committed 2 rows).
        let c1 = run(&capped.spec, &q).await.unwrap();
        assert_eq!(local_steps(&c1), ["update_watermark"]);
        write_orders(&capped.source_file(1), &[Order::new(3, "new", BASE_US + 2)]).unwrap();
        let c2 = run(&capped.spec, &q).await.unwrap();
        assert_eq!(c2.progress.rows_promoted, 1);
        assert!(!local_steps(&c2).contains(&"process"), "{:?}", c2.progress.activities);
        assert!(local_steps(&c2).contains(&"update_watermark"));

        // "off": every step regular, as before local activities.
        run(&off.spec, &q).await.unwrap();
        write_orders(&off.source_file(1), &[Order::new(3, "new", BASE_US + 2)]).unwrap();
        let o2 = run(&off.spec, &q).await.unwrap();
        assert!(local_steps(&o2).is_empty(), "{:?}", o2.progress.activities);
        let (off_events, off_tasks) = shape("local_off").await;
        assert_eq!(off_tasks, 5, "start, then one per activity");
        assert!(
            auto_events * 2 <= off_events,
            "the local run's history ({auto_events} events) is at most half the regular one's ({off_events})"
        );
        // Every table holds the source's three orders.
        for p in [&auto, &capped, &off] {
            assert_eq!(p.watermark(), Some(BASE_US + 2), "{}", p.spec.name);
        }
    })
    .await;
}

/// A step that fails inside the workflow task fails the run the same way: non-retryable
/// errors on the first attempt, recorded in the ledger by a local `record_failure`, target
/// and watermark unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_step_that_fails_fails_the_run_and_keeps_the_watermark() {
    let q = queue("local_fail");
    let p = Pipeline::new("local_fail", "", "");
    write_orders(&p.source_file(0), &[Order::new(1, "new", BASE_US)]).unwrap();
    with_worker(&q, async {
        run(&p.spec, &q).await.unwrap();
        let version = p.table_version().await;
        // The next run's process is local (small, recent): a corrupt file fails it.
        std::fs::write(p.source_file(1), b"not parquet").unwrap();
        let started = std::time::Instant::now();
        let err = run(&p.spec, &q).await.unwrap_err();
        assert!(err.contains("part-00001.parquet"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "non-retryable: no retries with backoff"
        );
        assert_eq!(p.watermark(), Some(BASE_US));
        assert_eq!(p.table_version().await, version);
        let ledger = p.state().read_ledger().unwrap();
        let last = ledger.last().unwrap();
        assert_eq!(last.status, "failed", "{last:?}");
    })
    .await;
}

/// `tidemark ping --json` on `queue`, from a blocking thread (the worker of the test runs on
/// the test's own task).
async fn ping_cli(queue: &str) -> crate::harness::CliRun {
    let (address, queue) = (crate::harness::server_address(), queue.to_string());
    tokio::task::spawn_blocking(move || {
        let args = [
            "ping",
            "--activities",
            "2",
            "--timeout",
            "3",
            "--json",
            "--address",
            &address,
            "--task-queue",
            &queue,
        ];
        crate::harness::tidemark_cli(&args, &[], &[])
    })
    .await
    .unwrap()
}

/// `tidemark ping`: with a worker on the queue it runs its no-op activities and exits 0;
/// without one it gives up after --timeout, exits 1 and names the queue and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_through_a_worker_and_names_the_queue_without_one() {
    let q = queue("ping");
    let out = with_worker(&q, ping_cli(&q)).await;
    assert!(out.success, "{}", out.text());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["activities"], 2);
    let client = tidemark::client::connect(&settings()).await.unwrap();
    let id = v["workflow_id"].as_str().unwrap();
    let (_, tasks) = tidemark::client::history_shape(&client, id).await.unwrap();
    assert_eq!(tasks, 3, "start, then one per activity");

    let nobody = format!("{q}-nobody");
    let out = ping_cli(&nobody).await;
    assert!(!out.success);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["status"], "failed");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains(&nobody) && err.contains("tidemark worker"),
        "{err}"
    );
}
