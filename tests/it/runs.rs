//! Whole runs through Temporal: rounds against the oracle, ties at the watermark, late older
//! versions, append mode's boundary set, empty runs, and the CLI's JSON summary.

use crate::harness::{Pipeline, no_leftovers, queue, run, server_address, with_worker};
use tidemark::demo::{
    BASE_US, Order, demo_files, newest_per_key, read_orders_table, table_matches, write_orders,
};

const HOUR: i64 = 3_600_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rounds_match_the_newest_version_per_key() {
    let p = Pipeline::new("three_rounds", "lookback = \"2h\"", "");
    let q = queue("three");
    with_worker(&q, async {
        let files = demo_files();
        let mut seen = Vec::new();
        for (i, (_, orders)) in files.iter().enumerate() {
            write_orders(&p.source_file(i), orders).unwrap();
            seen.push(orders.clone());
            let s = run(&p.spec, &q).await.expect("round succeeds");
            assert_eq!(s.progress.run_seq, Some(i as u64 + 1));
            let attempts: Vec<u32> = s.progress.activities.iter().map(|a| a.attempt).collect();
            assert_eq!(
                attempts,
                vec![1, 1, 1, 1],
                "four activities, first attempts"
            );
            if i == 2 {
                // Round 3's window starts above everything in the first file: its footer
                // statistics exclude it, so it is never opened for data.
                assert_eq!((s.progress.files_total, s.progress.files_skipped), (3, 1));
            }
            let model = newest_per_key(&seen);
            let table = read_orders_table(&p.spec.target.path).await.unwrap();
            assert!(
                table_matches(&table, &model),
                "round {}: table differs from the model",
                i + 1
            );
            let high = seen.iter().flatten().map(|o| o.updated_at_us).max();
            assert_eq!(p.watermark(), high, "watermark is the committed high mark");
        }
        // The late, older version of order 50 (status "stale") did not overwrite "paid".
        let table = read_orders_table(&p.spec.target.path).await.unwrap();
        assert_eq!(table[&50].1, "paid");
        // Rows tied at the watermark in a later file were loaded.
        for k in 801..=805 {
            assert!(table.contains_key(&k), "boundary row {k} lost");
        }
        let runs = p.state().read_ledger().unwrap();
        assert_eq!(runs.iter().filter(|r| r.status == "succeeded").count(), 3);
        assert!(
            no_leftovers(p.dir.path()),
            "staging or temp files left behind"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_tied_at_the_watermark_in_a_later_file_are_not_lost() {
    let p = Pipeline::new("ties", "", "");
    let q = queue("ties");
    let t = BASE_US + 5 * HOUR;
    with_worker(&q, async {
        let f1 = vec![Order::new(1, "new", t - HOUR), Order::new(2, "new", t)];
        write_orders(&p.source_file(0), &f1).unwrap();
        run(&p.spec, &q).await.unwrap();
        // Same cursor value as the watermark, new key, later file: a strict `>` would skip it.
        let f2 = vec![Order::new(3, "new", t)];
        write_orders(&p.source_file(1), &f2).unwrap();
        let s = run(&p.spec, &q).await.unwrap();
        assert_eq!(s.progress.rows_promoted, 1);
        let table = read_orders_table(&p.spec.target.path).await.unwrap();
        assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(p.watermark(), Some(t));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_run_commits_nothing_and_keeps_the_watermark() {
    let p = Pipeline::new("empty", "", "");
    let q = queue("empty");
    with_worker(&q, async {
        write_orders(&p.source_file(0), &[Order::new(1, "new", BASE_US)]).unwrap();
        run(&p.spec, &q).await.unwrap();
        let v = p.table_version().await;
        let w = p.watermark();
        // The tied row is re-read (inclusive bound) but identical to the one loaded at the
        // watermark: it is skipped, so nothing is staged or promoted.
        let s = run(&p.spec, &q).await.expect("empty run succeeds");
        assert_eq!(s.progress.rows_promoted, 0);
        assert_eq!(p.table_version().await, v, "no target commit");
        assert_eq!(p.watermark(), w);
        let steps: Vec<&str> = s
            .progress
            .activities
            .iter()
            .map(|a| a.activity.as_str())
            .collect();
        assert_eq!(steps, ["process", "update_watermark"]);
        let runs = p.state().read_ledger().unwrap();
        assert_eq!(runs.last().unwrap().status, "empty");
        // The same key at the same cursor with other contents is not skipped: it wins.
        write_orders(&p.source_file(1), &[Order::new(1, "paid", BASE_US)]).unwrap();
        let s = run(&p.spec, &q).await.unwrap();
        assert_eq!(s.progress.rows_promoted, 1, "{:?}", s.progress);
        assert_eq!(p.watermark(), w);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_mode_skips_rows_already_loaded_at_the_watermark() {
    let p = Pipeline::new("append", "", "mode = \"append\"\nkey = [\"order_id\"]");
    let q = queue("append");
    let t = BASE_US + HOUR;
    with_worker(&q, async {
        write_orders(
            &p.source_file(0),
            &[Order::new(1, "new", t - HOUR), Order::new(2, "new", t)],
        )
        .unwrap();
        run(&p.spec, &q).await.unwrap();
        write_orders(
            &p.source_file(1),
            &[Order::new(3, "new", t), Order::new(4, "new", t + HOUR)],
        )
        .unwrap();
        let s = run(&p.spec, &q).await.unwrap();
        assert_eq!(
            s.progress.rows_batch, 2,
            "row 2 (at the watermark) was skipped, 3 and 4 loaded"
        );
        let table = read_orders_table(&p.spec.target.path)
            .await
            .expect("no duplicate key");
        assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_json_reports_the_summary_fields() {
    let p = Pipeline::new("cli_json", "", "");
    let q = queue("cli");
    write_orders(
        &p.source_file(0),
        &[
            Order::new(1, "new", BASE_US),
            Order::new(2, "new", BASE_US + 1),
        ],
    )
    .unwrap();
    let spec_path = p.spec.spec_path.clone();
    let address = server_address();
    let q2 = q.clone();
    let out = with_worker(&q, async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "run",
                &spec_path,
                "--json",
                "--task-queue",
                &q2,
                "--address",
                &address,
            ])
            .output()
            .await
            .expect("tidemark runs")
    })
    .await;
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["pipeline"], "cli_json");
    assert_eq!(v["run_seq"], 1);
    assert_eq!(v["rows_extracted"], 2);
    assert_eq!(v["rows_promoted"], 2);
    assert_eq!(v["watermark_after"], "2026-01-01T00:00:00.000001Z");
    // Version 0 creates the table, version 1 is the run's commit.
    assert_eq!(v["target_version"], 1);
    for field in ["workflow_id", "watermark_before", "duration_ms"] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_by_event_time_are_counted_and_quarantined() {
    let p = Pipeline::new(
        "late_quarantine",
        "event_time = \"order_date\"",
        "[late]\npolicy = \"quarantine\"\nquarantine_path = \"lake/orders_late\"",
    );
    let q = queue("late");
    let day = 86_400_000_000i64;
    with_worker(&q, async {
        let r1: Vec<Order> = (1..=3)
            .map(|i| Order::new(i, "new", BASE_US + 10 * day + i))
            .collect();
        write_orders(&p.source_file(0), &r1).unwrap();
        let s = run(&p.spec, &q).await.unwrap();
        assert_eq!(s.progress.rows_late, 0);
        // Order 5 arrives now (new cursor) but was created on day 5: late by event time.
        let on_time = Order::new(4, "new", BASE_US + 11 * day);
        let mut late = Order::new(5, "new", BASE_US + 11 * day + 1);
        late.order_date_days = (BASE_US / day) as i32 + 5;
        write_orders(&p.source_file(1), &[on_time, late]).unwrap();
        let s = run(&p.spec, &q).await.unwrap();
        assert_eq!(s.progress.rows_late, 1);
        assert_eq!(s.progress.rows_quarantined, 1);
        let main = read_orders_table(&p.spec.target.path).await.unwrap();
        assert_eq!(main.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let side = read_orders_table(p.spec.late.quarantine_path.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(side.keys().copied().collect::<Vec<_>>(), vec![5]);
        // A retry-free re-run re-reads nothing new and quarantines nothing again.
        let s = run(&p.spec, &q).await.unwrap();
        assert_eq!(s.progress.rows_quarantined, 0);
        assert!(no_leftovers(p.dir.path()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_keeps_the_greatest_cursor_and_breaks_ties_by_file_then_row() {
    let p = Pipeline::new("dedup_ties", "", "");
    let q = queue("dedup");
    let t = BASE_US + HOUR;
    let a = Order::new(1, "first-file", t);
    write_orders(
        &p.source_file(0),
        &[a.clone(), Order::new(2, "newest", t + 5)],
    )
    .unwrap();
    write_orders(
        &p.source_file(1),
        &[
            a.version("later-file", t),
            a.version("later-row", t),
            Order::new(2, "older", t),
        ],
    )
    .unwrap();
    let s = with_worker(&q, run(&p.spec, &q)).await.unwrap();
    assert_eq!(s.progress.rows_deduplicated, 3);
    let table = read_orders_table(&p.spec.target.path).await.unwrap();
    assert_eq!(table[&1].1, "later-row");
    assert_eq!(table[&2].1, "newest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_the_same_pipeline_is_refused_while_one_is_active() {
    let p = Pipeline::new("single_run", "", "");
    let q = queue("single");
    write_orders(&p.source_file(0), &[Order::new(1, "new", BASE_US)]).unwrap();
    let client = tidemark::client::connect(&crate::harness::settings())
        .await
        .unwrap();
    // No worker yet: the first run stays queued, so it is certainly active.
    let first = tidemark::client::start_run(&client, &p.spec, &q)
        .await
        .unwrap();
    let second = tidemark::client::start_run(&client, &p.spec, &q).await;
    let err = second
        .err()
        .expect("the second start is refused")
        .to_string();
    assert!(err.contains("already in progress"), "{err}");
    // Once a worker appears, the queued run completes normally.
    let summary = with_worker(
        &q,
        tidemark::client::wait_run(&first, std::time::Duration::from_secs(60), || {}),
    )
    .await
    .expect("the queued run succeeds");
    assert_eq!(summary.progress.rows_promoted, 1);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new("unreachable", "", "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .current_dir(dir.path())
        .args(["run", &p.spec.spec_path, "--address", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Temporal at") && err.contains("tidemark dev"),
        "{err}"
    );
}

fn write_events(path: &std::path::Path, seq: &[Option<i64>], kind: &[&str]) {
    use polars::prelude::*;
    let ids: Vec<i64> = seq
        .iter()
        .enumerate()
        .map(|(i, s)| s.unwrap_or(1000 + i as i64))
        .collect();
    let mut df = df!(
        "event_id" => ids,
        "seq" => seq.to_vec(),
        "kind" => kind.to_vec(),
        "order_date" => vec![20_000i32; seq.len()],
    )
    .unwrap();
    df.with_column(
        df.column("order_date")
            .unwrap()
            .cast(&DataType::Date)
            .unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_cursor_glob_transform_initial_and_excluded_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("events.toml");
    std::fs::write(
        &spec_path,
        r#"
name = "events"
[source]
kind = "parquet"
path = "in/events-*.parquet"
cursor = "seq"
lookback = 5
initial = 10
on_null_cursor = "exclude"
[transform]
sql = "SELECT * FROM batch WHERE kind <> 'test'"
[target]
kind = "delta"
path = "lake/events"
key = ["event_id"]
"#,
    )
    .unwrap();
    let spec = tidemark::spec::load(&spec_path).unwrap();
    let q = queue("events");
    let input = dir.path().join("in");
    // seq 5 is below `initial`; a null cursor is excluded; 'test' rows are filtered out.
    write_events(
        &input.join("events-001.parquet"),
        &[Some(5), Some(10), Some(20), None],
        &["a", "b", "test", "c"],
    );
    std::fs::write(input.join("ignored.txt"), b"not matched by the glob").unwrap();
    with_worker(&q, async {
        let s = run(&spec, &q).await.expect("first run");
        assert_eq!(
            s.progress.cursor_type,
            Some(tidemark::workflows::cursor::CursorType::Integer)
        );
        assert_eq!(s.progress.window_low, Some(10));
        assert_eq!(
            s.progress.rows_extracted, 2,
            "seq 10 and 20; seq 5 is below initial, the null is excluded"
        );
        assert_eq!(
            s.progress.rows_batch, 1,
            "the transform dropped the test row"
        );
        assert_eq!(s.progress.watermark_after, Some(20));
        // A late row inside the integer lookback (20 - 5 = 15) and one beyond it.
        write_events(
            &input.join("events-002.parquet"),
            &[Some(16), Some(14), Some(30)],
            &["late", "too-late", "new"],
        );
        let s = run(&spec, &q).await.expect("second run");
        assert_eq!(s.progress.window_low, Some(15));
        assert_eq!(s.progress.watermark_after, Some(30));
    })
    .await;
    let rows = tidemark::target::delta::read_all(&spec.target.path)
        .await
        .unwrap();
    let mut seqs: Vec<i64> = Vec::new();
    for b in &rows {
        let c = deltalake::arrow::compute::cast(
            b.column_by_name("seq").unwrap(),
            &deltalake::arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        let c = c
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap();
        seqs.extend(c.iter().flatten());
    }
    seqs.sort();
    assert_eq!(seqs, vec![10, 16, 30]);
}
