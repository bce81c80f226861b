//! The orchestration-overhead benchmark (S4) in quick mode.

use crate::tidemark_bin;
use tidemark_bench::overhead;

/// The S4 benchmark's quick mode (2 empty and 2 one-row runs through fresh CLI processes, a
/// worker process and each kind of dev server), so the benchmark code cannot rot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overhead_benchmark_runs_in_quick_mode() {
    let dir = tempfile::tempdir().unwrap();
    let r = overhead::run(&dir.path().join("bench"), 2, &tidemark_bin())
        .await
        .expect("the benchmark runs");
    assert_eq!((r.runs.len(), r.runs_in_memory.len()), (2, 2));
    for k in r.runs.iter().chain(&r.runs_in_memory) {
        assert_eq!(k.wall_ms.len(), 2, "{}", k.kind);
        assert!(
            k.activities_ms.contains_key("process"),
            "{:?}",
            k.activities_ms
        );
    }
    let rows = overhead::summary_rows(&r);
    assert_eq!(rows.len(), 4, "each kind of run on each server: {rows:?}");
    let md = overhead::markdown(&r);
    assert!(
        md.contains("| SQLite file | 1 row |") && md.contains("| in memory | empty |"),
        "{md}"
    );
}
