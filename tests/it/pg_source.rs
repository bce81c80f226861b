//! The PostgreSQL source against a real server: rows written concurrently with the runs are
//! all picked up (none lost, none duplicated), and the column types map through to a
//! PostgreSQL target.

use crate::harness::{pg_client, pg_url, queue, run, with_worker};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tidemark::demo::read_orders_table;
use tidemark::workflows::spec::PipelineSpec;

fn spec_at(dir: &std::path::Path, text: &str) -> PipelineSpec {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).expect("write spec");
    tidemark::spec::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_during_runs_are_all_picked_up_by_later_runs() {
    let schema = format!("src_conc_{}", std::process::id());
    let c = pg_client().await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (order_id bigint PRIMARY KEY, status text NOT NULL,
           amount numeric(10,2), updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE INDEX ON {schema}.orders (updated_at);
         INSERT INTO {schema}.orders (order_id, status, amount)
           SELECT g, 'new', g * 1.5 FROM generate_series(1, 500) g;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(
        dir.path(),
        &format!(
            "name = \"pg-src-conc\"\n[source]\nkind = \"postgres\"\nurl = \"{}\"\ntable = \"{schema}.orders\"\ncursor = \"updated_at\"\nlookback = \"5s\"\n\
             [target]\nkind = \"delta\"\npath = \"lake/orders\"\nkey = [\"order_id\"]\n",
            pg_url()
        ),
    );

    // A writer inserting new orders and updating old ones, one transaction each, while runs go.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, schema) = (stop.clone(), schema.clone());
        tokio::spawn(async move {
            let c = pg_client().await;
            let mut next = 501i64;
            while !stop.load(Ordering::Relaxed) {
                c.execute(
                    &format!("INSERT INTO {schema}.orders (order_id, status, amount) VALUES ($1, 'new', 1)"),
                    &[&next],
                )
                .await
                .unwrap();
                c.execute(
                    &format!(
                        "UPDATE {schema}.orders SET status = 'v' || $1::text, updated_at = clock_timestamp() WHERE order_id = $2"
                    ),
                    &[&next.to_string(), &(next % 500 + 1)],
                )
                .await
                .unwrap();
                next += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            next
        })
    };
    let q = queue("pg-src-conc");
    let mut seqs = Vec::new();
    with_worker(&q, async {
        for _ in 0..4 {
            let r = run(&spec, &q).await.expect("run during writes");
            seqs.push(r.progress.run_seq);
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.await.unwrap();
        assert!(written > 520, "the writer ran during the runs ({written})");
        let r = run(&spec, &q).await.expect("final run");
        seqs.push(r.progress.run_seq);
    })
    .await;
    assert_eq!(seqs, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);

    let source: BTreeMap<i64, String> = c
        .query(
            &format!("SELECT order_id, status FROM {schema}.orders"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let target = read_orders_table(&spec.target.path).await.unwrap();
    assert_eq!(target.len(), source.len(), "no row lost, none duplicated");
    for (id, status) in &source {
        assert_eq!(&target[id].1, status, "order {id} has its last version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_postgres_maps_the_common_types_and_merges_incrementally() {
    let src = format!("src_types_{}", std::process::id());
    let dst = format!("dst_types_{}", std::process::id());
    let c = pg_client().await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {src};
         CREATE TABLE {src}.items (id integer PRIMARY KEY, small smallint, big bigint, f4 real,
           f8 double precision, price numeric(12,2), name varchar(20), note text, ok boolean,
           day date, at_local timestamp, at timestamptz NOT NULL, raw bytea, uid uuid, doc jsonb,
           seq bigint NOT NULL);
         INSERT INTO {src}.items VALUES
           (1, 1, 10000000000, 1.5, 2.25, 19.99, 'a', 'x', true, '2026-01-02', '2026-01-02 03:04:05',
            '2026-01-02 03:04:05.123456+00', '\\x0102', '0e9f4a5c-3d2b-4c1a-9e8f-7a6b5c4d3e2f', '{{\"k\": 1}}', 1),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2026-01-03 00:00:00+00', NULL, NULL, NULL, 2);"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_at(
        dir.path(),
        &format!(
            "name = \"pg-types\"\n[source]\nkind = \"postgres\"\nurl = \"{url}\"\nquery = \"SELECT * FROM {src}.items\"\ncursor = \"seq\"\n\
             [target]\nkind = \"postgres\"\nurl = \"{url}\"\ntable = \"{dst}.items\"\nkey = [\"id\"]\n",
            url = pg_url()
        ),
    );
    let q = queue("pg-types");
    with_worker(&q, run(&spec, &q)).await.expect("run 1");
    c.batch_execute(&format!(
        "UPDATE {src}.items SET note = 'changed', seq = 3 WHERE id = 2;
         INSERT INTO {src}.items (id, at, seq) VALUES (3, now(), 4);"
    ))
    .await
    .unwrap();
    with_worker(&q, run(&spec, &q)).await.expect("run 2");

    let types: BTreeMap<String, String> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'items'",
            &[&dst],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (col, ty) in [
        ("id", "integer"),
        ("small", "smallint"),
        ("big", "bigint"),
        ("f4", "real"),
        ("f8", "double precision"),
        ("price", "double precision"),
        ("name", "text"),
        ("ok", "boolean"),
        ("day", "date"),
        ("at_local", "timestamp without time zone"),
        ("at", "timestamp with time zone"),
        ("raw", "bytea"),
        ("uid", "text"),
        ("doc", "text"),
    ] {
        assert_eq!(
            types.get(col).map(String::as_str),
            Some(ty),
            "type of {col}"
        );
    }
    // Every value survived the trip (compared as text, after the documented mappings).
    let diff: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM (
                   SELECT id, small, big, f4, f8, price::double precision, name::text, note, ok, day,
                          at_local, at, raw, uid::text, doc::text, seq FROM {src}.items
                   EXCEPT
                   SELECT id, small, big, f4, f8, price, name, note, ok, day,
                          at_local, at, raw, uid, doc, seq FROM {dst}.items) d"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(diff, 0, "the target holds the source's rows");
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {dst}.items"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}
