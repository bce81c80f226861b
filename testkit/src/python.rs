//! The Python side of tests and benchmarks: a virtualenv with polars, deltalake (delta-rs),
//! pyarrow, numpy and matplotlib, created once under `~/.cache/tidemark/venv-bench`. The
//! benchmarks' peer runs in it; the product's tests read tables through it the way users'
//! Python readers do.

use std::path::{Path, PathBuf};

/// The peer's Python: `TIDEMARK_BENCH_PYTHON`, else a virtualenv created on first use under
/// `~/.cache/tidemark/venv-bench` with polars, deltalake, pyarrow and numpy (and matplotlib
/// for the plots).
pub fn peer_python() -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    if let Some(p) = std::env::var_os("TIDEMARK_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/tidemark/venv-bench");
    let python = venv.join("bin/python");
    // One creator at a time: tests run in parallel in one process, and on a fresh machine
    // each would otherwise build (and break) the same virtualenv at once.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    let ready = std::process::Command::new(&python)
        .args(["-c", "import polars, deltalake, pyarrow, numpy, matplotlib"])
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
                    "matplotlib",
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

/// Runs `script` with the peer's Python and `args`; returns its standard output, failing
/// with its standard error.
pub fn run_python(script: &str, args: &[&str]) -> anyhow::Result<String> {
    let python = peer_python()?;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
