//! The CDC benchmark (S3) in quick mode: tidemark's and the peer's tables checked against
//! the model, so the benchmark code cannot rot.

use tidemark_bench::cdc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_benchmark_runs_in_quick_mode_with_both_results_checked() {
    let dir = tempfile::tempdir().unwrap();
    let r = cdc::run(&cdc::CdcBenchArgs {
        rows: 500,
        events: 500,
        peer_events: 50,
        reps: 1,
        dir: dir.path().join("bench"),
        no_peer: false,
    })
    .await
    .expect("the benchmark runs; tidemark's and the peer's tables equal the model");
    assert!(r.series.iter().any(|s| s.who == "peer" && s.events == 50));
    assert!(r.ratio_at_scale.is_some_and(|x| x > 0.0));
    let md = cdc::markdown(&r);
    assert!(md.contains("| peer | 50 |"), "{md}");
    let rows = cdc::summary_rows(&r);
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].scenario == "S3" && rows[0].met.is_some(),
        "{rows:?}"
    );
}
