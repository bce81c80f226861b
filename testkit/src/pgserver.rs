//! A throwaway PostgreSQL cluster for the test suite and the chaos harness: `initdb` into a
//! folder, then the `postgres` server on a free loopback port, tied to the spawning thread
//! (it dies with the test process). As root, both run as the `postgres` system user, since
//! PostgreSQL refuses to run as root.
//!
//! [`start_tls`] starts one with `ssl = on`, a server certificate, a CA for client
//! certificates and a `pg_hba.conf` that takes TCP connections over TLS only: user
//! `certuser` by client certificate, `scramuser` by password (scram-sha-256), `postgres`
//! trusted; plain-text TCP rejected.

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
    start_with(dir, None)
}

/// What a TLS cluster is given.
pub struct TlsSetup<'a> {
    /// The server's certificate and key.
    pub server: &'a crate::pki::CertFiles,
    /// The CA that signs accepted client certificates.
    pub client_ca: &'a Path,
    /// The password of `scramuser`.
    pub scram_password: &'a str,
}

/// Starts a TLS-only cluster in `dir` (see the module doc). Its `url` names `postgres`
/// without TLS parameters: callers add `sslmode`, `sslrootcert`, ...
pub fn start_tls(dir: &Path, tls: &TlsSetup<'_>) -> anyhow::Result<PgCluster> {
    start_with(dir, Some(tls))
}

fn start_with(dir: &Path, tls: Option<&TlsSetup<'_>>) -> anyhow::Result<PgCluster> {
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
    let mut tls_args: Vec<String> = Vec::new();
    if let Some(t) = tls {
        // The server's copies, owned by the server's user (it refuses a key others can read).
        let own = |name: &str, from: &Path, mode: u32| -> anyhow::Result<PathBuf> {
            use std::os::unix::fs::PermissionsExt;
            let to = dir.join(name);
            std::fs::copy(from, &to).with_context(|| format!("copy {}", from.display()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))?;
            if let Some((u, g)) = user {
                std::os::unix::fs::chown(&to, Some(u), Some(g))?;
            }
            Ok(to)
        };
        let cert = own("server.crt", &t.server.cert, 0o644)?;
        let key = own("server.key", &t.server.key, 0o600)?;
        let ca = own("client-ca.crt", t.client_ca, 0o644)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all scramuser 127.0.0.1/32 scram-sha-256\n\
             hostssl all postgres 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )?;
        for (k, v) in [
            ("ssl", "on".to_string()),
            ("ssl_cert_file", cert.to_string_lossy().into_owned()),
            ("ssl_key_file", key.to_string_lossy().into_owned()),
            ("ssl_ca_file", ca.to_string_lossy().into_owned()),
        ] {
            tls_args.push("-c".into());
            tls_args.push(format!("{k}={v}"));
        }
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
        .args(&tls_args)
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
            if let Some(t) = tls {
                create_tls_roles(&bin, dir, port, t.scram_password, user)?;
            }
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            bail!("postgres did not accept connections within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TLS cluster's login roles, created over the Unix socket (TCP needs TLS).
fn create_tls_roles(
    bin: &Path,
    dir: &Path,
    port: u16,
    scram_password: &str,
    user: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let sql = format!(
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE certuser LOGIN SUPERUSER; CREATE ROLE scramuser LOGIN SUPERUSER PASSWORD '{}';",
        scram_password.replace('\'', "''")
    );
    let out = as_user(
        Command::new(bin.join("psql"))
            .arg("-h")
            .arg(dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &sql]),
        user,
    )
    .output()
    .context("run psql")?;
    if !out.status.success() {
        bail!(
            "creating the TLS cluster's roles failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .status()
        .is_ok_and(|s| s.success())
}
