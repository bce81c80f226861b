//! The partitioned Parquet target (`kind = "parquet"`, partition overwrite): incremental
//! rounds through Temporal against an oracle, promote twice, a promote interrupted between
//! partition swaps and rolled forward, and a reader polling during promotes.

#![allow(clippy::result_large_err)] // the engine's error type, as the library returns it

use crate::harness::{no_leftovers, queue, run, settings, with_worker};
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tidemark::client;
use tidemark::demo::{BASE_US, Order, newest_per_key, write_orders};
use tidemark::run_steps;
use tidemark::target::parquet;
use tidemark::workflows::payloads::{CommitInput, RunIdentity};
use tidemark::workflows::spec::PipelineSpec;

const DAY_US: i64 = 86_400_000_000;

/// A daily pipeline: cursor `order_date`, one day of lookback, partitions by `order_date`.
struct Daily {
    _dir: tempfile::TempDir,
    spec: PipelineSpec,
    files: Vec<Vec<Order>>,
}

impl Daily {
    fn new(name: &str, lookback: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "name = \"{name}\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"order_date\"\nlookback = \"{lookback}\"\n\
             [target]\nkind = \"parquet\"\npath = \"lake/orders\"\nmode = \"partition_overwrite\"\nkey = [\"order_id\"]\npartition_by = [\"order_date\"]\n"
        );
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).expect("write spec");
        let spec = tidemark::spec::load(&path).expect("spec loads");
        Daily {
            _dir: dir,
            spec,
            files: Vec::new(),
        }
    }

    fn add_file(&mut self, orders: Vec<Order>) {
        let path = PathBuf::from(&self.spec.source.path)
            .join(format!("part-{:05}.parquet", self.files.len()));
        write_orders(&path, &orders).expect("write source file");
        self.files.push(orders);
    }

    /// `order_id -> (updated_at, status)` of the dataset, failing on a duplicate key.
    fn dataset(&self) -> BTreeMap<i64, (i64, String)> {
        read_dataset(&self.spec.target.path)
    }

    fn model(&self) -> BTreeMap<i64, (i64, String)> {
        newest_per_key(&self.files)
            .into_iter()
            .map(|(k, o)| (k, (o.updated_at_us, o.status)))
            .collect()
    }

    fn commit_input(
        &self,
        manifest: tidemark::workflows::payloads::ProcessManifest,
    ) -> CommitInput {
        CommitInput {
            spec: self.spec.clone(),
            run: RunIdentity {
                workflow_id: "test".into(),
                run_id: "test".into(),
                started_at_ms: 0,
            },
            manifest,
        }
    }
}

fn read_dataset(path: &str) -> BTreeMap<i64, (i64, String)> {
    let df = parquet::read_all(path).expect("read dataset");
    let mut out = BTreeMap::new();
    if df.height() == 0 {
        return out;
    }
    let ids = df.column("order_id").unwrap().i64().unwrap().clone();
    let ts = df
        .column("updated_at")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap();
    let ts = ts.i64().unwrap();
    let st = df.column("status").unwrap().str().unwrap().clone();
    for i in 0..df.height() {
        let id = ids.get(i).unwrap();
        let row = (ts.get(i).unwrap(), st.get(i).unwrap().to_string());
        assert!(
            out.insert(id, row).is_none(),
            "duplicate key {id} in {path}"
        );
    }
    out
}

/// Orders `first..first+n` dated `day` (days after BASE_US's day).
fn day_orders(day: i64, first: i64, n: i64, status: &str) -> Vec<Order> {
    (0..n)
        .map(|i| Order::new(first + i, status, BASE_US + day * DAY_US + i * 1_000_000))
        .collect()
}

fn partitions(dataset: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dataset)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daily_rounds_through_temporal_replace_partitions_and_match_the_oracle() {
    let mut p = Daily::new("pq-rounds", "1d");
    let q = queue("pq-rounds");
    let spec = p.spec.clone();
    // Round 1: three days.
    p.add_file(
        [
            day_orders(0, 1, 4, "new"),
            day_orders(1, 100, 3, "new"),
            day_orders(2, 200, 2, "new"),
        ]
        .concat(),
    );
    let r1 = with_worker(&q, run(&spec, &q)).await.expect("round 1");
    assert_eq!(r1.progress.run_seq, Some(1));
    assert_eq!(p.dataset(), p.model());
    assert_eq!(partitions(&spec.target.path).len(), 3);

    // Round 2: late rows for day 2 (inside the lookback), an update of a day-2 order, day 3.
    let updated =
        Order::new(200, "new", BASE_US + 2 * DAY_US).version("paid", BASE_US + 2 * DAY_US + 50);
    p.add_file(
        [
            day_orders(2, 210, 2, "new"),
            vec![updated],
            day_orders(3, 300, 5, "new"),
        ]
        .concat(),
    );
    let r2 = with_worker(&q, run(&spec, &q)).await.expect("round 2");
    assert_eq!(r2.progress.run_seq, Some(2));
    assert_eq!(
        p.dataset(),
        p.model(),
        "late day-2 rows and the update are in"
    );

    // Round 3: nothing new but a re-read of the lookback, then day 4.
    p.add_file(day_orders(4, 400, 3, "new"));
    let r3 = with_worker(&q, run(&spec, &q)).await.expect("round 3");
    assert_eq!(r3.progress.run_seq, Some(3));
    assert_eq!(p.dataset(), p.model());
    assert_eq!(partitions(&spec.target.path).len(), 5);
    let wm = tidemark::state::open(&spec)
        .unwrap()
        .read_watermark()
        .unwrap()
        .unwrap();
    assert_eq!(wm.run_seq, 3);
    assert_eq!(
        wm.value,
        Some((BASE_US.div_euclid(DAY_US) + 4) * DAY_US),
        "the watermark is the newest day committed"
    );
    let side = parquet::sidecar(&spec.target.path);
    assert!(no_leftovers(&side), "staging removed after the runs");
    // Readers see plain hive layout: nothing but partition directories in the dataset.
    assert!(
        partitions(&spec.target.path)
            .iter()
            .all(|d| d.starts_with("order_date="))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_twice_and_an_interrupted_promote_roll_forward_to_the_same_dataset() {
    let mut p = Daily::new("pq-steps", "1d");
    p.add_file([day_orders(0, 1, 3, "new"), day_orders(1, 10, 3, "new")].concat());
    // Run 1, promoted twice: the second is a no-op with the recorded row count.
    let input = p.commit_input(run_steps::process(p.spec.clone()).await.unwrap());
    run_steps::stage(input.clone()).await.unwrap();
    let first = run_steps::promote(input.clone()).await.unwrap();
    assert!(!first.already_promoted);
    assert_eq!(first.rows_inserted, 6);
    let files_before = list_files(Path::new(&p.spec.target.path));
    let second = run_steps::promote(input.clone()).await.unwrap();
    assert!(second.already_promoted);
    assert_eq!(second.rows_inserted, first.rows_inserted);
    assert_eq!(list_files(Path::new(&p.spec.target.path)), files_before);
    run_steps::update_watermark(tidemark::workflows::payloads::WatermarkInput {
        commit: input.clone(),
        promote: Some(second),
        stage_ms: 0,
    })
    .await
    .unwrap();
    assert_eq!(p.dataset(), p.model());

    // Run 2 rewrites days 1 and 2 and is interrupted after its first partition swap.
    p.add_file([day_orders(1, 20, 2, "new"), day_orders(2, 30, 2, "new")].concat());
    let input2 = p.commit_input(run_steps::process(p.spec.clone()).await.unwrap());
    assert_eq!(input2.manifest.run_seq, 2);
    run_steps::stage(input2.clone()).await.unwrap();
    let wm = std::fs::read_to_string(&input2.manifest.next_watermark_path).unwrap();
    let no_restage = || -> tidemark::error::Result<()> { Ok(()) };
    parquet::promote_until(
        &p.spec.target.path,
        &p.spec.name,
        2,
        &wm,
        &no_restage,
        Some(1),
    )
    .unwrap();
    assert_ne!(
        p.dataset(),
        p.model(),
        "half published: day 2 is not live yet"
    );
    // A retry of stage (must not undo the swap) then promote rolls forward.
    run_steps::stage(input2.clone()).await.unwrap();
    let retried = run_steps::promote(input2.clone()).await.unwrap();
    assert!(!retried.already_promoted);
    assert_eq!(p.dataset(), p.model());

    // Run 3 is interrupted after its journal (no swap), and its workflow gives up: the next
    // run's reconcile rolls it forward and installs its watermark.
    p.add_file(day_orders(2, 40, 2, "new"));
    let input3 = p.commit_input(run_steps::process(p.spec.clone()).await.unwrap());
    assert_eq!(
        input3.manifest.run_seq, 3,
        "run 2's watermark was reconciled"
    );
    run_steps::stage(input3.clone()).await.unwrap();
    let wm3 = std::fs::read_to_string(&input3.manifest.next_watermark_path).unwrap();
    parquet::promote_until(
        &p.spec.target.path,
        &p.spec.name,
        3,
        &wm3,
        &no_restage,
        Some(0),
    )
    .unwrap();
    run_steps::record_failure(tidemark::workflows::payloads::FailureInput {
        spec: p.spec.clone(),
        run: input3.run.clone(),
        run_seq: Some(3),
        phase: tidemark::workflows::payloads::Phase::Promote,
        message: "gave up".into(),
    })
    .await
    .unwrap();
    let next = run_steps::process(p.spec.clone()).await.unwrap();
    assert_eq!(next.run_seq, 4, "run 3 was committed by the roll-forward");
    assert_eq!(p.dataset(), p.model());
    let stored = tidemark::state::open(&p.spec)
        .unwrap()
        .read_watermark()
        .unwrap()
        .unwrap();
    assert_eq!(stored.run_seq, 3);
    assert_eq!(
        stored.value,
        Some((BASE_US.div_euclid(DAY_US) + 2) * DAY_US)
    );
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(list_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_polling_during_promotes_never_sees_a_partition_missing_or_partial() {
    let mut p = Daily::new("pq-reader", "7d");
    const DAYS: i64 = 4;
    const PER_DAY: i64 = 50;
    let all = |status: &str, ts_shift: i64| -> Vec<Order> {
        (0..DAYS)
            .flat_map(|d| {
                (0..PER_DAY)
                    .map(move |i| d * 1000 + i)
                    .map(move |id| (d, id))
            })
            .map(|(d, id)| Order::new(id, status, BASE_US + d * DAY_US + ts_shift + id))
            .collect()
    };
    p.add_file(all("v0", 0));
    let commit = |p: &Daily| {
        let spec = p.spec.clone();
        async move {
            let m = run_steps::process(spec.clone()).await.unwrap();
            let input = CommitInput {
                spec,
                run: RunIdentity {
                    workflow_id: "t".into(),
                    run_id: "t".into(),
                    started_at_ms: 0,
                },
                manifest: m,
            };
            run_steps::stage(input.clone()).await.unwrap();
            let pr = run_steps::promote(input.clone()).await.unwrap();
            run_steps::update_watermark(tidemark::workflows::payloads::WatermarkInput {
                commit: input,
                promote: Some(pr),
                stage_ms: 0,
            })
            .await
            .unwrap();
        }
    };
    commit(&p).await;
    let expected: Vec<String> = partitions(&p.spec.target.path);
    assert_eq!(expected.len(), DAYS as usize);

    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, polls) = (stop.clone(), polls.clone());
        let root = PathBuf::from(&p.spec.target.path);
        let expected = expected.clone();
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                for part in &expected {
                    let dir = root.join(part);
                    let files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
                        Err(e) => return Err(format!("{part} missing: {e}")),
                    };
                    let data: Vec<&PathBuf> = files
                        .iter()
                        .filter(|f| f.extension().is_some_and(|x| x == "parquet"))
                        .collect();
                    if data.len() != 1 {
                        return Err(format!("{part} holds {} data files: {files:?}", data.len()));
                    }
                    // The file may be swapped away between the listing and the open: that is
                    // a replaced partition, not a missing one. An opened file is complete.
                    if let Ok(f) = std::fs::File::open(data[0]) {
                        let df = ParquetReader::new(f)
                            .finish()
                            .map_err(|e| format!("{part}: partial file: {e}"))?;
                        if df.height() != PER_DAY as usize {
                            return Err(format!("{part}: {} rows", df.height()));
                        }
                    }
                }
                polls.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    // Every round rewrites every partition (the lookback covers them all).
    for round in 1..=6 {
        p.add_file(all(&format!("v{round}"), round));
        commit(&p).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .unwrap()
        .expect("the reader saw every partition whole");
    assert!(polls.load(Ordering::Relaxed) > 0);
    assert_eq!(p.dataset(), p.model());
    assert!(p.dataset().values().all(|(_, s)| s == "v6"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_a_rewritten_partition_keeps_the_rows_the_batch_does_not_carry() {
    // Cursor `updated_at`, partitions by `order_date`: a run's batch holds only the changed
    // orders of a day; the rewritten day must keep the others (newest version per key).
    let dir = tempfile::tempdir().unwrap();
    let text = "name = \"pq-merge\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n\
                [target]\nkind = \"parquet\"\npath = \"lake/orders\"\nkey = [\"order_id\"]\npartition_by = [\"order_date\"]\n";
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let spec = tidemark::spec::load(&dir.path().join("p.toml")).unwrap();
    let src = PathBuf::from(&spec.source.path);
    let first = [day_orders(0, 1, 3, "new"), day_orders(1, 10, 2, "new")].concat();
    write_orders(&src.join("part-00000.parquet"), &first).unwrap();
    let q = queue("pq-merge");
    with_worker(&q, run(&spec, &q)).await.expect("round 1");
    // Round 2: order 2 (day 0) changes two days later; an older version of order 10 loses.
    let second = vec![
        first[1].version("paid", BASE_US + 2 * DAY_US),
        first[3].version("stale", BASE_US - DAY_US),
    ];
    write_orders(&src.join("part-00001.parquet"), &second).unwrap();
    let r2 = with_worker(&q, run(&spec, &q)).await.expect("round 2");
    let model: BTreeMap<i64, (i64, String)> = newest_per_key(&[first, second])
        .into_iter()
        .map(|(k, o)| (k, (o.updated_at_us, o.status)))
        .collect();
    assert_eq!(read_dataset(&spec.target.path), model);
    assert_eq!(read_dataset(&spec.target.path)[&2].1, "paid");
    assert_eq!(r2.progress.run_seq, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_loads_past_days_beside_the_live_pipeline() {
    let mut p = Daily::new("bf_parquet", "0s");
    for day in 0..6 {
        p.add_file(day_orders(day, day * 10, 4, "paid"));
    }
    // The live pipeline starts at day 4; days 0–3 are backfilled.
    p.spec.source.initial = Some("2026-01-05".into());
    let q = queue("bf_parquet");
    with_worker(&q, async {
        let s = run(&p.spec, &q).await.expect("live run");
        assert_eq!(s.progress.rows_extracted, 8);
        let live_mark = tidemark::state::open(&p.spec)
            .unwrap()
            .read_watermark()
            .unwrap();
        let c = client::connect(&settings()).await.unwrap();
        let windows = tidemark::backfill::windows(
            tidemark::workflows::cursor::CursorType::Timestamp,
            "2026-01-01",
            "2026-01-05",
            "1d",
        )
        .unwrap();
        let input = tidemark::workflows::payloads::BackfillInput {
            spec: p.spec.clone(),
            windows,
            parallel: 2,
            options: Default::default(),
        };
        let (h, _) = client::start_backfill(&c, input, &q, false).await.unwrap();
        let result = h.get_result(Default::default()).await.unwrap();
        assert_eq!((result.done, result.rows_promoted), (4, 16), "{result:?}");
        assert_eq!(p.dataset(), p.model(), "every day once, no duplicate key");
        let after = tidemark::state::open(&p.spec)
            .unwrap()
            .read_watermark()
            .unwrap();
        assert_eq!(after, live_mark, "the live watermark did not move");
        // The next live run goes on from its own watermark, beside the backfilled days.
        run(&p.spec, &q).await.expect("next live run");
        assert_eq!(p.dataset(), p.model());
    })
    .await;
}
