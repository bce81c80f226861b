//! Object storage against a real S3-compatible server (moto, started by the test setup): a
//! pipeline whose Delta table and `state_dir` are `s3://` URLs runs end to end through
//! `tidemark run`, with worker processes that each have their own working directory and
//! `TMPDIR` and are killed mid-run; the table read back through the store equals the oracle;
//! no credential reaches the workflow history or a log. And the state store's conditional
//! writes refuse a stale writer.

use crate::harness::{CrashingWorkers, history_text, queue, server_address, settings};
use std::collections::BTreeMap;
use std::path::Path;
use tidemark::demo::{
    BASE_US, Order, newest_per_key, read_orders_table, table_matches, write_orders,
};
use tidemark::state::StateStore;
use tidemark::state::watermark::{Advance, Watermark};
use tidemark::storage::Remote;
use tidemark::workflows::cursor::CursorType;
use tidemark_testkit::s3server::{self, SECRET_ACCESS_KEY};

/// A fresh bucket on the test server.
fn bucket(name: &str) -> (String, String) {
    let endpoint = tidemark_testkit::s3_endpoint();
    let bucket = format!("{name}-{}", std::process::id());
    s3server::create_bucket(&endpoint, &bucket).expect("create the bucket");
    (endpoint, bucket)
}

/// Options with which this test process reads the bucket itself (in process, never through
/// a spec; the workers get the same values from their environment).
fn reader_options(endpoint: &str) -> BTreeMap<String, String> {
    s3server::env_for(endpoint)
        .into_iter()
        .filter(|(k, _)| *k != "AWS_EC2_METADATA_DISABLED")
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// A worker's environment when the endpoint is only in the spec's `storage_options`: the
/// credentials and region, no `AWS_ENDPOINT_URL` / `AWS_ALLOW_HTTP`, its own `TMPDIR`.
fn worker_env_without_endpoint(endpoint: &str, tmpdir: &Path) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = s3server::env_for(endpoint)
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "AWS_ENDPOINT_URL" | "AWS_ALLOW_HTTP"))
        .collect();
    env.push(("TMPDIR", tmpdir.to_string_lossy().into_owned()));
    env
}

/// A handle on `url` with [`reader_options`].
fn reader_remote(endpoint: &str, url: &str) -> Remote {
    Remote::open(&url::Url::parse(url).unwrap(), &reader_options(endpoint)).unwrap()
}

fn orders(first: i64, n: i64, at_us: i64, status: &str) -> Vec<Order> {
    (0..n)
        .map(|i| Order {
            order_id: first + i,
            customer_id: i % 5,
            status: status.into(),
            amount: 1.0 + i as f64,
            updated_at_us: at_us + i * 1_000_000,
            order_date_days: 20_000 + (i % 3) as i32,
        })
        .collect()
}

/// The paths the commit of table version `version` adds.
fn committed_adds(endpoint: &str, table: &str, version: u64) -> Vec<String> {
    let lake = reader_remote(endpoint, table);
    let (log, _) = lake
        .get(&format!("_delta_log/{version:020}.json"))
        .unwrap()
        .expect("the commit exists");
    String::from_utf8(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|a| a["add"]["path"].as_str().map(str::to_string))
        .collect()
}

fn tidemark_run(spec: &Path, q: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "run",
            "--json",
            "--address",
            &server_address(),
            "--task-queue",
            q,
        ])
        .arg(spec)
        .output()
        .expect("run tidemark")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_on_s3_runs_end_to_end_with_workers_that_share_no_directory() {
    let (endpoint, bucket) = bucket("e2e");
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("pipeline.toml");
    std::fs::write(
        &spec_path,
        format!(
            r#"name = "s3_orders"
state_dir = "s3://{bucket}/state"
[source]
kind = "parquet"
path = "s3://{bucket}/data"
cursor = "updated_at"
[target]
kind = "delta"
path = "s3://{bucket}/lake/orders"
key = ["order_id"]
partition_by = ["order_date"]
storage_options = {{ aws_endpoint = "{endpoint}", aws_allow_http = "true", aws_region = "us-east-1" }}
"#
        ),
    )
    .unwrap();
    let spec = tidemark::spec::load(&spec_path).unwrap();
    assert_eq!(spec.target.path, format!("s3://{bucket}/lake/orders"));
    // The source files are objects too: the workers share no directory at all.
    let source = reader_remote(&endpoint, &format!("s3://{bucket}/data"));
    let put_source = |n: usize, rows: &[Order]| {
        let local = dir.path().join(format!("part-{n:05}.parquet"));
        write_orders(&local, rows).unwrap();
        source
            .upload(&format!("part-{n:05}.parquet"), &local, None)
            .unwrap();
        std::fs::remove_file(&local).unwrap();
    };
    let q = queue("s3_e2e");

    // Workers get the credentials from their environment only, each its own TMPDIR (a fresh
    // private directory; spec paths are absolute, so no working directory is shared either).
    // The endpoint is only in the spec's storage_options: every handle on the bucket (state,
    // batch files, source, table) must take it from there.
    let scratch = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut workers = Vec::new();
    for s in &scratch {
        let mut env = worker_env_without_endpoint(&endpoint, s.path());
        env.push(("TIDEMARK_LOG", "debug".to_string()));
        env.push(("TIDEMARK_MULTIPART_THRESHOLD", "0".to_string()));
        workers.push(CrashingWorkers::start(&q, "", &env));
    }

    // Run 1 through `tidemark run`.
    let first = orders(1, 40, BASE_US, "new");
    put_source(0, &first);
    let out = tidemark_run(&spec_path, &q);
    assert!(out.status.success(), "first run: {out:?}");
    // Written once: the first load's partitions were copied from the batch file's row groups
    // and uploaded, not written again by delta-rs's MERGE (whose files end `.snappy.parquet`).
    let adds = committed_adds(&endpoint, &format!("s3://{bucket}/lake/orders"), 1);
    assert_eq!(adds.len(), 3, "one file per order_date: {adds:?}");
    assert!(
        adds.iter().all(|p| !p.ends_with(".snappy.parquet")),
        "{adds:?}"
    );

    // Run 2 with the workers killed (SIGABRT, no cleanup) in the middle of the staged file's
    // multipart upload (every upload is one here), after stage, after the commit and before
    // the watermark write: whichever worker runs a step dies there once.
    let plan = "mid_stage 1\nafter_stage 1\npromote_after_commit 1\nbefore_watermark_write 1\n";
    for w in &workers {
        std::fs::write(w.crash_dir.join("plan"), plan).unwrap();
    }
    let second: Vec<Order> = orders(21, 40, BASE_US + 3_600_000_000, "shipped");
    put_source(1, &second);
    crate::harness::run_fast_retry(&spec, &q)
        .await
        .expect("second run survives the kills");
    let fired: usize = workers
        .iter()
        .map(|w| {
            [
                "mid_stage",
                "after_stage",
                "promote_after_commit",
                "before_watermark_write",
            ]
            .iter()
            .map(|p| w.fired(p))
            .sum::<usize>()
        })
        .sum();
    assert!(
        fired >= 4,
        "workers were killed mid-run ({fired} crash points fired)"
    );

    // Run 3 through `tidemark run` again: nothing new, nothing duplicated.
    for w in &workers {
        std::fs::write(w.crash_dir.join("plan"), "").unwrap();
    }
    let out = tidemark_run(&spec_path, &q);
    assert!(out.status.success(), "third run: {out:?}");
    // Footer statistics still prune on object storage: the first file lies wholly below the
    // window of run 3 and is never read.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    let find = |key: &str| -> Option<u64> {
        fn walk(v: &serde_json::Value, key: &str) -> Option<u64> {
            match v {
                serde_json::Value::Object(o) => o
                    .get(key)
                    .and_then(|x| x.as_u64())
                    .or_else(|| o.values().find_map(|x| walk(x, key))),
                _ => None,
            }
        }
        walk(&summary, key)
    };
    assert_eq!(find("files_total"), Some(2), "{summary}");
    assert_eq!(find("files_skipped"), Some(1), "{summary}");

    // The table, read back through the store by this process, equals the oracle.
    let mut reader = spec.clone();
    reader.target.storage_options = reader_options(&endpoint);
    tidemark::storage::use_spec_options(&reader);
    let table = read_orders_table(&spec.target.path).await.unwrap();
    let model = newest_per_key(&[first, second.clone()]);
    assert_eq!(table.len(), 60);
    assert!(
        table_matches(&table, &model),
        "table differs from the oracle"
    );

    // The watermark is the newest committed cursor; each run is in the ledger once; nothing
    // of either run is left in the state's run folders or the table's staging.
    let base = reader_remote(&endpoint, &format!("s3://{bucket}/state"));
    let state = tidemark::state::RemoteStore::at(&base, &spec.name);
    let wm = state.read_watermark().unwrap().expect("a watermark");
    assert_eq!(wm.value, Some(second.last().unwrap().updated_at_us));
    assert!(wm.run_seq >= 2, "{wm:?}");
    let committed: Vec<u64> = state
        .read_ledger()
        .unwrap()
        .iter()
        .filter(|e| e.status == "succeeded" || e.status == "reconciled")
        .filter_map(|e| e.run_seq)
        .collect();
    assert_eq!(
        &committed[..2],
        &[1, 2],
        "each run recorded once: {committed:?}"
    );
    let root = base.child(&spec.name);
    assert_eq!(root.list("runs").unwrap(), Vec::<String>::new());
    let lake = reader_remote(&endpoint, &format!("s3://{bucket}/lake/orders"));
    assert_eq!(
        lake.list("_tidemark_staging").unwrap(),
        Vec::<String>::new()
    );
    // No worker left a scratch file behind.
    for s in &scratch {
        let left: Vec<_> = std::fs::read_dir(s.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
    }

    // The secret is nowhere in the workflow history.
    let history = history_text(&spec.name).await;
    assert!(
        history.contains("s3://"),
        "the history holds the run's input"
    );
    assert!(
        !history.contains(SECRET_ACCESS_KEY),
        "the secret leaked into the history"
    );
    let logs: String = workers.iter().map(|w| w.log()).collect();
    assert!(
        logs.contains("s3_orders"),
        "the workers logged at debug level"
    );
    assert!(
        !logs.contains(SECRET_ACCESS_KEY),
        "the secret leaked into a log"
    );
    for w in workers {
        w.stop();
    }
}

#[test]
fn the_state_store_on_s3_refuses_a_stale_writer_and_records_each_run_once() {
    let (endpoint, bucket) = bucket("state");
    let base = reader_remote(&endpoint, &format!("s3://{bucket}/state"));
    let a = tidemark::state::RemoteStore::at(&base, "p");
    let b = tidemark::state::RemoteStore::at(&base, "p");
    assert!(!a.exists());
    let w1 = Watermark::sample(1, 10, CursorType::Integer);
    assert_eq!(a.advance_watermark(&w1).unwrap(), Advance::Written);
    // A zombie attempt of run 1 finds it current; a later run moves it on; a stale run that
    // would move it backwards is refused.
    assert_eq!(b.advance_watermark(&w1).unwrap(), Advance::AlreadyCurrent);
    let w2 = Watermark::sample(2, 20, CursorType::Integer);
    assert_eq!(b.advance_watermark(&w2).unwrap(), Advance::Written);
    let backwards = Watermark::sample(3, 5, CursorType::Integer);
    let e = a.advance_watermark(&backwards).unwrap_err().to_string();
    assert!(e.contains("backwards"), "{e}");
    assert_eq!(a.read_watermark().unwrap().unwrap().value, Some(20));

    // The object store itself refuses the stale conditional write the store relies on.
    let (_, etag) = base.get("p/watermark.json").unwrap().unwrap();
    // Another writer replaces the document (different bytes, so a different ETag).
    base.put_overwrite("p/watermark.json", format!("{}\n", w2.to_json()).as_bytes())
        .unwrap();
    let stale = base
        .put("p/watermark.json", b"{}", Remote::if_etag(etag))
        .unwrap();
    assert_eq!(stale, tidemark::storage::PutOutcome::Refused);
    let again = base
        .put("p/watermark.json", b"{}", object_store::PutMode::Create)
        .unwrap();
    assert_eq!(again, tidemark::storage::PutOutcome::Refused);

    // Ledger: a committed run is recorded once, whichever attempt writes first; failures get
    // entries of their own; the alert rules' look-back needs no listing.
    let entry = |seq, status: &str, rows| tidemark::state::ledger::LedgerEntry {
        run_seq: Some(seq),
        status: status.into(),
        finished_at: format!("2026-01-01T00:00:0{seq}.000Z"),
        rows_batch: rows,
        ..Default::default()
    };
    a.append_ledger(&entry(1, "succeeded", 5)).unwrap();
    b.append_ledger(&entry(1, "succeeded", 99)).unwrap();
    a.append_ledger(&entry(2, "failed", 0)).unwrap();
    a.append_ledger(&entry(2, "failed", 0)).unwrap();
    a.append_ledger(&entry(2, "empty", 0)).unwrap();
    assert_eq!(a.committed_entry(1).unwrap().unwrap().rows_batch, 5);
    let all = a.read_ledger().unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    let recent = a.recent_committed(3, 10).unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|e| e.run_seq.unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );

    // Run files: the current run's stay, earlier runs' debris goes.
    for seq in [1, 2, 3] {
        a.write_run_file(seq, "f", b"x").unwrap();
    }
    a.clear_runs_before(3).unwrap();
    let keys = base.list("p/runs").unwrap();
    assert_eq!(keys, vec!["p/runs/00000003/f".to_string()]);
    let loc = a.write_run_file(3, "g", b"y").unwrap();
    assert_eq!(a.read_run_file(&loc).unwrap().as_deref(), Some(&b"y"[..]));
    a.remove_run(3).unwrap();
    assert_eq!(a.read_run_file(&loc).unwrap(), None);
    assert!(a.exists());
}

#[test]
fn a_parquet_dataset_on_object_storage_and_a_secret_storage_option_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |target: &str| {
        let p = dir.path().join("p.toml");
        std::fs::write(
            &p,
            format!(
                "name = \"p\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n[target]\n{target}\n"
            ),
        )
        .unwrap();
        tidemark::spec::load(&p)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = spec("kind = \"parquet\"\npath = \"s3://b/ds\"\nmode = \"append\"");
    assert!(
        e.contains("target.path")
            && e.contains("RENAME_EXCHANGE")
            && e.contains("kind = \"delta\""),
        "{e}"
    );
    let e = spec(
        "kind = \"delta\"\npath = \"s3://b/t\"\nkey = [\"id\"]\nstorage_options = { aws_secret_access_key = \"hunter2\" }",
    );
    assert!(
        e.contains("storage_options.aws_secret_access_key") && !e.contains("hunter2"),
        "{e}"
    );
    let e = spec("kind = \"delta\"\npath = \"ftp://host/t\"\nkey = [\"id\"]");
    assert!(e.contains("unsupported URL scheme"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_no_shared_directory_backfill_twelve_windows_into_one_s3_table() {
    use futures::TryStreamExt;
    const DAY: i64 = 86_400_000_000;
    let (endpoint, bucket) = bucket("scale");
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("pipeline.toml");
    std::fs::write(
        &spec_path,
        format!(
            r#"name = "s3_backfill"
state_dir = "s3://{bucket}/state"
[source]
kind = "parquet"
path = "s3://{bucket}/data"
cursor = "updated_at"
lookback = "0s"
[target]
kind = "delta"
path = "s3://{bucket}/lake/orders"
key = ["order_id"]
partition_by = ["order_date"]
storage_options = {{ aws_endpoint = "{endpoint}", aws_allow_http = "true", aws_region = "us-east-1" }}
"#
        ),
    )
    .unwrap();
    let spec = tidemark::spec::load(&spec_path).unwrap();
    let source = reader_remote(&endpoint, &format!("s3://{bucket}/data"));
    // Twelve days; keys recur across days, so windows loaded out of order must still leave
    // each key's newest version.
    let mut days = Vec::new();
    for d in 0..12 {
        let rows: Vec<Order> = orders(d * 7, 20, BASE_US + d * DAY + 3_600_000_000, "v")
            .into_iter()
            .map(|mut o| {
                o.status = format!("day{d}");
                o
            })
            .collect();
        let local = dir.path().join(format!("part-{d:05}.parquet"));
        write_orders(&local, &rows).unwrap();
        source
            .upload(&format!("part-{d:05}.parquet"), &local, None)
            .unwrap();
        std::fs::remove_file(&local).unwrap();
        days.push(rows);
    }

    // Three worker processes, each with its own TMPDIR, killed once each after a commit.
    let q = queue("s3_scale");
    let scratch: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let workers: Vec<CrashingWorkers> = scratch
        .iter()
        .map(|s| {
            let mut env = s3server::env_for(&endpoint);
            env.push(("TMPDIR", s.path().to_string_lossy().into_owned()));
            CrashingWorkers::start(&q, "promote_after_commit 1\n", &env)
        })
        .collect();
    let windows =
        tidemark::backfill::windows(CursorType::Timestamp, "2026-01-01", "2026-01-13", "1d")
            .unwrap();
    assert_eq!(windows.len(), 12);
    let c = tidemark::client::connect(&settings()).await.unwrap();
    let input = tidemark::workflows::payloads::BackfillInput {
        spec: spec.clone(),
        windows: windows.clone(),
        parallel: 4,
        options: tidemark::workflows::payloads::RunOptions {
            heartbeat_timeout_ms: Some(2_000),
            ..Default::default()
        },
    };
    let (handle, _) = tidemark::client::start_backfill(&c, input, &q, false)
        .await
        .unwrap();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(600),
        handle.get_result(Default::default()),
    )
    .await
    .expect("backfill finishes in time")
    .expect("backfill succeeds");
    assert_eq!(result.done, 12, "{result:?}");
    assert!(result.failed.is_empty(), "{result:?}");
    let kills: usize = workers
        .iter()
        .map(|w| w.fired("promote_after_commit"))
        .sum();
    assert!(kills >= 1, "workers were killed mid-backfill");

    // Each window committed once, and the table equals the oracle.
    let mut reader = spec.clone();
    reader.target.storage_options = reader_options(&endpoint);
    tidemark::storage::use_spec_options(&reader);
    let t = tidemark::target::delta::open(&spec.target.path)
        .await
        .unwrap()
        .expect("the table exists");
    let infos: Vec<_> = t.history(None).try_collect().await.unwrap();
    let mut by_window: BTreeMap<String, usize> = BTreeMap::new();
    for info in &infos {
        if let Some(p) = info.info.get("tidemark.pipeline").and_then(|v| v.as_str()) {
            *by_window.entry(p.to_string()).or_default() += 1;
        }
    }
    assert_eq!(by_window.len(), 12, "{by_window:?}");
    assert!(by_window.values().all(|n| *n == 1), "{by_window:?}");
    let table = read_orders_table(&spec.target.path).await.unwrap();
    assert!(
        table_matches(&table, &newest_per_key(&days)),
        "the table differs from the oracle"
    );
    for w in workers {
        w.stop();
    }
}

#[test]
fn a_corrupt_parquet_object_is_named_and_a_missing_prefix_is_a_clear_error() {
    let (endpoint, bucket) = bucket("src");
    let source = reader_remote(&endpoint, &format!("s3://{bucket}/data"));
    let path = format!("s3://{bucket}/data");
    let e = tidemark::source::parquet::list_remote(&source, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no .parquet object"), "{e}");
    source
        .put_overwrite("bad.parquet", b"this is not a parquet file at all")
        .unwrap();
    let listed = tidemark::source::parquet::list_remote(&source, &path).unwrap();
    assert_eq!(listed, vec![("bad.parquet".to_string(), 33)]);
    let e = tidemark::source::parquet::inspect_remote(&source, "bad.parquet", 33, 0, "updated_at")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("s3://{bucket}/data/bad.parquet")) && e.contains("corrupt"),
        "{e}"
    );
}

/// Runs `spec` until a run extracts nothing; returns how many runs extracted rows.
/// Runs until a run reads nothing; returns the batches the runs committed (a run goes on
/// batch after batch while its reads hit the batch's limits).
async fn drain_through(spec: &tidemark::workflows::spec::PipelineSpec, q: &str) -> usize {
    let (mut runs, mut batches) = (0, 0);
    loop {
        let s = crate::harness::run_fast_retry(spec, q)
            .await
            .expect("the run succeeds");
        if s.progress.rows_extracted == 0 {
            return batches;
        }
        runs += 1;
        batches += s.progress.batches.len().max(1);
        assert!(runs < 20, "runs never end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_event_objects_on_s3_are_read_from_their_positions_into_an_s3_table() {
    use tidemark::cdc::sim::{Rows, SimTable, random_stream};
    let (endpoint, bucket) = bucket("cdc");
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("pipeline.toml");
    std::fs::write(
        &spec_path,
        format!(
            r#"name = "s3_cdc"
state_dir = "s3://{bucket}/state"
[source]
kind = "debezium-jsonl"
path = "s3://{bucket}/events"
max_events = 70
key = ["order_id"]
types = {{ updated_at = "timestamp" }}
[target]
kind = "delta"
path = "s3://{bucket}/lake/orders"
storage_options = {{ aws_endpoint = "{endpoint}", aws_allow_http = "true", aws_region = "us-east-1" }}
"#
        ),
    )
    .unwrap();
    let spec = tidemark::spec::load(&spec_path).unwrap_or_else(|e| panic!("{e}"));
    let events = reader_remote(&endpoint, &format!("s3://{bucket}/events"));
    let put = |name: &str, text: &str| {
        events
            .put_overwrite(name, text.as_bytes())
            .expect("put the event object")
    };
    let lines = |l: &[String]| l.iter().map(|x| format!("{x}\n")).collect::<String>();

    let mut sim = SimTable::new(true, false);
    let snap: Vec<String> = (0..30)
        .map(|i| sim.snapshot_read(i, "new", 1_767_225_600_000_000 + i, 1000))
        .collect();
    put("0-snapshot.jsonl", &lines(&snap));
    // The stream object ends in a line a writer has not finished: it waits for the next run.
    let stream = random_stream(&mut sim, 1, 120, 50);
    let (done, rest) = stream.split_at(80);
    let half = &rest[0][..rest[0].len() / 2];
    put("1-stream.jsonl", &format!("{}{half}", lines(done)));
    // Not an event file: ignored.
    put("README.txt", "not events");

    let q = queue("s3_cdc");
    let scratch = tempfile::tempdir().unwrap();
    let env = worker_env_without_endpoint(&endpoint, scratch.path());
    let worker = CrashingWorkers::start(&q, "", &env);
    let first_batches = drain_through(&spec, &q).await;
    assert!(
        first_batches >= 2,
        "max_events = 70 bounds a batch ({first_batches})"
    );

    let mut reader = spec.clone();
    reader.target.storage_options = reader_options(&endpoint);
    tidemark::storage::use_spec_options(&reader);
    let base = reader_remote(&endpoint, &format!("s3://{bucket}/state"));
    let state = tidemark::state::RemoteStore::at(&base, &spec.name);
    let wm = state.read_watermark().unwrap().expect("a watermark");
    assert_eq!(
        wm.positions.get("1-stream.jsonl").copied(),
        Some(lines(done).len() as i64),
        "the half-written line is not consumed: {:?}",
        wm.positions
    );

    // The writer replaces the object with a longer one and adds another; the worker is
    // killed after staging once: nothing is read twice or skipped.
    put("1-stream.jsonl", &lines(&stream));
    let more = random_stream(&mut sim, 2, 90, 50);
    put("2-stream.jsonl", &lines(&more));
    std::fs::write(worker.crash_dir.join("plan"), "after_stage 1\n").unwrap();
    drain_through(&spec, &q).await;
    assert_eq!(worker.fired("after_stage"), 1, "the kill happened");

    let table: Rows = read_orders_table(&spec.target.path)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(table, sim.rows, "target = the captured table");
    let wm = state.read_watermark().unwrap().expect("a watermark");
    assert_eq!(
        wm.positions.get("1-stream.jsonl").copied(),
        Some(lines(&stream).len() as i64)
    );
    assert_eq!(
        wm.positions.get("2-stream.jsonl").copied(),
        Some(lines(&more).len() as i64)
    );
    assert!(!wm.positions.contains_key("README.txt"));
}

#[test]
fn a_file_larger_than_the_threshold_is_uploaded_in_parts_and_reads_back_whole() {
    let (endpoint, bucket) = bucket("parts");
    let remote = reader_remote(&endpoint, &format!("s3://{bucket}/p"));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big");
    // Three parts (8 + 8 + 4 MiB) above this process's default 16 MiB threshold.
    let body: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &body).unwrap();
    assert_eq!(
        remote.upload("big", &local, None).unwrap(),
        body.len() as u64
    );
    let back = dir.path().join("back");
    assert_eq!(
        remote.download("big", &back).unwrap(),
        Some(body.len() as u64)
    );
    assert!(
        std::fs::read(&back).unwrap() == body,
        "the object equals the file"
    );
}

#[test]
fn a_range_reader_reads_an_object_span_in_bounded_gets() {
    use std::io::Read;
    let (endpoint, bucket) = bucket("ranges");
    let remote = reader_remote(&endpoint, &format!("s3://{bucket}/r"));
    let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    remote.put_overwrite("obj", &body).unwrap();
    let mut out = Vec::new();
    remote
        .range_reader("obj", 5..990)
        .with_chunk(7)
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, &body[5..990]);
    let err = remote
        .range_reader("missing", 0..10)
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("s3://"), "{err}");
}

/// Write once on object storage, append mode: each batch of an unpartitioned table is
/// uploaded as a data file as it is (the checked local copy of the staged file), and the
/// table holds every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_into_an_s3_table_uploads_each_batch_as_a_data_file() {
    let (endpoint, bucket) = bucket("append");
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("pipeline.toml");
    let table = format!("s3://{bucket}/lake/events");
    std::fs::write(
        &spec_path,
        format!(
            r#"name = "s3_append"
state_dir = "{state}"
[source]
kind = "parquet"
path = "{src}"
cursor = "updated_at"
[target]
kind = "delta"
mode = "append"
key = ["order_id"]
path = "{table}"
storage_options = {{ aws_endpoint = "{endpoint}", aws_allow_http = "true", aws_region = "us-east-1" }}
"#,
            state = dir.path().join("state").display(),
            src = dir.path().join("src").display(),
        ),
    )
    .unwrap();
    let spec = tidemark::spec::load(&spec_path).unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let q = queue("s3_append");
    let scratch = tempfile::tempdir().unwrap();
    let worker = CrashingWorkers::start(
        &q,
        "",
        &worker_env_without_endpoint(&endpoint, scratch.path()),
    );
    let first = orders(1, 30, BASE_US, "new");
    let second = orders(31, 30, BASE_US + 3_600_000_000, "new");
    for (n, rows) in [&first, &second].into_iter().enumerate() {
        write_orders(&dir.path().join(format!("src/part-{n:05}.parquet")), rows).unwrap();
        let out = tidemark_run(&spec_path, &q);
        assert!(out.status.success(), "run {n}: {out:?}");
        let adds = committed_adds(&endpoint, &table, n as u64 + 1);
        assert_eq!(adds.len(), 1, "the batch, one file: {adds:?}");
        assert!(
            !adds[0].contains('/') && !adds[0].ends_with(".snappy.parquet"),
            "{adds:?}"
        );
    }
    let mut reader = spec.clone();
    reader.target.storage_options = reader_options(&endpoint);
    tidemark::storage::use_spec_options(&reader);
    let rows = read_orders_table(&table).await.unwrap();
    assert!(table_matches(&rows, &newest_per_key(&[first, second])));
    worker.stop();
}
