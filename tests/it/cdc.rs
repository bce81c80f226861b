//! Change-event pipelines (`debezium-jsonl`) against oracles: the simulated captured table's
//! true state after its changes. Delta and PostgreSQL targets; runs through Temporal and
//! through the run steps (to place a crash between promote and the watermark update).

use crate::harness::{pg_client, pg_url, queue, run, with_worker};
use std::path::PathBuf;
use tidemark::cdc::sim::{Rows, SimTable, random_stream};
use tidemark::run_steps;
use tidemark::workflows::payloads::{
    CommitInput, ProcessManifest, PromoteOutput, RunIdentity, WatermarkInput,
};
use tidemark::workflows::spec::PipelineSpec;

/// A debezium-jsonl pipeline in a temporary directory.
pub struct CdcPipe {
    /// Keeps the directory alive.
    pub _dir: tempfile::TempDir,
    /// The loaded spec.
    pub spec: PipelineSpec,
    /// PostgreSQL target table (schema-qualified), if any.
    pub pg_table: Option<String>,
}

impl CdcPipe {
    /// `target` is `delta` or `postgres`; `source`/`target_extra` are extra lines.
    pub fn new(name: &str, target: &str, source: &str, target_extra: &str) -> Self {
        Self::with_source(
            name,
            target,
            &format!("kind = \"debezium-jsonl\"\npath = \"events\"\n{source}"),
            target_extra,
        )
    }

    /// A pipeline whose [source] starts with `source` (kind and its keys).
    pub fn with_source(name: &str, target: &str, source: &str, target_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (target_lines, pg_table) = if target == "postgres" {
            let table = format!(
                "it_{}_{}.orders",
                name.replace('-', "_"),
                std::process::id()
            );
            (
                format!(
                    "kind = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"\n",
                    pg_url()
                ),
                Some(table),
            )
        } else {
            (
                "kind = \"delta\"\npath = \"lake/orders\"\n".to_string(),
                None,
            )
        };
        let text = format!(
            "name = \"{name}\"\n[source]\n{source}\nkey = [\"order_id\"]\n\
             types = {{ updated_at = \"timestamp\" }}\n[target]\n{target_lines}{target_extra}\n"
        );
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).expect("write spec");
        std::fs::create_dir_all(dir.path().join("events")).unwrap();
        let spec = tidemark::spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        CdcPipe {
            _dir: dir,
            spec,
            pg_table,
        }
    }

    /// Appends event lines to `events/<file>`.
    pub fn append(&self, file: &str, lines: &[String]) {
        use std::io::Write;
        let path = self.events().join(file);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn events(&self) -> PathBuf {
        PathBuf::from(&self.spec.source.path)
    }

    /// The target's rows (without tidemark's columns); panics on a duplicate key.
    pub async fn table(&self) -> Rows {
        match &self.pg_table {
            None => tidemark::demo::read_orders_table(&self.spec.target.path)
                .await
                .expect("read the table")
                .into_iter()
                .collect(),
            Some(t) => {
                let c = pg_client().await;
                let exists: bool = c
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[t])
                    .await
                    .unwrap()
                    .get(0);
                if !exists {
                    return Rows::new();
                }
                let rows = c
                    .query(
                        &format!(
                            "SELECT order_id, (extract(epoch from updated_at) * 1000000)::bigint, status FROM {t}"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
                let mut out = Rows::new();
                for r in rows {
                    let id: i64 = r.get(0);
                    assert!(
                        out.insert(id, (r.get(1), r.get(2))).is_none(),
                        "duplicate key {id}"
                    );
                }
                out
            }
        }
    }
}

fn identity() -> RunIdentity {
    RunIdentity {
        workflow_id: "steps".into(),
        run_id: "steps".into(),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// process, stage, promote — a run stopped just before its watermark update.
pub async fn promote_only(spec: &PipelineSpec) -> (CommitInput, Option<PromoteOutput>) {
    let manifest: ProcessManifest = run_steps::process(spec.clone()).await.expect("process");
    let input = CommitInput {
        spec: spec.clone(),
        run: identity(),
        manifest,
    };
    if !input.manifest.has_rows() {
        return (input, None);
    }
    run_steps::stage(input.clone()).await.expect("stage");
    let p = run_steps::promote(input.clone()).await.expect("promote");
    (input, Some(p))
}

/// One whole run through the steps; returns its manifest.
pub async fn run_steps_once(spec: &PipelineSpec) -> (ProcessManifest, Option<PromoteOutput>) {
    let (input, p) = promote_only(spec).await;
    run_steps::update_watermark(WatermarkInput {
        commit: input.clone(),
        promote: p.clone(),
        stage_ms: 0,
    })
    .await
    .expect("update_watermark");
    (input.manifest, p)
}

/// Runs until a run reads no event; returns the number of runs that read some.
pub async fn drain(spec: &PipelineSpec) -> usize {
    for n in 0..100 {
        let (m, _) = run_steps_once(spec).await;
        if m.rows_extracted == 0 {
            return n;
        }
    }
    panic!("the stream never drained")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_stream_into_delta_equals_the_captured_table_through_temporal() {
    let p = CdcPipe::new("cdc-delta", "delta", "max_events = 90", "");
    let mut sim = SimTable::new(true, false);
    // Snapshot: 40 rows read at one position, then the stream over 80 keys in three files.
    let snap: Vec<String> = (0..40)
        .map(|i| sim.snapshot_read(i, "new", 1_767_225_600_000_000 + i, 1000))
        .collect();
    p.append("0-snapshot.jsonl", &snap);
    let s1 = random_stream(&mut sim, 1, 150, 80);
    p.append("1-stream.jsonl", &s1);
    let total_events = snap.len() + s1.len();
    let q = queue("cdc-delta");
    let batches = with_worker(&q, async {
        let (mut runs, mut batches) = (0, Vec::new());
        loop {
            let s = run(&p.spec, &q).await.expect("run succeeds");
            if s.progress.rows_extracted == 0 {
                break;
            }
            runs += 1;
            batches.push(s.progress.batches.len().max(1));
            assert!(runs < 20, "runs never end");
            if runs == 1 {
                // More changes arrive between runs, in a new file and at the end of an old one.
                let s2 = random_stream(&mut sim, 2, 120, 80);
                p.append("2-stream.jsonl", &s2);
            }
        }
        batches
    })
    .await;
    // 190 events at 90 per batch: the first run takes three batches, one after the other.
    assert_eq!(batches.len(), 2, "two runs read events ({batches:?})");
    assert!(
        batches[0] >= 3,
        "max_events = 90 bounds each batch ({batches:?})"
    );
    assert_eq!(p.table().await, sim.rows, "target = the captured table");
    let entries = tidemark::state::open(&p.spec)
        .unwrap()
        .read_ledger()
        .unwrap();
    let events: u64 = entries
        .iter()
        .filter_map(|e| e.cdc.as_ref())
        .map(|c| c.events)
        .sum();
    assert!(
        events as usize > total_events,
        "every event was read once: {events}"
    );
    let wm = tidemark::state::open(&p.spec)
        .unwrap()
        .read_watermark()
        .unwrap()
        .unwrap();
    assert_eq!(wm.cdc_order.as_deref(), Some("lsn"));
    assert!(wm.value.is_some(), "the watermark is the newest ts_ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_duplicates_and_a_crash_after_the_commit_change_nothing() {
    for target in ["delta", "postgres"] {
        let p = CdcPipe::new(
            &format!("cdc-replay-{target}"),
            target,
            "max_events = 50",
            "",
        );
        let mut sim = SimTable::new(true, false);
        let lines = random_stream(&mut sim, 7, 80, 30);
        p.append("a.jsonl", &lines[..50]);
        // Run 1 commits, then "crashes" before its watermark update.
        let (input, promoted) = promote_only(&p.spec).await;
        assert!(promoted.is_some());
        // The same batch promoted again writes nothing.
        let again = run_steps::promote(input.clone()).await.unwrap();
        assert!(
            again.already_promoted,
            "{target}: second promote is a no-op"
        );
        // The next run reconciles the positions from the commit: it starts after event 50.
        p.append("a.jsonl", &lines[50..]);
        let (m, _) = run_steps_once(&p.spec).await;
        assert_eq!(m.run_seq, 2, "{target}");
        assert_eq!(
            m.rows_extracted as usize,
            lines.len() - 50,
            "{target}: resumes after the committed events, none twice"
        );
        assert_eq!(p.table().await, sim.rows, "{target}");
        // The whole stream delivered again in one batch (a producer re-sending it): no-ops.
        p.append("b.jsonl", &lines);
        let mut whole = p.spec.clone();
        whole.source.cdc.as_mut().unwrap().max_events = 1000;
        let (m, promoted) = run_steps_once(&whole).await;
        assert_eq!(m.rows_extracted as usize, lines.len());
        assert_eq!(
            p.table().await,
            sim.rows,
            "{target}: redelivery changes nothing"
        );
        let p = promoted.unwrap_or_default();
        assert_eq!(
            p.rows_inserted + p.rows_updated + p.rows_deleted,
            0,
            "{target}: {p:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncates_tombstones_and_older_events_apply_in_position_order() {
    for target in ["delta", "postgres"] {
        let p = CdcPipe::new(&format!("cdc-order-{target}"), target, "", "");
        let mut sim = SimTable::new(true, true);
        let mut lines: Vec<String> = (1..=5).map(|i| sim.upsert(i, "new", i)).collect();
        lines.push(sim.delete(2).unwrap());
        lines.push("null".into()); // tombstone after the delete
        p.append("a.jsonl", &lines);
        drain(&p.spec).await;
        assert_eq!(
            p.table().await,
            sim.rows,
            "{target}: deletes and tombstones"
        );
        // An older change delivered late never overwrites the newer row.
        let newer = sim.upsert(1, "shipped", 100);
        let mut stale = SimTable::new(true, true);
        let older = stale.upsert(1, "stale", 50); // lsn below every later change
        p.append("a.jsonl", &[newer]);
        drain(&p.spec).await;
        p.append("a.jsonl", &[older]);
        drain(&p.spec).await;
        assert_eq!(
            p.table().await,
            sim.rows,
            "{target}: the older change is a no-op"
        );
        // Truncate then a new row, in one batch: only the new row remains.
        let t = sim.truncate();
        let c = sim.upsert(9, "new", 200);
        p.append("a.jsonl", &[t, c]);
        drain(&p.spec).await;
        assert_eq!(p.table().await, sim.rows, "{target}: truncate + insert");
        // A truncate alone empties the table in its own commit.
        let t = sim.truncate();
        p.append("a.jsonl", &[t]);
        let (m, promoted) = run_steps_once(&p.spec).await;
        assert!(m.cdc.as_ref().unwrap().truncate && m.batch.is_none());
        assert!(promoted.unwrap().rows_deleted == 1, "{target}");
        assert!(p.table().await.is_empty(), "{target}: truncated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_fail_the_run_or_go_to_the_dead_letter_file() {
    let good = |sim: &mut SimTable, i| sim.upsert(i, "new", i);
    // Default policy: the run fails naming the line, nothing changes.
    let p = CdcPipe::new("cdc-bad-fail", "delta", "", "");
    let mut sim = SimTable::new(true, false);
    let l1 = good(&mut sim, 1);
    p.append("a.jsonl", &[l1, "{not json".into()]);
    let err = run_steps::process(p.spec.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("a.jsonl line 2") && msg.contains("bad JSON") && !err.is_retryable(),
        "{msg}"
    );
    assert!(p.table().await.is_empty());
    assert!(
        tidemark::state::open(&p.spec)
            .unwrap()
            .read_watermark()
            .unwrap()
            .is_none()
    );

    // dead_letter: bad events are set aside with their position and reason; the rest applies.
    let p = CdcPipe::new("cdc-bad-dlq", "delta", "on_bad_event = \"dead_letter\"", "");
    let mut sim = SimTable::new(true, false);
    let (l1, l2) = (good(&mut sim, 1), good(&mut sim, 2));
    p.append(
        "a.jsonl",
        &[
            l1,
            "{not json".into(),
            r#"{"op":"x","after":{"order_id":5}}"#.into(),
            r#"{"op":"c","after":{"status":"no key"},"source":{"lsn":1}}"#.into(),
            l2,
        ],
    );
    let (m, _) = run_steps_once(&p.spec).await;
    let stats = m.cdc.unwrap();
    assert_eq!((stats.events, stats.bad_events, stats.upserts), (5, 3, 2));
    let dl = std::fs::read_to_string(stats.dead_letter.unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = dl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["at"], 2);
    assert!(lines[1]["reason"].as_str().unwrap().contains("unknown op"));
    assert!(
        lines[2]["reason"]
            .as_str()
            .unwrap()
            .contains("key column `order_id`")
    );
    assert_eq!(p.table().await, sim.rows);
}

/// (rows, rows marked deleted) of the target.
async fn soft_counts(p: &CdcPipe) -> (i64, i64) {
    match &p.pg_table {
        Some(t) => {
            let r = pg_client()
                .await
                .query_one(
                    &format!("SELECT count(*), count(_tidemark_deleted_at) FROM {t}"),
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        }
        None => {
            let batches = tidemark::target::delta::read_all(&p.spec.target.path)
                .await
                .unwrap();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let nulls: usize = batches
                .iter()
                .map(|b| {
                    b.column_by_name("_tidemark_deleted_at")
                        .unwrap()
                        .null_count()
                })
                .sum();
            (rows as i64, (rows - nulls) as i64)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_the_row_marked_and_its_position() {
    for target in ["delta", "postgres"] {
        let p = CdcPipe::new(
            &format!("cdc-soft-{target}"),
            target,
            "",
            "soft_delete = true",
        );
        let mut sim = SimTable::new(false, false);
        let first = sim.upsert(1, "new", 1);
        p.append("a.jsonl", &[first, sim.upsert(2, "new", 2)]);
        drain(&p.spec).await;
        p.append("a.jsonl", &[sim.delete(1).unwrap()]);
        drain(&p.spec).await;
        assert_eq!(
            soft_counts(&p).await,
            (2, 1),
            "{target}: the deleted row stays, marked"
        );
        // Re-inserting the key clears the mark.
        p.append("a.jsonl", &[sim.upsert(1, "paid", 3)]);
        drain(&p.spec).await;
        assert_eq!(soft_counts(&p).await, (2, 0), "{target}");
        assert_eq!(p.table().await, sim.rows, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_soft_deletes_a_split_redelivery_never_resurrects_a_row() {
    for target in ["delta", "postgres"] {
        let p = CdcPipe::new(
            &format!("cdc-softre-{target}"),
            target,
            "max_events = 7",
            "soft_delete = true",
        );
        let mut sim = SimTable::new(true, false);
        let lines = random_stream(&mut sim, 11, 60, 12);
        p.append("a.jsonl", &lines);
        drain(&p.spec).await;
        let after_first = soft_counts(&p).await;
        // The same stream again in small runs: every change is older than or equal to the
        // row's position (deleted rows keep theirs), so nothing changes in any run.
        p.append("b.jsonl", &lines);
        loop {
            let (m, promoted) = run_steps_once(&p.spec).await;
            if m.rows_extracted == 0 {
                break;
            }
            let pr = promoted.unwrap_or_default();
            assert_eq!(
                pr.rows_inserted + pr.rows_updated + pr.rows_deleted,
                0,
                "{target}: {pr:?}"
            );
        }
        assert_eq!(soft_counts(&p).await, after_first, "{target}");
        assert_eq!(
            after_first.0 - after_first.1,
            sim.rows.len() as i64,
            "{target}"
        );
    }
}

/// Found by the chaos harness: a first batch of deletes only (every key it inserted, it also
/// deleted) created the table from key-only before images; later upserts then lacked columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_batch_of_deletes_only_does_not_create_a_narrow_table() {
    for target in ["delta", "postgres"] {
        let p = CdcPipe::new(&format!("cdc-delfirst-{target}"), target, "", "");
        let mut sim = SimTable::new(true, false);
        let lines = vec![sim.upsert(1, "new", 1), sim.delete(1).unwrap()];
        p.append("a.jsonl", &lines);
        let (m, _) = run_steps_once(&p.spec).await;
        assert_eq!(m.cdc.as_ref().unwrap().deletes, 1, "{target}");
        p.append("a.jsonl", &[sim.upsert(2, "paid", 2)]);
        drain(&p.spec).await;
        assert_eq!(p.table().await, sim.rows, "{target}");
    }
}
