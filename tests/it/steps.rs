//! The commit protocol's steps called directly, to replay retries and crashes exactly:
//! promote twice, and a crash between promote and the watermark update.

use crate::harness::{Pipeline, queue, run, with_worker};
use tidemark::demo::{BASE_US, Order, read_orders_table, write_orders};
use tidemark::run_steps;
use tidemark::workflows::payloads::{CommitInput, PromoteOutput, RunIdentity};

/// Writes two orders and runs `process` on them, without Temporal.
async fn first_batch_input(p: &Pipeline) -> CommitInput {
    let orders = [
        Order::new(1, "new", BASE_US),
        Order::new(2, "new", BASE_US + 5),
    ];
    write_orders(&p.source_file(0), &orders).unwrap();
    let manifest = run_steps::process(p.spec.clone()).await.unwrap();
    CommitInput {
        spec: p.spec.clone(),
        run: RunIdentity {
            workflow_id: "test".into(),
            run_id: "test".into(),
            started_at_ms: 0,
        },
        manifest,
    }
}

/// Processes, stages and promotes the pipeline's first batch (two orders).
async fn commit_first_batch(p: &Pipeline) -> (CommitInput, PromoteOutput) {
    let input = first_batch_input(p).await;
    run_steps::stage(input.clone()).await.unwrap();
    let promoted = run_steps::promote(input.clone()).await.unwrap();
    (input, promoted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_called_twice_commits_once_and_returns_the_same_result() {
    let p = Pipeline::new("twice", "", "");
    let (input, first) = commit_first_batch(&p).await;
    assert!(!first.already_promoted);
    let v = p.table_version().await;
    // A retry after a crash that lost the first result: re-stage and promote again.
    run_steps::stage(input.clone()).await.unwrap();
    let second = run_steps::promote(input).await.unwrap();
    assert!(second.already_promoted);
    assert_eq!(second.target_version, first.target_version);
    assert_eq!(second.rows_inserted, first.rows_inserted);
    assert_eq!(
        p.table_version().await,
        v,
        "the second promote wrote nothing"
    );
    assert_eq!(
        read_orders_table(&p.spec.target.path).await.unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_promote_and_watermark_update_is_reconciled_from_the_commit() {
    let p = Pipeline::new("reconcile", "", "");
    commit_first_batch(&p).await;
    // The worker dies here: the store never hears of run 1.
    assert_eq!(p.watermark(), None);

    write_orders(&p.source_file(1), &[Order::new(3, "new", BASE_US + 10)]).unwrap();
    let q = queue("reconcile");
    let s = with_worker(&q, run(&p.spec, &q))
        .await
        .expect("next run succeeds");
    assert_eq!(
        s.progress.run_seq,
        Some(2),
        "run 1 was recognised as committed"
    );
    assert_eq!(
        s.progress.watermark_before,
        Some(BASE_US + 5),
        "reconciled from the Delta commit metadata"
    );
    assert_eq!(p.watermark(), Some(BASE_US + 10));
    let w = p.state().read_watermark().unwrap().unwrap();
    assert_eq!(w.run_seq, 2);
    let runs = p.state().read_ledger().unwrap();
    assert!(
        runs.iter()
            .any(|r| r.status == "reconciled" && r.run_seq == Some(1))
    );
    assert_eq!(
        read_orders_table(&p.spec.target.path).await.unwrap().len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_backfills_a_committed_run_missing_from_the_ledger() {
    let p = Pipeline::new("backfill_ledger", "", "");
    let (input, promoted) = commit_first_batch(&p).await;
    run_steps::update_watermark(tidemark::workflows::payloads::WatermarkInput {
        commit: input,
        promote: Some(promoted.clone()),
        stage_ms: 0,
    })
    .await
    .unwrap();
    // The store is current, but the ledger lost the run (say, an interleaving of crashes).
    std::fs::remove_file(
        tidemark::state::LocalStore::at(&p.spec.state_dir, &p.spec.name).ledger_path(),
    )
    .unwrap();
    let stored = run_steps::reconcile(&p.spec).await.unwrap().unwrap();
    assert_eq!(stored.run_seq, 1, "the store is left as it was");
    let runs = p.state().read_ledger().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].run_seq),
        ("reconciled", Some(1))
    );
    assert_eq!(runs[0].target_version, promoted.target_version);
    // Idempotent: a second reconcile adds nothing.
    run_steps::reconcile(&p.spec).await.unwrap();
    assert_eq!(p.state().read_ledger().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_restages_a_vanished_staged_batch_instead_of_committing_nothing() {
    let p = Pipeline::new("vanished_staging", "", "");
    let input = first_batch_input(&p).await;
    run_steps::stage(input.clone()).await.unwrap();
    // Another attempt of this run (say, a zombie) removed the staging area.
    let staging = tidemark::target::delta::staging_dir(&p.spec.target.path, &p.spec.name, 1);
    std::fs::remove_dir_all(&staging).unwrap();
    let out = run_steps::promote(input).await.unwrap();
    assert_eq!(
        out.rows_inserted, 2,
        "the batch was staged again and committed"
    );
    assert_eq!(
        read_orders_table(&p.spec.target.path).await.unwrap().len(),
        2
    );
}
