//! tidemark-bench: benchmarks that run tidemark and the Python peer (`../shared/bench/`) on the
//! same data in one process run, alternating, and report medians and ratios (never absolute
//! times alone: the machines are shared and noisy): `tidemark-bench merge` (S1, S2, S5, S6),
//! `cdc` (S3), `overhead` (S4), `scale` (S7), and `all`, which runs every scenario at full size and draws the
//! plots (`scripts/bench_plot.py`, matplotlib in the peer's virtualenv).
//!
//! The merge and overhead scenarios drive the real `tidemark` binary (worker and CLI
//! processes): [`tidemark_bin`] finds it beside the runner's own executable.

pub mod cdc;
pub mod merge;
pub mod merge_s3;
pub mod overhead;
pub mod report;
pub mod scale;
pub mod summary;

use std::path::{Path, PathBuf};

/// The machine and code a figure was measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// `git rev-parse --short HEAD` of the working directory (or `unknown`).
    pub commit: String,
    /// Whether this binary was built with optimisations.
    pub release_build: bool,
}

impl Machine {
    /// Describes this machine and build.
    pub fn current() -> Machine {
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            commit,
            release_build: !cfg!(debug_assertions),
        }
    }
}

/// The median of some measurements (the lower middle for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The smallest and largest of some measurements (`(∞, 0)` for none).
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)))
}

/// Runs `cmd` (stdin closed) to its end; its stdout, or an error with what it printed.
pub fn run_checked(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// Starts a `tidemark worker` process (tidemark-testkit).
pub use tidemark_testkit::spawn_worker;

/// The `tidemark` binary the benchmarks drive: `TIDEMARK_BIN`, else `tidemark` beside this
/// executable (`target/<profile>/`, where `cargo build --bins` puts both binaries), or one
/// directory up (a test binary lives in `target/<profile>/deps/`).
pub fn tidemark_bin() -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    if let Some(p) = std::env::var_os("TIDEMARK_BIN") {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.is_file(), "TIDEMARK_BIN={} is not a file", p.display());
        return Ok(p);
    }
    let exe = std::env::current_exe().context("this executable's path")?;
    let name = format!("tidemark{}", std::env::consts::EXE_SUFFIX);
    let dirs: Vec<&Path> = exe.ancestors().skip(1).take(2).collect();
    for dir in &dirs {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    anyhow::bail!(
        "the `tidemark` binary is not beside {} (looked in {}); build it first: `cargo build{profile} --bins` (or set TIDEMARK_BIN)",
        exe.display(),
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The first ancestor of the current directory holding `rel` (the checkout, whether the
/// runner is started from its root or a test runs in `bench/`).
fn find_up(rel: &str) -> anyhow::Result<Option<PathBuf>> {
    let here = std::env::current_dir()?;
    Ok(here
        .ancestors()
        .map(|d| d.join(rel))
        .find(|candidate| candidate.exists()))
}

/// The peer's Python (the virtualenv with polars, deltalake, pyarrow; in the testkit, which
/// the product's reader tests share).
pub use tidemark_testkit::python::peer_python;

/// `../shared/bench` next to the checkout (or `TIDEMARK_BENCH_PEERS`).
pub fn peer_dir() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_BENCH_PEERS") {
        return Ok(PathBuf::from(p));
    }
    if let Some(seed) = find_up("../shared/bench/seed_cdc.py")? {
        return Ok(seed.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    anyhow::bail!(
        "the peers (../shared/bench/seed_cdc.py) are not next to this checkout; set TIDEMARK_BENCH_PEERS"
    )
}

/// Writes a scenario's sections into the report at `out` (when given), its raw figures as
/// JSON beside it (`<report dir>/bench/<name>.json`, what the plots are drawn from) and its
/// rows of the summary table.
pub fn publish<T: serde::Serialize>(
    out: Option<&Path>,
    sections: &[(&str, &str)],
    name: &str,
    report: &T,
    summary_rows: &[summary::Row],
) -> anyhow::Result<()> {
    let Some(out) = out else {
        return Ok(());
    };
    for (section, body) in sections {
        report::write_section(out, section, body)?;
    }
    let dir = figures_dir(out);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)?,
    )?;
    summary::publish(out, name, summary_rows)?;
    eprintln!("wrote the {name} sections of {}", out.display());
    Ok(())
}

/// Where a report's figures and plots live: `bench/` beside it.
pub fn figures_dir(report: &Path) -> PathBuf {
    report
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("bench")
}

/// Draws the PNG plots from the figures beside the report (`scripts/bench_plot.py`).
pub fn plot(report: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let python = peer_python()?;
    let script = find_up("scripts/bench_plot.py")?
        .context("scripts/bench_plot.py is not found: run the benchmarks from the checkout")?;
    let status = std::process::Command::new(&python)
        .arg(&script)
        .arg(figures_dir(report))
        .status()
        .context("run scripts/bench_plot.py")?;
    anyhow::ensure!(status.success(), "scripts/bench_plot.py failed");
    Ok(())
}
