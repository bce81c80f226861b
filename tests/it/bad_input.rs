//! Bad input fails the run clearly, and nothing is lost: the table version and the watermark
//! stay as they were.

use crate::harness::{Pipeline, queue, run, with_worker};
use polars::prelude::*;
use tidemark::demo::{BASE_US, Order, orders_frame, write_orders};

/// Loads one good file, then applies `break_source` and expects the next run to fail with a
/// message containing `expect`, leaving table and watermark unchanged.
async fn fails_cleanly(
    name: &str,
    extra_source: &str,
    break_source: impl FnOnce(&Pipeline),
    expect: &str,
) {
    let p = Pipeline::new(name, extra_source, "");
    let q = queue(name);
    with_worker(&q, async {
        write_orders(&p.source_file(0), &[Order::new(1, "new", BASE_US)]).unwrap();
        run(&p.spec, &q).await.expect("the good run succeeds");
        let (v, w) = (p.table_version().await, p.watermark());
        break_source(&p);
        let started = std::time::Instant::now();
        let err = run(&p.spec, &q).await.expect_err("the bad run fails");
        assert!(
            err.contains(expect),
            "error {err:?} should mention {expect:?}"
        );
        assert!(
            started.elapsed().as_secs() < 20,
            "non-retryable errors fail fast"
        );
        assert_eq!(p.table_version().await, v, "table unchanged");
        assert_eq!(p.watermark(), w, "watermark unchanged");
        let runs = p.state().read_ledger().unwrap();
        assert_eq!(runs.last().unwrap().status, "failed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_parquet_is_named() {
    fails_cleanly(
        "corrupt",
        "",
        |p| std::fs::write(p.source_file(1), b"PAR1 not really parquet").unwrap(),
        "part-00001.parquet",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_is_named() {
    fails_cleanly(
        "drift",
        "",
        |p| {
            let mut df = orders_frame(&[Order::new(2, "new", BASE_US + 10)])
                .unwrap()
                .drop("status")
                .unwrap();
            let f = std::fs::File::create(p.source_file(1)).unwrap();
            ParquetWriter::new(f).finish(&mut df).unwrap();
        },
        "schema drift",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_cursor_is_refused_by_default() {
    fails_cleanly(
        "nullcursor",
        "",
        |p| {
            let mut df = orders_frame(&[Order::new(2, "new", BASE_US + 10)]).unwrap();
            let nulls = Series::full_null(
                "updated_at".into(),
                1,
                df.column("updated_at").unwrap().dtype(),
            );
            df.replace("updated_at", nulls.into()).unwrap();
            let f = std::fs::File::create(p.source_file(1)).unwrap();
            ParquetWriter::new(f).finish(&mut df).unwrap();
        },
        "null cursor",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_source_is_named() {
    fails_cleanly(
        "missing",
        "",
        |p| std::fs::remove_dir_all(&p.spec.source.path).unwrap(),
        "does not exist",
    )
    .await;
}

#[test]
fn validate_names_the_file_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\n[source]\nkind = \"parquet\"\npath = \"d\"\ncursor = \"c\"\n[target]\nkind = \"delta\"\npath = \"t\"\nmode = \"merge\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("target.key") && err.contains("key = ["),
        "{err}"
    );
}
