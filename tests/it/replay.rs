//! Determinism: recorded workflow histories replay against the current `IncrementalRun`
//! code (the SDK's workflow replayer), so a change that would break running workflows fails
//! here. Histories of fresh runs (success, empty, failure, and a run with every step a
//! regular activity) replay too. `tests/histories/regular-*.json` were recorded before local
//! activities (no patch marker: they replay the all-regular path); `local-steps-1-*.json` by the
//! code that added the `tidemark-local-steps-1` patch (one batch per run, no catch-up marker);
//! `catch-up-1-*.json` by the code that added the `tidemark-catch-up-1` patch (a run in
//! batches among them).
//! Set `TIDEMARK_RECORD_HISTORIES=1` to record the fresh ones as `catch-up-1-*.json` (the
//! older ones are history: never re-record them).

use crate::harness::{Pipeline, queue, run, settings, with_worker};
use std::path::PathBuf;
use temporalio_client::{WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
use tidemark::demo::{BASE_US, Order, write_orders};
use tidemark::workflows::{IncrementalRun, run_workflow_id};

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

fn replayer() -> WorkflowReplayer {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<IncrementalRun>()
        .expect("register the workflow")
        .build();
    WorkflowReplayer::new(options).expect("replayer")
}

async fn history_json(pipeline: &str) -> Vec<u8> {
    let client = tidemark::client::connect(&settings()).await.unwrap();
    client
        .get_workflow_handle::<IncrementalRun>(run_workflow_id(pipeline))
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("history as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_histories_replay_against_the_current_workflow() {
    let q = queue("replay");
    let ok = Pipeline::new("replay_ok", "", "");
    let empty = Pipeline::new("replay_empty", "", "");
    let failed = Pipeline::new("replay_failed", "", "");
    let off = Pipeline::new(
        "replay_off",
        "",
        "[execution]\nlocal_activities = \"off\"\n",
    );
    let batches = Pipeline::new("replay_batches", "max_batch_rows = 1", "");
    write_orders(
        &batches.source_file(0),
        &(1..=3)
            .map(|i| Order::new(i, "new", BASE_US + i))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    write_orders(&off.source_file(0), &[Order::new(1, "new", BASE_US)]).unwrap();
    write_orders(
        &ok.source_file(0),
        &[
            Order::new(1, "new", BASE_US),
            Order::new(2, "new", BASE_US + 1),
        ],
    )
    .unwrap();
    write_orders(&empty.source_file(0), &[Order::new(1, "new", BASE_US)]).unwrap();
    std::fs::create_dir_all(&failed.spec.source.path).unwrap();
    std::fs::write(failed.source_file(0), b"not parquet").unwrap();
    with_worker(&q, async {
        run(&ok.spec, &q).await.unwrap();
        run(&empty.spec, &q).await.unwrap();
        run(&empty.spec, &q).await.unwrap(); // the second run of `empty` has no new rows
        run(&failed.spec, &q).await.unwrap_err();
        run(&off.spec, &q).await.unwrap();
        let s = run(&batches.spec, &q).await.unwrap();
        assert_eq!(s.progress.batches.len(), 3, "{:?}", s.progress);
    })
    .await;
    let record = std::env::var_os("TIDEMARK_RECORD_HISTORIES").is_some();
    for (name, file) in [
        ("replay_ok", "success"),
        ("replay_empty", "empty"),
        ("replay_failed", "failure"),
        ("replay_off", "off"),
        ("replay_batches", "batches"),
    ] {
        let json = history_json(name).await;
        if record {
            std::fs::create_dir_all(histories_dir()).unwrap();
            let path = histories_dir().join(format!("catch-up-1-{file}.json"));
            std::fs::write(path, &json).unwrap();
        }
        let history = WorkflowHistory::from_json(&json).unwrap();
        replayer()
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{name} does not replay: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_histories_still_replay() {
    let mut n = 0;
    for entry in std::fs::read_dir(histories_dir()).expect("tests/histories exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let history = WorkflowHistory::from_json(&std::fs::read(&path).unwrap()).unwrap();
        replayer()
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{} no longer replays: {e}", path.display()));
        n += 1;
    }
    assert!(
        n >= 12,
        "expected recorded histories in {}",
        histories_dir().display()
    );
}
