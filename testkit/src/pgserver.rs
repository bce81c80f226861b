//! A throwaway PostgreSQL cluster for the test suite and the chaos harness: `initdb` into a
//! folder, then the `postgres` server on a free loopback port, tied to the spawning thread
//! (it dies with the test process). As root, both run as the `postgres` system user, since
//! PostgreSQL refuses to run as root.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidemark::devserver::free_port;

/// A running cluster.
pub struct PgCluster {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// The data folder.
    pub dir: PathBuf,
    child: Child,
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder of PostgreSQL's server binaries: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<v>/bin`, else whatever `initdb` on PATH is next to.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|d| d.join("postgres").is_file());
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = versions.pop() {
        return Ok(d);
    }
    bail!(
        "PostgreSQL's server binaries (initdb, postgres) were not found; install them (Debian: apt-get install postgresql) or set TIDEMARK_TEST_PG_URL to a server"
    )
}

/// Whether this process runs as root (then the cluster runs as the `postgres` user).
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// (uid, gid) of the `postgres` system user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    let out = Command::new("id").args(["-g", "postgres"]).output()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse::<u32>();
    match (uid, gid) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => bail!("running as root needs a `postgres` system user to run PostgreSQL as"),
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((u, g)) = user {
        cmd.uid(u).gid(g);
    }
    cmd
}

/// Creates a cluster in `dir` (which must not exist or be empty) and starts it; waits until
/// it accepts connections. Call from a thread that lives as long as the cluster should.
pub fn start(dir: &Path) -> anyhow::Result<PgCluster> {
    let bin = find_bindir()?;
    let user = if running_as_root() {
        Some(postgres_user()?)
    } else {
        None
    };
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if let Some((u, g)) = user {
        std::os::unix::fs::chown(dir, Some(u), Some(g))
            .with_context(|| format!("chown {} to postgres", dir.display()))?;
    }
    let data = dir.join("data");
    let out = as_user(
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir),
        user,
    )
    .output()
    .context("run initdb")?;
    if !out.status.success() {
        bail!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("postgres.log"))?;
    if let Some((u, g)) = user {
        let _ = std::os::unix::fs::chown(dir.join("postgres.log"), Some(u), Some(g));
    }
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log);
    as_user(&mut cmd, user);
    // After the uid change (which clears it), so the server dies with this thread.
    tidemark::devserver::tie_to_parent(&mut cmd);
    let child = cmd.spawn().context("start postgres")?;
    let mut cluster = PgCluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        dir: dir.to_path_buf(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = cluster.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(anyhow!("postgres exited ({status}): {}", log.trim()));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && ready(&bin, port) {
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            bail!("postgres did not accept connections within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .status()
        .is_ok_and(|s| s.success())
}
