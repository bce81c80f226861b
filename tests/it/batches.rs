//! Runs bigger than a batch: the budget (`[source] max_batch_rows`) cuts the window at a
//! cursor value, and one run commits batch after batch (each its own run_seq, commit, ledger
//! line and watermark), continuing as a new execution when asked, stopping at
//! `[execution] max_batches`; a cursor value bigger than the budget is read whole and named.

use crate::harness::{Pipeline, queue, run, server_address, settings, tidemark_cli, with_worker};
use std::time::Duration;
use tidemark::client;
use tidemark::demo::{
    BASE_US, Order, newest_per_key, read_orders_table, table_matches, write_orders,
};
use tidemark::workflows::payloads::{RunOptions, RunSummary};

const MINUTE: i64 = 60_000_000;

fn at(minute: i64) -> i64 {
    BASE_US + minute * MINUTE
}

/// A run started with `batches_per_execution`, awaited.
async fn run_continuing(p: &Pipeline, q: &str, per_execution: u32) -> RunSummary {
    let c = client::connect(&settings()).await.unwrap();
    let start = client::StartOptions {
        run: RunOptions {
            batches_per_execution: Some(per_execution),
            ..Default::default()
        },
        ..Default::default()
    };
    let handle = client::start_run_with(&c, &p.spec, q, start).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        client::wait_run(&handle, Duration::from_secs(30), || {}),
    )
    .await
    .expect("run ends")
    .expect("run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_bigger_than_a_batch_is_committed_batch_after_batch() {
    let p = Pipeline::new("batches", "max_batch_rows = 4", "");
    // Four rows tie at minute 3 (never split); order 1 is updated later.
    let f0: Vec<Order> = (1..=6).map(|i| Order::new(i, "new", at(i))).collect();
    let f1 = vec![
        Order::new(7, "new", at(3)),
        Order::new(8, "new", at(3)),
        Order::new(9, "new", at(3)),
        Order::new(1, "paid", at(10)),
        Order::new(10, "new", at(12)),
    ];
    write_orders(&p.source_file(0), &f0).unwrap();
    write_orders(&p.source_file(1), &f1).unwrap();
    let q = queue("batches");
    let (spec_path, address, q2) = (p.spec.spec_path.clone(), server_address(), q.clone());
    let out = with_worker(&q, async move {
        tokio::task::spawn_blocking(move || {
            let args = ["run", &spec_path, "--json", "--task-queue", &q2];
            tidemark_cli(&[&args[..], &["--address", &address]].concat(), &[], &[])
        })
        .await
        .expect("tidemark runs")
    })
    .await;
    assert!(out.success, "{}", out.text());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let batches = v["batches"].as_array().expect("batches listed");
    // The cuts: minute 2 (the four rows at minute 3 would overflow 4), minute 3 (the ties,
    // with the re-read row at the watermark), minute 10, then the rest.
    let highs: Vec<&str> = batches
        .iter()
        .map(|b| b["window_high"].as_str().unwrap())
        .collect();
    assert_eq!(
        highs,
        [
            "2026-01-01T00:02:00Z",
            "2026-01-01T00:03:00Z",
            "2026-01-01T00:10:00Z",
            "2026-01-01T00:12:00Z"
        ],
        "{v}"
    );
    let rows: Vec<u64> = batches
        .iter()
        .map(|b| b["rows_batch"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [2, 4, 4, 1], "no batch over the budget: {v}");
    let seqs: Vec<u64> = batches
        .iter()
        .map(|b| b["run_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "each batch its own run_seq");
    let versions: Vec<u64> = batches
        .iter()
        .map(|b| b["target_version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "each batch its own commit: {versions:?}"
    );
    // Each batch lists its own steps; the run's `activities` are their sums.
    let step_ms = |list: &serde_json::Value, name: &str| -> Option<u64> {
        list.as_array()?
            .iter()
            .find(|a| a["activity"] == name)
            .and_then(|a| a["elapsed_ms"].as_u64())
    };
    for name in ["process", "stage", "promote", "update_watermark"] {
        let per_batch: Vec<Option<u64>> = batches
            .iter()
            .map(|b| step_ms(&b["activities"], name))
            .collect();
        assert!(
            per_batch.iter().all(Option::is_some),
            "{name} in every batch: {v}"
        );
        assert_eq!(
            step_ms(&v["activities"], name),
            Some(per_batch.iter().flatten().sum()),
            "the run's {name} time is its batches' sum: {v}"
        );
    }
    assert_eq!(v["batch_count"], 4);
    assert_eq!(v["run_seq"], 4);
    assert_eq!(v["rows_promoted"], 11, "the run's rows, summed: {v}");
    assert_eq!(v["watermark_before"], serde_json::Value::Null);
    assert_eq!(v["watermark_after"], "2026-01-01T00:12:00Z");
    assert_eq!(v["window_low"], serde_json::Value::Null);

    let table = read_orders_table(&p.spec.target.path).await.unwrap();
    assert!(table_matches(&table, &newest_per_key(&[f0, f1])));
    assert_eq!(table[&1].1, "paid");
    assert_eq!(p.watermark(), Some(at(12)));
    let ledger = p.state().read_ledger().unwrap();
    let lines: Vec<Option<u64>> = ledger.iter().map(|e| e.run_seq).collect();
    assert_eq!(
        lines,
        [Some(1), Some(2), Some(3), Some(4)],
        "a ledger line per batch"
    );
    assert!(ledger.iter().all(|e| e.status == "succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_value_bigger_than_the_budget_is_read_whole_and_named() {
    let p = Pipeline::new("oversized", "max_batch_rows = 2", "");
    let mut f0: Vec<Order> = (1..=5).map(|i| Order::new(i, "new", at(1))).collect();
    f0.push(Order::new(6, "new", at(2)));
    write_orders(&p.source_file(0), &f0).unwrap();
    let q = queue("oversized");
    let s = with_worker(&q, run(&p.spec, &q))
        .await
        .expect("run succeeds");
    let pr = &s.progress;
    assert_eq!(
        pr.oversized_value.as_deref(),
        Some("2026-01-01T00:01:00Z"),
        "{pr:?}"
    );
    let rows: Vec<u64> = pr.batches.iter().map(|b| b.rows_batch).collect();
    assert_eq!(rows, [5, 1], "the five tied rows in one batch: {pr:?}");
    assert_eq!(pr.rows_promoted, 6);
    let table = read_orders_table(&p.spec.target.path).await.unwrap();
    assert!(table_matches(&table, &newest_per_key(&[f0])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batches_caps_a_run_and_continue_as_new_keeps_its_batches() {
    let p = Pipeline::new(
        "capped",
        "max_batch_rows = 1",
        "[execution]\nmax_batches = 3",
    );
    let orders: Vec<Order> = (1..=5).map(|i| Order::new(i, "new", at(i))).collect();
    write_orders(&p.source_file(0), &orders).unwrap();
    let q = queue("capped");
    let (first, second) = with_worker(&q, async {
        // One batch per execution: the run continues as new after each.
        let first = run_continuing(&p, &q, 1).await;
        let after_first = p.watermark();
        let second = run_continuing(&p, &q, 1).await;
        assert_eq!(
            after_first,
            Some(at(3)),
            "the capped run stored its last batch"
        );
        (first, second)
    })
    .await;
    let seqs = |s: &RunSummary| {
        s.progress
            .batches
            .iter()
            .map(|b| b.run_seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&first), [1, 2, 3], "batches carried across executions");
    assert!(first.progress.batches_capped, "{:?}", first.progress);
    assert_eq!(first.progress.rows_promoted, 3);
    // The next run goes on from there (re-reading the row at the watermark, skipped).
    assert_eq!(seqs(&second), [4, 5]);
    assert!(!second.progress.batches_capped);
    assert_eq!(second.progress.rows_promoted, 2);
    let table = read_orders_table(&p.spec.target.path).await.unwrap();
    assert!(table_matches(&table, &newest_per_key(&[orders])));
    assert_eq!(p.watermark(), Some(at(5)));
    // The first run's executions: one per batch, chained by continue-as-new (one workflow
    // id, a run id each).
    let ledger = p.state().read_ledger().unwrap();
    let first_three = &ledger[..3];
    assert!(
        first_three
            .iter()
            .all(|e| e.workflow_id == ledger[0].workflow_id)
    );
    let ids: std::collections::BTreeSet<&str> =
        first_three.iter().map(|e| e.run_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{first_three:?}");
}
