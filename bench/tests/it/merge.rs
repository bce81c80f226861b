//! The merge benchmark (S1, S2, S5, S6) in quick mode, end to end through a dev server,
//! fresh worker processes and the Python peer, and the plots drawn from its figures: so the
//! benchmark code cannot rot, and tidemark's and the peer's tables are compared on every run.

use crate::tidemark_bin;
use tidemark_bench::{self as bench, merge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_benchmark_runs_in_quick_mode_and_both_tables_are_equal() {
    let dir = tempfile::tempdir().unwrap();
    let args = merge::MergeBenchArgs::quick(dir.path().join("bench"), tidemark_bin());
    let r = merge::run(&args)
        .await
        .expect("the benchmark runs and tidemark's table equals the peer's at every point");
    assert_eq!(
        r.s1.iter().map(|p| p.files).collect::<Vec<_>>(),
        args.s1_files
    );
    for p in r.s1.iter().chain([&r.s2]) {
        assert!(p.tables_equal, "{} files", p.files);
        assert_eq!(
            (p.tidemark.len(), p.peer.len()),
            (1, 1),
            "{} files",
            p.files
        );
        assert_eq!(p.new_rows, args.rows_per_file as u64);
        let t = &p.tidemark[0];
        assert!(t.engine_s > 0.0 && t.peak_rss_mib > 0.0, "{t:?}");
        assert!(t.bytes_written > 0, "the run added files: {t:?}");
        assert!(p.peer[0].peak_rss_mib > 0.0);
        assert!(p.dv_tables_equal, "merge-on-read, {} files", p.files);
        assert_eq!(p.tidemark_dv.len(), 1);
    }
    // Past the first load, merge-on-read puts deletion vectors where copy-on-write rewrites.
    let dv = &r.s2.tidemark_dv[0];
    assert!(dv.dv_bytes > 0, "a deletion-vector file: {dv:?}");
    assert_eq!(dv.bytes_rewritten, 0, "no table file rewritten: {dv:?}");
    let m =
        r.s2.merge_on_read
            .as_ref()
            .expect("read and compaction costs");
    assert!(m.files_with_dv > 0 && m.compacted_files > 0, "{m:?}");
    assert!(m.scan_with_dv_s > 0.0 && m.scan_after_s > 0.0 && m.maintain_s > 0.0);
    assert_eq!(r.s1[0].table_rows_before, 0, "one file: the first run");
    assert!(r.s2.table_rows_before > r.s1[1].table_rows_before);
    assert!(r.disk.read_mib_s > 0.0 && r.disk.write_mib_s > 0.0);

    let (s1, s2) = (merge::markdown_s1(&r), merge::markdown_s2(&r));
    assert!(
        s1.contains("| 3 |") && s1.contains("(target ≤ 1.3×)"),
        "{s1}"
    );
    assert!(s2.contains("## S5") && s2.contains("## S6"), "{s2}");

    // The report and the plots, as `bench all` writes them.
    let report = dir.path().join("docs/benchmarks.md");
    let md = merge::publish(Some(&report), &r).unwrap();
    let mor = merge::markdown_mor(&r);
    assert!(
        mor.contains("S1 with deletion vectors") && mor.contains("The trade"),
        "{mor}"
    );
    assert_eq!(md, format!("{s1}\n{s2}\n{mor}"));
    bench::plot(&report).expect("scripts/bench_plot.py draws the plots");
    for png in ["s1_incremental.png", "s2_merge_memory.png"] {
        let bytes = std::fs::read(dir.path().join("docs/bench").join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is a PNG");
    }
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("<!-- bench:merge-s1 -->") && text.contains("bench/s1_incremental.png"));
    // The summary table comes first, with a row for each of the merge benchmark's scenarios.
    let summary = text.find("## Summary").expect("a summary table");
    assert!(summary < text.find("## S1").unwrap(), "{text}");
    for scenario in [
        "| S1 |",
        "| S2 |",
        "| S5 |",
        "| S6 |",
        "| S1 (DV) |",
        "| S2 (DV) |",
    ] {
        assert!(text.contains(scenario), "{scenario} in {text}");
    }
}

/// S2 on object storage in quick mode: the moto server is started by the benchmark; both
/// sides' tables on it are compared, and the section and summary row are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_benchmark_on_an_s3_server_runs_in_quick_mode_and_both_tables_are_equal() {
    use tidemark_bench::merge_s3;
    let dir = tempfile::tempdir().unwrap();
    let args = merge::MergeBenchArgs::quick(dir.path().join("bench"), tidemark_bin());
    let r = merge_s3::run(&args)
        .await
        .expect("the benchmark runs and tidemark's table equals the peer's on both stores");
    for p in [&r.local, &r.s3] {
        assert!(p.tables_equal);
        assert_eq!((p.tidemark.len(), p.peer.len()), (1, 1));
        assert_eq!(p.new_rows, args.rows_per_file as u64);
        assert!(p.tidemark[0].engine_s > 0.0 && p.peer[0].engine_s > 0.0);
        assert!(p.tidemark[0].activities_ms.contains_key("promote"));
    }
    // The same table before the run on both stores (read from the bucket's log for S3).
    assert_eq!(r.s3.table_rows_before, r.local.table_rows_before);
    assert!(r.s3.table_rows_before > 0 && r.s3.table_bytes_before > 0);
    assert!(r.server.starts_with("moto_server"), "{}", r.server);

    let report = dir.path().join("docs/benchmarks.md");
    let md = merge_s3::publish(Some(&report), &r).unwrap();
    assert!(
        md.contains("| S3 server | tidemark |") && md.contains("| local disk | peer |"),
        "{md}"
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("<!-- bench:merge-s3 -->"), "{text}");
    assert!(
        text.contains("engine time on the local S3 server"),
        "{text}"
    );
}
