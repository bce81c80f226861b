//! The orchestration-overhead benchmark (S4) in quick mode.

use crate::tidemark_bin;
use tidemark_bench::overhead;

/// The S4 benchmark's quick mode (one round of every variant's empty and 1-row runs and of
/// the floor, through fresh CLI processes, a worker process and each kind of dev server), so
/// the benchmark code cannot rot, and the local-activity path really saves server work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overhead_benchmark_runs_in_quick_mode() {
    let dir = tempfile::tempdir().unwrap();
    let r = overhead::run(&dir.path().join("bench"), 1, &tidemark_bin())
        .await
        .expect("the benchmark runs");
    assert_eq!(r.servers.len(), 2);
    for s in &r.servers {
        assert_eq!(s.kinds.len(), 8, "4 variants × 2 kinds on {}", s.server);
        assert_eq!(
            s.floors.len(),
            2,
            "the floor with and without eager dispatch"
        );
        for k in &s.kinds {
            assert_eq!(k.wall_ms.len(), 1, "{} {}", k.variant, k.kind);
            assert!(
                k.activities_ms.contains_key("process"),
                "{:?}",
                k.activities_ms
            );
        }
        let today = s.kind("today's path", "1 row").unwrap();
        let local = s.kind("local activities", "1 row").unwrap();
        assert!(today.local_steps.is_empty(), "{:?}", today.local_steps);
        for step in ["process", "stage", "promote", "update_watermark"] {
            assert!(
                local.local_steps.iter().any(|l| l == step),
                "{step}: {:?}",
                local.local_steps
            );
        }
        // Five workflow tasks (start, after each of four activities) against one.
        assert!(
            local.workflow_tasks < today.workflow_tasks
                && local.history_events < today.history_events,
            "local {} tasks / {} events, today's path {} / {}",
            local.workflow_tasks,
            local.history_events,
            today.workflow_tasks,
            today.history_events
        );
        assert!(
            s.floors.iter().all(|f| f.workflow_tasks >= 5.0),
            "{:?}",
            s.floors
        );
    }
    let rows = overhead::summary_rows(&r);
    assert_eq!(
        rows.len(),
        6,
        "two kinds and the server work on each server: {rows:?}"
    );
    let md = overhead::markdown(&r);
    assert!(
        md.contains("| SQLite file | both | 1 row |")
            && md.contains("| in memory | today's path | empty |"),
        "{md}"
    );
}
