//! Benchmarks that run tidemark and the Python peer (`../shared/bench/`) on the same data in
//! one process run, alternating, and report medians and ratios (never absolute times alone:
//! the machines are shared and noisy). `tidemark bench cdc` is the CDC apply scenario.

pub mod cdc;
pub mod overhead;
pub mod report;

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

/// The peer's Python: `TIDEMARK_BENCH_PYTHON`, else a virtualenv created on first use under
/// `~/.cache/tidemark/venv-bench` with polars, deltalake, pyarrow and numpy.
pub fn peer_python() -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    if let Some(p) = std::env::var_os("TIDEMARK_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/tidemark/venv-bench");
    let python = venv.join("bin/python");
    let ready = std::process::Command::new(&python)
        .args(["-c", "import polars, deltalake, pyarrow, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        eprintln!("creating the peer's virtualenv in {}", venv.display());
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?
            .success()
            && std::process::Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "polars",
                    "deltalake",
                    "pyarrow",
                    "numpy",
                ])
                .status()?
                .success();
        anyhow::ensure!(
            ok,
            "could not create the peer's virtualenv in {}",
            venv.display()
        );
    }
    Ok(python)
}

/// `../shared/bench` next to the checkout (or `TIDEMARK_BENCH_PEERS`).
pub fn peer_dir() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_BENCH_PEERS") {
        return Ok(PathBuf::from(p));
    }
    let here = std::env::current_dir()?;
    for dir in here.ancestors() {
        let candidate = dir.join("../shared/bench");
        if candidate.join("seed_cdc.py").is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "the peers (../shared/bench/seed_cdc.py) are not next to this checkout; set TIDEMARK_BENCH_PEERS"
    )
}
