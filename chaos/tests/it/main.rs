//! The bounded chaos suite that CI runs, and the harness's self-test.
//!
//! Invariant under test, for every case: after every round the target equals the model
//! (no lost row, no duplicate key, no stale version), the watermark equals the committed
//! high mark and never moved backwards, every run reached a terminal state, no staging or
//! temp file is left, and the ledger agrees with the target's commits.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tidemark::crash::POINTS;
use tidemark_chaos::case::{
    Case, Mode, Target, cases, sweep_case, sweep_case_batches, sweep_case_dv, sweep_case_maintain,
    sweep_case_region, sweep_case_regular, sweep_case_schema, sweep_case_second_round,
};
use tidemark_chaos::fleet::Fleet;
use tidemark_chaos::runner::run_case;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The targets and modes every crash point is swept on. The S3 ones keep the table and
/// `state_dir` on the S3 server, with workers on private directories.
const SWEPT: [(Target, Mode); 9] = [
    (Target::Delta, Mode::Merge),
    (Target::Delta, Mode::Append),
    (Target::Parquet, Mode::PartitionOverwrite),
    (Target::Postgres, Mode::Merge),
    (Target::Delta, Mode::Cdc),
    (Target::Postgres, Mode::Cdc),
    (Target::DeltaS3, Mode::Merge),
    (Target::DeltaS3, Mode::Append),
    (Target::DeltaS3, Mode::Cdc),
];

async fn must_pass(
    fleet: &mut Fleet,
    case: &Case,
    dir: &std::path::Path,
    label: &str,
) -> tidemark_chaos::runner::CaseReport {
    let r = run_case(fleet, case, dir)
        .await
        .expect("the harness runs the case");
    assert!(
        r.violations.is_empty(),
        "{label}: violations {:#?}\nREPRO tidemark-chaos --replay '{}'",
        r.violations,
        serde_json::to_string(case).unwrap()
    );
    r
}

/// [`must_pass`] for a sweep case, which must also have crashed at `point` exactly once.
async fn must_fire_once(
    fleet: &mut Fleet,
    case: &Case,
    dir: &std::path::Path,
    label: &str,
    point: &str,
) {
    let r = must_pass(fleet, case, dir, label).await;
    assert_eq!(
        r.crashes.get(point),
        Some(&1),
        "{label}: crash point {point} did not fire exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_suite_every_crash_point_and_generated_cases() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::start(dir.path(), 2, None)
        .await
        .expect("fleet starts");

    // 1. Every crash point fires at least once per target (and per write mode of Delta).
    let sweep = dir.path().join("sweep");
    for (target, mode) in SWEPT {
        for (p, point) in POINTS.iter().enumerate() {
            let case = sweep_case(p, target, mode);
            let label = format!("{target:?} {mode:?} at {point}");
            must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
        }
    }

    // 1b. The regular-activity path (`[execution] local_activities = "off"`, and big
    // batches' stage and promote) at every point, on each kind of commit.
    for (target, mode) in [
        (Target::Delta, Mode::Merge),
        (Target::Parquet, Mode::PartitionOverwrite),
        (Target::Postgres, Mode::Merge),
    ] {
        for (p, point) in POINTS.iter().enumerate() {
            let case = sweep_case_regular(p, target, mode);
            let label = format!("{target:?} {mode:?} regular steps at {point}");
            must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
        }
    }

    // 1c. `process` as a local activity (the second round's): a crash after it re-runs the
    // whole workflow task on another worker.
    let after_process = POINTS.iter().position(|p| *p == "after_process").unwrap();
    for (target, mode) in SWEPT {
        let case = sweep_case_second_round(after_process, target, mode);
        let label = format!("{target:?} {mode:?} local process, after_process");
        must_fire_once(&mut fleet, &case, &sweep, &label, "after_process").await;
    }

    // 1d. A source whose schema changes after the first round (a new column; an int32
    // column widened to int64 where the target widens), on every kind of commit.
    for (target, mode) in [
        (Target::Delta, Mode::Merge),
        (Target::Delta, Mode::Append),
        (Target::Parquet, Mode::PartitionOverwrite),
        (Target::Postgres, Mode::Merge),
        (Target::Delta, Mode::Cdc),
        (Target::DeltaS3, Mode::Merge),
    ] {
        for (p, point) in POINTS.iter().enumerate() {
            let case = sweep_case_schema(p, target, mode);
            let label = format!("{target:?} {mode:?} schema change at {point}");
            must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
        }
    }

    // 1e. Merge-on-read: a table with deletion vectors, at every point (tidemark's MERGE
    // writes a DV file before the commit that references it), with a schema change too.
    for (p, point) in POINTS.iter().enumerate() {
        let case = sweep_case_dv(p, Target::Delta, Mode::Merge);
        let label = format!("Delta Merge with deletion vectors at {point}");
        must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
        let mut case = sweep_case_schema(p, Target::Delta, Mode::Merge);
        case.deletion_vectors = true;
        let label = format!("Delta Merge with deletion vectors and a schema change at {point}");
        must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
    }

    // 1f. Table maintenance after merge-on-read rounds, crashing at each of its points.
    for (p, point) in tidemark::crash::MAINTAIN_POINTS.iter().enumerate() {
        let case = sweep_case_maintain(p, Target::Delta);
        let label = format!("Delta maintenance at {point}");
        must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
    }

    // 1g. Runs in batches (two rows each, each batch its own commit and watermark, each
    // execution continuing as new after two): every point crashes at its second hit, inside
    // the second batch or between the first two.
    // The loop and the cut do not depend on the target: the three ways a batch is cut (a
    // lookback re-read, the boundary set of append mode, change events' limits) on Delta.
    for (target, mode) in [
        (Target::Delta, Mode::Merge),
        (Target::Delta, Mode::Append),
        (Target::Delta, Mode::Cdc),
    ] {
        for (p, point) in POINTS.iter().enumerate() {
            let case = sweep_case_batches(p, target, mode);
            let label = format!("{target:?} {mode:?} in batches at {point}");
            must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
        }
    }

    // 1h. A MERGE into a table partitioned by a stable string column (`partition_stable`):
    // only the batch's partitions are probed, and a partition's inserts are written into the
    // file the MERGE rewrites there.
    for (p, point) in POINTS.iter().enumerate() {
        let case = sweep_case_region(p, Target::Delta, Mode::Merge);
        let label = format!("Delta Merge partitioned by a stable string at {point}");
        must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
    }

    // 1i. Write once on object storage, unpartitioned: every append batch, and a MERGE's
    // first load, is uploaded as a data file as it is (partitioned S3 tables, whose
    // partitions are copied and uploaded, are in sweep 1).
    for (p, point) in POINTS.iter().enumerate() {
        for mode in [Mode::Append, Mode::Merge] {
            let mut case = sweep_case(p, Target::DeltaS3, mode);
            case.unpartitioned = true;
            let label = format!("DeltaS3 {mode:?} unpartitioned at {point}");
            must_fire_once(&mut fleet, &case, &sweep, &label, point).await;
        }
    }

    // 2. Pinned cases: server restart, zombie worker, run started twice, random kill.
    let pinned = include_str!("../../regressions.jsonl");
    for (i, line) in pinned
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .enumerate()
    {
        let case: Case = serde_json::from_str(line).expect("regression case parses");
        must_pass(
            &mut fleet,
            &case,
            &dir.path().join("pinned"),
            &format!("pinned case {i}"),
        )
        .await;
    }

    assert!(
        fleet.store_faulted() > 0,
        "the pinned S3 cases' store faults (down, 503s, slow) reached the workers"
    );

    // 3. Generated cases (CHAOS_CASES, CHAOS_SEED).
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&env_u64("CHAOS_SEED", 7).to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let targets = [Target::Delta, Target::Parquet, Target::Postgres];
    for i in 0..env_u64("CHAOS_CASES", 4) {
        let mut case = cases().new_tree(&mut runner).unwrap().current();
        case.target = targets[i as usize % targets.len()];
        case.mode = case.target.mode_for(case.mode);
        must_pass(
            &mut fleet,
            &case,
            &dir.path().join("generated"),
            &format!("generated case {i}"),
        )
        .await;
    }
    assert!(
        fleet.stats.worker_restarts >= 32,
        "crashed workers were restarted"
    );
}

/// A harness that cannot fail proves nothing: with promote's idempotency check sabotaged, a
/// crash right after the commit makes the retry append the batch again, and the harness must
/// say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_reports_a_broken_commit_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet::start(dir.path(), 2, Some("skip-idempotency-check"))
        .await
        .expect("fleet starts");
    let point = POINTS
        .iter()
        .position(|p| *p == "promote_after_commit")
        .unwrap();
    let case = sweep_case(point, Target::Delta, Mode::Append);
    let r = run_case(&mut fleet, &case, &dir.path().join("broken"))
        .await
        .unwrap();
    assert!(
        r.violations
            .iter()
            .any(|v| v.contains("duplicate key") || v.contains("committed twice")),
        "the sabotaged protocol went unnoticed: {:?}",
        r.violations
    );
}
