//! Merge-on-read (`[target] deletion_vectors = true`) against real Delta tables: a table with a
//! deletion vector written by Databricks (`../shared/testdata`, copied into a temporary
//! directory at run time) reads and merges right; a pipeline through Temporal deletes the
//! rows its MERGE replaces by deletion vector, and its table reads the same through delta-rs,
//! the Python `deltalake` package's QueryBuilder and Polars, while the pyarrow-dataset reader
//! refuses it, as docs/targets.md says.

use crate::harness::{Pipeline, queue, run, tidemark_cli, with_worker};
use std::path::{Path, PathBuf};
use tidemark::demo::{
    BASE_US, demo_files, newest_per_key, read_orders_table, table_matches, write_orders,
};
use tidemark::polars::prelude::*;
use tidemark::target::delta::{self, MergeEngine, PromoteRequest};
use tidemark::workflows::spec::WriteMode;

/// The Databricks table, copied into `dir` (the shared copy is read-only).
fn databricks_copy(dir: &Path) -> PathBuf {
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/delta/table-with-dv-small");
    let to = dir.join("table");
    for sub in ["", "_delta_log"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(from.join(sub)).expect("../shared/testdata beside the checkout")
        {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    to
}

async fn values(table: &str) -> Vec<i32> {
    let batches = delta::read_all(table).await.unwrap();
    let df = delta::rewrite::arrow_to_polars(&batches).unwrap();
    let mut v: Vec<i32> = df
        .column("value")
        .unwrap()
        .i32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    v.sort_unstable();
    v
}

/// Databricks' table (values 0..9, a DV deleting 0 and 9) reads as 1..8 through every path,
/// and a MERGE into it — copy-on-write or merge-on-read — never matches a deleted row: the
/// deleted key 0 comes back as an insert, 5 is unchanged, 10 is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_table_with_a_deletion_vector_reads_and_merges_right() {
    for dv in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let table = databricks_copy(dir.path()).to_string_lossy().into_owned();
        assert_eq!(values(&table).await, (1..=8).collect::<Vec<_>>());
        let t = delta::open(&table).await.unwrap().unwrap();
        let schema = delta::rewrite::table_schema(&t).unwrap();
        let scanned = delta::files::scan_table(&t, &table, &schema)
            .await
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(scanned.height(), 8, "tidemark's own scan applies the DV");

        let staged = dir.path().join("batch.parquet");
        let mut batch = df!("value" => [0i32, 5, 10]).unwrap();
        ParquetWriter::new(std::fs::File::create(&staged).unwrap())
            .finish(&mut batch)
            .unwrap();
        let key = vec!["value".to_string()];
        let p = delta::promote_with(
            &PromoteRequest {
                table: &table,
                app_id: "tidemark:dbx",
                pipeline: "dbx",
                run_seq: 1,
                staged: &staged,
                staged_rows: 3,
                mode: WriteMode::Merge,
                key: &key,
                cursor: "value",
                partition_by: &[],
                partition_stable: false,
                watermark_json: "{}",
                cdc: None,
                contract: &Default::default(),
                columns: &[],
                deletion_vectors: dv,
            },
            MergeEngine::Rewrite,
        )
        .await
        .unwrap();
        assert_eq!((p.inserted, p.updated), (2, 0), "dv {dv}");
        assert_eq!(
            values(&table).await,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 10],
            "dv {dv}"
        );
    }
}

/// Runs a python script over `args` with the benchmark virtualenv's readers.
fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let out = tidemark_testkit::python::run_python(script, args).expect("python reads");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A pipeline with `deletion_vectors = true`, through Temporal: the table is upgraded in a
/// commit of its own, the rows each MERGE replaces are deleted by deletion vector (no table
/// file is rewritten), the table equals the newest version per key, and it reads the same
/// through the Python QueryBuilder and Polars; the pyarrow-dataset reader refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_on_read_pipeline_matches_the_oracle_and_reads_through_python() {
    let p = Pipeline::new(
        "merge_on_read",
        "lookback = \"2h\"",
        "deletion_vectors = true",
    );
    let out = tidemark_cli(
        &[
            "validate",
            &p.dir.path().join("pipeline.toml").display().to_string(),
        ],
        &[],
        &[],
    );
    assert!(
        out.stdout.contains("deletion vectors") && out.stdout.contains("to_pyarrow_table"),
        "validate says which readers refuse: {}",
        out.text()
    );
    let q = queue("mor");
    let files = demo_files();
    let mut seen = Vec::new();
    with_worker(&q, async {
        for (i, (_, orders)) in files.iter().enumerate() {
            write_orders(&p.source_file(i), orders).unwrap();
            seen.push(orders.clone());
            run(&p.spec, &q).await.expect("round succeeds");
            let table = read_orders_table(&p.spec.target.path).await.unwrap();
            assert!(table_matches(&table, &newest_per_key(&seen)), "round {i}");
        }
        // An update of one old order: a DV on its file, one small new file; nothing rewritten.
        let old = files[0].1[3].version("refunded", BASE_US + 40 * 86_400_000_000);
        write_orders(&p.source_file(files.len()), std::slice::from_ref(&old)).unwrap();
        seen.push(vec![old.clone()]);
        let s = run(&p.spec, &q).await.expect("the update succeeds");
        assert_eq!(s.progress.rows_promoted, 1);
    })
    .await;
    let table = read_orders_table(&p.spec.target.path).await.unwrap();
    assert!(table_matches(&table, &newest_per_key(&seen)));
    let t = delta::open(&p.spec.target.path).await.unwrap().unwrap();
    assert!(delta::deletion_vectors_enabled(&t));
    let with_dv = t
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .filter(|f| f.deletion_vector_descriptor().is_some())
        .count();
    assert!(with_dv >= 1, "replaced rows are deleted by deletion vector");
    let info: Vec<_> = futures::TryStreamExt::try_collect(t.history(Some(1)))
        .await
        .unwrap();
    let metrics = info[0].info["operationMetrics"].clone();
    assert_eq!(metrics["tidemark_merge"], "deletion_vectors", "{metrics}");
    assert_eq!(
        metrics["num_target_files_removed"], 0,
        "no file rewritten: {metrics}"
    );

    let v = python(
        r#"
import sys, json, os
from deltalake import DeltaTable, QueryBuilder
import pyarrow as pa, polars as pl
path = sys.argv[1]
dt = DeltaTable(path)
q = pa.table(QueryBuilder().register("t", dt).execute("select order_id, status from t order by order_id").read_all())
try:
    dt.to_pyarrow_table()
    refused = None
except Exception as e:
    refused = str(e)
os.environ["POLARS_DELTA_READER_FEATURE_DV"] = "1"
p = pl.read_delta(path).sort("order_id")
print(json.dumps({"query_ids": q.column("order_id").to_pylist(), "query_status": q.column("status").to_pylist(),
                  "polars_ids": p["order_id"].to_list(), "pyarrow_refused": refused}))
"#,
        &[&p.spec.target.path],
    );
    let want: Vec<i64> = table.keys().copied().collect();
    assert_eq!(v["query_ids"], serde_json::json!(want));
    assert_eq!(v["polars_ids"], serde_json::json!(want));
    let statuses: Vec<String> = table.values().map(|r| r.1.clone()).collect();
    assert_eq!(v["query_status"], serde_json::json!(statuses));
    assert!(
        v["pyarrow_refused"]
            .as_str()
            .is_some_and(|e| e.contains("deletionVectors")),
        "{v}"
    );
}

/// Live data files of a table and how many carry a deletion vector.
async fn live_files(table: &str) -> (usize, usize) {
    let t = delta::open(table).await.unwrap().unwrap();
    let snapshot = t.snapshot().unwrap();
    let files: Vec<_> = snapshot.log_data().iter().collect();
    let with_dv = files
        .iter()
        .filter(|f| f.deletion_vector_descriptor().is_some())
        .count();
    (files.len(), with_dv)
}

/// `tidemark maintain SPEC --json` on the test queue, off the async executor (the test's
/// worker runs in the same task).
async fn maintain_cli(spec: &Path, dry: bool) -> serde_json::Value {
    let spec = spec.to_path_buf();
    tokio::task::spawn_blocking(move || maintain_cli_blocking(&spec, dry))
        .await
        .unwrap()
}

fn maintain_cli_blocking(spec: &Path, dry: bool) -> serde_json::Value {
    let spec = spec.display().to_string();
    let address = crate::harness::server_address();
    let mut args = vec![
        "maintain",
        &spec,
        "--json",
        "--address",
        &address,
        "--task-queue",
    ];
    let q = queue("maintain");
    args.push(&q);
    if dry {
        args.push("--dry-run");
    }
    let out = tidemark_cli(&args, &[], &[]);
    assert!(out.success, "{}", out.text());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.text()))
}

/// `tidemark maintain` through its workflow: a dry run changes nothing; then files whose rows
/// are mostly deleted are rewritten without them (DVs purged), a checkpoint is written, and a
/// deletion-vector file a crashed run left unreferenced is vacuumed; the table stays equal to
/// the oracle; a second maintenance has nothing to compact; the ledger records both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_compacts_checkpoints_and_vacuums_through_its_workflow() {
    let p = Pipeline::new(
        "maintained",
        "lookback = \"2h\"",
        "deletion_vectors = true\n[maintenance]\ndeleted_fraction = 0.05\nsmall_file_mb = 0\nvacuum_retention = \"1h\"",
    );
    let spec_path = p.dir.path().join("pipeline.toml");
    let q = queue("maintain");
    let files = demo_files();
    let mut seen = Vec::new();
    with_worker(&q, async {
        for (i, (_, orders)) in files.iter().enumerate() {
            write_orders(&p.source_file(i), orders).unwrap();
            seen.push(orders.clone());
            run(&p.spec, &q).await.expect("round succeeds");
        }
        // Updates of many old orders: deletion vectors on their files.
        let updates: Vec<_> = files[0]
            .1
            .iter()
            .step_by(3)
            .map(|o| o.version("refunded", BASE_US + 40 * 86_400_000_000))
            .collect();
        write_orders(&p.source_file(files.len()), &updates).unwrap();
        seen.push(updates);
        run(&p.spec, &q).await.expect("the updates succeed");

        let table = p.spec.target.path.clone();
        let (_, with_dv) = live_files(&table).await;
        assert!(with_dv > 0, "deletion vectors before maintenance");
        // A DV file a crashed run wrote before its commit: unreferenced, two days old.
        let orphan =
            Path::new(&table).join("deletion_vector_00000000-0000-4000-8000-000000000000.bin");
        std::fs::write(&orphan, b"debris").unwrap();
        let touched = std::process::Command::new("touch")
            .args(["-d", "2 days ago"])
            .arg(&orphan)
            .status()
            .unwrap();
        assert!(touched.success());
        let version = p.table_version().await;

        let dry = maintain_cli(&spec_path, true).await;
        assert_eq!(dry["dry_run"], true);
        assert!(dry["files_compacted"].as_u64().unwrap() > 0, "{dry}");
        assert!(dry["files_vacuumed"].as_u64().unwrap() >= 1, "{dry}");
        assert_eq!(
            p.table_version().await,
            version,
            "a dry run changes nothing"
        );
        assert!(orphan.exists());

        let done = maintain_cli(&spec_path, false).await;
        assert!(done["compaction_version"].as_i64().is_some(), "{done}");
        assert!(done["rows_purged"].as_u64().unwrap() > 0, "{done}");
        assert!(done["checkpoint_version"].as_i64().is_some(), "{done}");
        assert!(
            !orphan.exists(),
            "the unreferenced DV file is vacuumed: {done}"
        );
        let (_, with_dv_after) = live_files(&table).await;
        assert!(
            with_dv_after < with_dv,
            "compaction purged deletion vectors"
        );
        let rows = read_orders_table(&table).await.unwrap();
        assert!(
            table_matches(&rows, &newest_per_key(&seen)),
            "the table is unchanged in content"
        );
        let checkpoints = std::fs::read_dir(Path::new(&table).join("_delta_log"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".checkpoint."))
            .count();
        assert!(checkpoints >= 1);

        let again = maintain_cli(&spec_path, false).await;
        assert_eq!(
            again["files_compacted"], 0,
            "nothing left to compact: {again}"
        );
        // Runs go on after maintenance.
        let s = run(&p.spec, &q).await.expect("a run after maintenance");
        assert_eq!(s.progress.rows_batch, 0);
    })
    .await;
    let maintained = p
        .state()
        .read_ledger()
        .unwrap()
        .iter()
        .filter(|e| e.status == "maintained")
        .count();
    assert_eq!(
        maintained, 2,
        "each maintenance is in the ledger (not the dry run)"
    );
}

/// Maintenance holds the pipeline's workflow id: while a run is in progress (here one no
/// worker has picked up yet) it is refused, and the run is never disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_is_refused_while_a_run_is_in_progress() {
    let p = Pipeline::new("guarded", "", "deletion_vectors = true");
    let client = tidemark::client::connect(&crate::harness::settings())
        .await
        .unwrap();
    let idle = queue("guard-no-worker");
    let handle = tidemark::client::start_run(&client, &p.spec, &idle)
        .await
        .unwrap();
    let refused = tidemark::client::start_maintain(&client, &p.spec, &idle, false)
        .await
        .err()
        .expect("maintenance is refused while a run is in progress")
        .to_string();
    assert!(refused.contains("in progress"), "{refused}");
    handle
        .terminate(Default::default())
        .await
        .expect("end the idle run");
}
