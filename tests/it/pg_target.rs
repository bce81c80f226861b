//! The PostgreSQL target against a real server (started by the test harness): incremental
//! rounds through Temporal for merge, delete_insert and append against an oracle; a real
//! worker process crashing at each boundary of stage and promote, then retried; a schema
//! mismatch; an unreachable server.

use crate::harness::{CrashingWorkers, pg_client, pg_url, queue, run, run_fast_retry, with_worker};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tidemark::demo::{BASE_US, Order, newest_per_key, write_orders};
use tidemark::workflows::spec::PipelineSpec;

const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;

/// A pipeline from Parquet files into PostgreSQL table `<schema>.orders`.
struct PgPipe {
    _dir: tempfile::TempDir,
    spec: PipelineSpec,
    schema: String,
    files: Vec<Vec<Order>>,
}

impl PgPipe {
    /// `source` and `target` are extra lines for [source] and [target].
    fn new(name: &str, source: &str, target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let schema = format!("it_{}_{}", name.replace('-', "_"), std::process::id());
        let conn = if target.contains("url_env") {
            String::new()
        } else {
            format!("url = \"{}\"\n", pg_url())
        };
        let text = format!(
            "name = \"{name}\"\n[source]\nkind = \"parquet\"\npath = \"data\"\n{source}\n\
             [target]\nkind = \"postgres\"\n{conn}table = \"{schema}.orders\"\n{target}\n"
        );
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).expect("write spec");
        let spec = tidemark::spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        PgPipe {
            _dir: dir,
            spec,
            schema,
            files: Vec::new(),
        }
    }

    fn add_file(&mut self, orders: Vec<Order>) {
        let path = PathBuf::from(&self.spec.source.path)
            .join(format!("part-{:05}.parquet", self.files.len()));
        write_orders(&path, &orders).expect("write source file");
        self.files.push(orders);
    }

    fn model(&self) -> BTreeMap<i64, (i64, String)> {
        newest_per_key(&self.files)
            .into_iter()
            .map(|(k, o)| (k, (o.updated_at_us, o.status)))
            .collect()
    }

    /// `order_id -> (updated_at µs, status)`, failing on a duplicate key.
    async fn table(&self) -> BTreeMap<i64, (i64, String)> {
        let c = pg_client().await;
        let rows = c
            .query(
                &format!(
                    "SELECT order_id, (extract(epoch FROM updated_at) * 1000000)::bigint, status FROM {}.orders",
                    self.schema
                ),
                &[],
            )
            .await
            .expect("read the target table");
        let mut out = BTreeMap::new();
        for r in rows {
            let id: i64 = r.get(0);
            assert!(
                out.insert(id, (r.get(1), r.get(2))).is_none(),
                "duplicate key {id}"
            );
        }
        out
    }

    /// Rows of the ledger table for this pipeline: (run_seq, watermark document).
    async fn ledger(&self) -> Vec<(i64, String)> {
        let c = pg_client().await;
        c.query(
            &format!(
                "SELECT run_seq, watermark FROM {}.tidemark_runs WHERE pipeline = $1 ORDER BY run_seq",
                self.schema
            ),
            &[&self.spec.name],
        )
        .await
        .expect("read tidemark_runs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    async fn staging_tables(&self) -> i64 {
        let c = pg_client().await;
        c.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'tidemark_stage_%'",
            &[&self.schema],
        )
        .await
        .unwrap()
        .get(0)
    }

    fn stored_watermark(&self) -> Option<tidemark::state::watermark::Watermark> {
        tidemark::state::open(&self.spec)
            .unwrap()
            .read_watermark()
            .unwrap()
    }
}

fn orders(ids: std::ops::Range<i64>, status: &str, at: i64) -> Vec<Order> {
    ids.map(|i| Order::new(i, status, at + i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_rounds_through_temporal_keep_the_newest_version_per_key() {
    let mut p = PgPipe::new(
        "pg-merge",
        "cursor = \"updated_at\"\nlookback = \"1h\"",
        "mode = \"merge\"\nkey = [\"order_id\"]",
    );
    let q = queue("pg-merge");
    p.add_file(orders(1..21, "new", BASE_US));
    let r1 = with_worker(&q, run(&p.spec, &q)).await.expect("round 1");
    assert_eq!(r1.progress.run_seq, Some(1));
    assert_eq!(p.table().await, p.model());

    // Round 2: updates, new orders, and a late *older* version of order 3 that must lose.
    let first = p.files[0].clone();
    let mut round2 = vec![
        first[4].version("paid", BASE_US + 2 * HOUR_US),
        first[5].version("paid", BASE_US + 2 * HOUR_US + 1),
    ];
    round2.extend(orders(21..31, "new", BASE_US + 2 * HOUR_US));
    p.add_file(round2);
    p.add_file(vec![first[2].version("stale", BASE_US - DAY_US)]);
    let r2 = with_worker(&q, run(&p.spec, &q)).await.expect("round 2");
    assert_eq!(r2.progress.run_seq, Some(2));
    let table = p.table().await;
    assert_eq!(table, p.model());
    assert_eq!(
        table[&3].1, "new",
        "the older version did not overwrite the newer"
    );

    // Round 3: rows tied at the watermark value, re-read through the lookback: no change.
    let wm = p.stored_watermark().unwrap().value.unwrap();
    p.add_file(vec![Order::new(40, "new", wm)]);
    let r3 = with_worker(&q, run(&p.spec, &q)).await.expect("round 3");
    assert_eq!(r3.progress.run_seq, Some(3));
    assert_eq!(p.table().await, p.model());

    let ledger = p.ledger().await;
    assert_eq!(
        ledger.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let stored = p.stored_watermark().unwrap();
    let in_pg = tidemark::state::watermark::Watermark::from_json(&ledger[2].1).unwrap();
    assert_eq!(
        stored.value, in_pg.value,
        "the file store agrees with PostgreSQL"
    );
    let c = pg_client().await;
    let wm_row: i64 = c
        .query_one(
            &format!(
                "SELECT run_seq FROM {}.tidemark_watermarks WHERE pipeline = $1",
                p.schema
            ),
            &[&p.spec.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wm_row, 3);
    assert_eq!(p.staging_tables().await, 0, "staging tables dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_insert_replaces_the_batch_range_and_append_adds_rows_once() {
    // delete_insert over daily data: each run replaces the days it re-reads.
    let mut p = PgPipe::new(
        "pg-delins",
        "cursor = \"order_date\"\nlookback = \"1d\"",
        "mode = \"delete_insert\"\nrange_column = \"order_date\"\nkey = [\"order_id\"]",
    );
    let q = queue("pg-delins");
    let day = |d: i64, ids: std::ops::Range<i64>| -> Vec<Order> {
        ids.map(|i| Order::new(i, "new", BASE_US + d * DAY_US + i))
            .collect()
    };
    p.add_file([day(0, 1..5), day(1, 10..15)].concat());
    with_worker(&q, run(&p.spec, &q)).await.expect("round 1");
    assert_eq!(p.table().await, p.model());
    p.add_file([day(1, 15..18), day(2, 20..22)].concat());
    with_worker(&q, run(&p.spec, &q)).await.expect("round 2");
    assert_eq!(
        p.table().await,
        p.model(),
        "day 1 replaced whole, day 2 added"
    );
    p.add_file(day(3, 30..33));
    with_worker(&q, run(&p.spec, &q)).await.expect("round 3");
    assert_eq!(p.table().await, p.model());

    // append: every row once, even when a run is repeated.
    let mut a = PgPipe::new(
        "pg-append",
        "cursor = \"updated_at\"",
        "mode = \"append\"\nkey = [\"order_id\"]",
    );
    let qa = queue("pg-append");
    a.add_file(orders(1..11, "new", BASE_US));
    with_worker(&qa, run(&a.spec, &qa)).await.expect("append 1");
    a.add_file(orders(11..16, "new", BASE_US + HOUR_US));
    with_worker(&qa, run(&a.spec, &qa)).await.expect("append 2");
    with_worker(&qa, run(&a.spec, &qa))
        .await
        .expect("append 3 (nothing new)");
    assert_eq!(a.table().await, a.model());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crashing_at_each_boundary_of_stage_and_promote_is_retried_to_the_oracle() {
    for (i, point) in [
        "mid_stage",
        "after_stage",
        "promote_before_commit",
        "promote_after_commit",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("pg-crash-{i}");
        let mut p = PgPipe::new(
            &name,
            "cursor = \"updated_at\"\nlookback = \"1h\"",
            "mode = \"merge\"\nkey = [\"order_id\"]\nurl_env = \"TIDEMARK_IT_PG_URL\"",
        );
        let q = queue(&name);
        let workers = CrashingWorkers::start(
            &q,
            &format!("{point} 2\n"),
            &[("TIDEMARK_IT_PG_URL", pg_url())],
        );
        p.add_file(orders(1..31, "new", BASE_US));
        let r1 = run_fast_retry(&p.spec, &q)
            .await
            .unwrap_or_else(|e| panic!("{point}: {e}"));
        p.add_file(
            p.files[0][..10]
                .iter()
                .map(|o| o.version("paid", BASE_US + HOUR_US + o.order_id))
                .collect(),
        );
        let r2 = run_fast_retry(&p.spec, &q)
            .await
            .unwrap_or_else(|e| panic!("{point}: {e}"));
        assert_eq!(workers.fired(point), 2, "{point} fired twice");
        workers.stop();
        assert_eq!(
            (r1.progress.run_seq, r2.progress.run_seq),
            (Some(1), Some(2))
        );
        assert_eq!(
            p.table().await,
            p.model(),
            "{point}: table equals the oracle"
        );
        let ledger = p.ledger().await;
        assert_eq!(
            ledger.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2],
            "{point}: each run promoted once"
        );
        let committed = tidemark::state::watermark::Watermark::from_json(&ledger[1].1).unwrap();
        assert_eq!(p.stored_watermark().unwrap().value, committed.value);
        assert_eq!(
            committed.value,
            Some(BASE_US + HOUR_US + 10),
            "{point}: the watermark is the committed batch's high mark"
        );
        assert_eq!(p.staging_tables().await, 0, "{point}: staging dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_other_column_types_is_refused_without_retries_and_left_alone() {
    let mut p = PgPipe::new(
        "pg-mismatch",
        "cursor = \"updated_at\"",
        "mode = \"merge\"\nkey = [\"order_id\"]",
    );
    let c = pg_client().await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.orders (order_id bigint PRIMARY KEY, customer_id bigint,
           status integer, amount double precision, updated_at timestamptz, order_date date);
         INSERT INTO {s}.orders VALUES (1, 1, 7, 1.0, now(), current_date);",
        s = p.schema
    ))
    .await
    .unwrap();
    p.add_file(orders(1..4, "new", BASE_US));
    let q = queue("pg-mismatch");
    let started = std::time::Instant::now();
    let err = with_worker(&q, run(&p.spec, &q)).await.unwrap_err();
    assert!(
        err.contains("status") && err.contains("integer"),
        "the error names the column and the types: {err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "not retried"
    );
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {}.orders", p.schema), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the table is untouched");
    assert!(p.stored_watermark().is_none(), "the watermark did not move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_named_in_the_error() {
    let port = tidemark::devserver::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"pg-down\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n\
         [target]\nkind = \"postgres\"\nurl = \"postgres://u:secret@127.0.0.1:{port}/db\"\ntable = \"orders\"\nkey = [\"order_id\"]\n"
    );
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let spec = tidemark::spec::load(&dir.path().join("p.toml")).unwrap();
    write_orders(
        &PathBuf::from(&spec.source.path).join("a.parquet"),
        &orders(1..3, "new", BASE_US),
    )
    .unwrap();
    let err = tidemark::run_steps::process(spec).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!msg.contains("secret"), "the password is not shown: {msg}");
    assert!(err.is_retryable(), "a down server may come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_twice_commits_once_and_returns_the_recorded_counts() {
    use tidemark::run_steps;
    use tidemark::workflows::payloads::{CommitInput, RunIdentity};
    let mut p = PgPipe::new(
        "pg-twice",
        "cursor = \"updated_at\"",
        "mode = \"append\"\nkey = [\"order_id\"]",
    );
    p.add_file(orders(1..6, "new", BASE_US));
    let input = CommitInput {
        spec: p.spec.clone(),
        run: RunIdentity {
            workflow_id: "t".into(),
            run_id: "t".into(),
            started_at_ms: 0,
        },
        manifest: run_steps::process(p.spec.clone()).await.unwrap(),
    };
    run_steps::stage(input.clone()).await.unwrap();
    let first = run_steps::promote(input.clone()).await.unwrap();
    assert!(!first.already_promoted);
    assert_eq!(first.rows_inserted, 5);
    // A retry after a crash that lost the result: stage again (a no-op), promote again.
    run_steps::stage(input.clone()).await.unwrap();
    let second = run_steps::promote(input).await.unwrap();
    assert!(second.already_promoted);
    assert_eq!(
        (second.rows_inserted, second.rows_updated),
        (first.rows_inserted, first.rows_updated)
    );
    assert_eq!(p.table().await.len(), 5, "append mode: no row twice");
    assert_eq!(p.ledger().await.len(), 1);
    assert_eq!(p.staging_tables().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_into_a_table_without_a_unique_key_says_what_index_to_add() {
    let mut p = PgPipe::new(
        "pg-nokey",
        "cursor = \"updated_at\"",
        "mode = \"merge\"\nkey = [\"order_id\"]",
    );
    let c = pg_client().await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.orders (order_id bigint, customer_id bigint,
           status text, amount double precision, updated_at timestamptz, order_date date);",
        s = p.schema
    ))
    .await
    .unwrap();
    p.add_file(orders(1..3, "new", BASE_US));
    let q = queue("pg-nokey");
    let err = with_worker(&q, run(&p.spec, &q)).await.unwrap_err();
    assert!(err.contains("CREATE UNIQUE INDEX"), "{err}");
    assert!(p.stored_watermark().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_into_postgres_loads_each_window_once_beside_the_live_pipeline() {
    let mut p = PgPipe::new(
        "bf_pg",
        "cursor = \"updated_at\"\nlookback = \"0s\"\ninitial = \"2026-01-04T00:00:00Z\"",
        "mode = \"merge\"\nkey = [\"order_id\"]",
    );
    for day in 0..5 {
        let orders = (0..3)
            .map(|i| Order::new(day * 10 + i, "paid", BASE_US + day * DAY_US + i * HOUR_US))
            .collect();
        p.add_file(orders);
    }
    let q = queue("bf_pg");
    with_worker(&q, async {
        run(&p.spec, &q).await.expect("live run (days 3-4)");
        let c = tidemark::client::connect(&crate::harness::settings())
            .await
            .unwrap();
        let windows = tidemark::backfill::windows(
            tidemark::workflows::cursor::CursorType::Timestamp,
            "2026-01-01",
            "2026-01-04",
            "1d",
        )
        .unwrap();
        let input = tidemark::workflows::payloads::BackfillInput {
            spec: p.spec.clone(),
            windows,
            parallel: 3,
            options: Default::default(),
        };
        let (h, _) = tidemark::client::start_backfill(&c, input, &q, false)
            .await
            .unwrap();
        let r = h.get_result(Default::default()).await.unwrap();
        assert_eq!((r.done, r.rows_promoted), (3, 9), "{r:?}");
    })
    .await;
    assert_eq!(p.table().await, p.model());
    // The live pipeline's own watermark row is untouched; each window has its own ledger row.
    let c = pg_client().await;
    let live: String = c
        .query_one(
            &format!(
                "SELECT count(*)::text FROM {}.tidemark_runs WHERE pipeline = 'bf_pg'",
                p.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, "1");
    let windows: String = c
        .query_one(
            &format!(
                "SELECT count(*)::text FROM {}.tidemark_runs WHERE pipeline LIKE 'bf_pg@bf-%'",
                p.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(windows, "3");
}
