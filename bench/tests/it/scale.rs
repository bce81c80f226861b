//! The scale benchmark (S7) in quick mode: first loads read in several batches (a small
//! budget), tidemark's table compared with the peer's at every size, and its section and
//! summary rows written.

use crate::tidemark_bin;
use tidemark_bench::scale;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_benchmark_runs_in_quick_mode_in_batches_and_both_tables_are_equal() {
    let dir = tempfile::tempdir().unwrap();
    let args = scale::ScaleArgs::quick(dir.path().join("bench"), tidemark_bin());
    let r = scale::run(&args)
        .await
        .expect("the benchmark runs and tidemark's table equals the peer's at every size");
    assert_eq!(r.points.len(), args.files.len());
    for p in &r.points {
        assert!(p.tables_equal, "{} files", p.files);
        assert_eq!(p.source_rows, (p.files * args.rows_per_file) as u64);
        let t = &p.tidemark[0];
        // 2,000-row files with a 3,000-row budget: a batch per 1.5 files or so.
        assert!(
            t.batches >= p.files / 2,
            "{} files in {} batches",
            p.files,
            t.batches
        );
        assert!(t.peak_rss_mib > 0.0 && t.engine_s > 0.0, "{t:?}");
        assert!(p.peer[0].peak_rss_mib > 0.0);
    }
    let out = dir.path().join("report.md");
    let md = scale::publish(Some(&out), &r).unwrap();
    assert!(md.contains("S7"), "{md}");
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(report.contains("worker peak RSS"), "summary rows: {report}");
}
