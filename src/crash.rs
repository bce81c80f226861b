//! Named crash points at every step boundary of the commit protocol, for the chaos harness.
//!
//! Disabled (the default), [`point`] is one relaxed load of a flag that is initialised once
//! from the environment: it costs nothing measurable and is compiled into the real binary, so
//! the harness tests what users run. Enabled by `TIDEMARK_CRASH_DIR=<dir>`, a hit reads
//! `<dir>/plan` (lines `point count`) and, while fewer than `count` crashes of that point have
//! happened across the whole fleet (tokens `<dir>/<point>.<i>`, created with `O_EXCL`), aborts
//! the process on the spot: no destructors, no flush, no graceful shutdown. A line
//! `point count skip` lets the first `skip` hits pass (tokens `<dir>/hits/<point>.<j>`), so a
//! run in batches can crash in a later batch.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Every crash point, in protocol order.
pub const POINTS: &[&str] = &[
    "after_process",
    "mid_stage",
    "after_stage",
    "promote_before_commit",
    "promote_after_commit",
    "before_watermark_write",
    "watermark_temp_written",
    "after_watermark_write",
];

/// The crash points of table maintenance (`tidemark maintain`), swept apart from a run's.
pub const MAINTAIN_POINTS: &[&str] = &["maintain_before_commit", "maintain_after_commit"];

fn crash_dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("TIDEMARK_CRASH_DIR").map(PathBuf::from))
        .as_ref()
}

/// A crash point. Aborts the process when the chaos plan says so; otherwise returns.
#[inline]
pub fn point(name: &'static str) {
    debug_assert!(
        POINTS.contains(&name) || MAINTAIN_POINTS.contains(&name),
        "unknown crash point {name}"
    );
    if let Some(dir) = crash_dir() {
        maybe_crash(dir, name);
    }
    if let Some(delays) = delays() {
        maybe_delay(delays, name);
    }
}

/// A failure point: with `fail <name> <count>` lines in the plan (`TIDEMARK_CRASH_DIR`), the
/// first `count` hits across the fleet return true, and the caller fails its activity without
/// retry (a run that fails as a whole: what a backfill retries window by window).
pub fn fails(name: &'static str) -> bool {
    let Some(dir) = crash_dir() else {
        return false;
    };
    let Ok(plan) = std::fs::read_to_string(dir.join("plan")) else {
        return false;
    };
    let count: u32 = plan
        .lines()
        .filter_map(|l| l.strip_prefix("fail "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, _)| p.trim() == name)
        .filter_map(|(_, n)| n.trim().parse::<u32>().ok())
        .sum();
    (0..count).any(|i| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("fail-{name}.{i}")))
            .is_ok()
    })
}

/// `TIDEMARK_DELAY=point=ms[,point=ms]`: sleep at a point (tests hold a run in a phase to
/// watch it through the workflow query). Parsed once; absent, it costs one load.
fn delays() -> Option<&'static Vec<(String, u64)>> {
    static DELAYS: OnceLock<Option<Vec<(String, u64)>>> = OnceLock::new();
    DELAYS
        .get_or_init(|| {
            let text = std::env::var("TIDEMARK_DELAY").ok()?;
            Some(
                text.split(',')
                    .filter_map(|p| p.split_once('='))
                    .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
                    .collect(),
            )
        })
        .as_ref()
}

#[cold]
fn maybe_delay(delays: &[(String, u64)], name: &str) {
    for (point, ms) in delays {
        if point == name {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
}

#[cold]
fn maybe_crash(dir: &std::path::Path, name: &str) {
    let Ok(plan) = std::fs::read_to_string(dir.join("plan")) else {
        return;
    };
    // Lines `point count [skip]`: the first `skip` hits of the point pass (a run in batches
    // crashes in a later batch), the next `count` abort.
    let mut count = 0u32;
    let mut skip = 0u32;
    for line in plan.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(name) {
            continue;
        }
        count += words
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        skip = skip.max(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
    }
    if count == 0 {
        return;
    }
    if skip > 0 {
        // Claim this hit's number, fleet-wide (tokens `hits/<point>.<j>`).
        let hits = dir.join("hits");
        let _ = std::fs::create_dir_all(&hits);
        let claimed = (0..skip).find(|j| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(hits.join(format!("{name}.{j}")))
                .is_ok()
        });
        if claimed.is_some() {
            return; // one of the hits that pass
        }
    }
    for i in 0..count {
        let token = dir.join(format!("{name}.{i}"));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&token)
            .is_ok()
        {
            eprintln!(
                "tidemark: chaos crash point `{name}` ({}/{count}): aborting",
                i + 1
            );
            std::process::abort();
        }
    }
}

/// A deliberately broken commit protocol, for the harness's self-test only: honoured only
/// while crash points are enabled. `skip-idempotency-check` makes promote commit without
/// reading the table's transaction version first.
pub fn sabotage(kind: &str) -> bool {
    crash_dir().is_some() && std::env::var("TIDEMARK_CHAOS_SABOTAGE").is_ok_and(|v| v == kind)
}
