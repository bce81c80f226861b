//! A local S3-compatible server for tests, the chaos harness and benchmarks: `moto_server`
//! (moto[server] from PyPI, Apache-2.0), on a free port, tied to the thread that starts it.
//! It honours conditional PUTs (`If-None-Match: *` and `If-Match` answer 412 when they do not
//! hold), which is what delta-rs's commits and tidemark's state store rely on.
//!
//! Clients reach it through the standard AWS environment, which [`S3Server::env`] lists
//! (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, a dummy key pair, a region): moto accepts any key.

use anyhow::{Context, anyhow, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidemark::devserver::{free_port, tie_to_parent};

/// The access key id the tests use (moto accepts any).
pub const ACCESS_KEY_ID: &str = "tidemark-test-key";
/// The secret the tests use; tests search histories and logs for it.
pub const SECRET_ACCESS_KEY: &str = "tidemark-test-secret-5a7e1c";

/// A running server; killed on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Child,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// The environment a client of this server needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint)
    }
}

/// The AWS environment for a client of the server at `endpoint`.
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// The `moto_server` binary: `TIDEMARK_MOTO_BIN`, else on PATH, else in Python's scripts
/// directory.
pub fn find_moto() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_MOTO_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    std::env::split_paths(&path)
        .chain(scripts)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "the moto S3 server is not installed; install it with `python3 -m pip install 'moto[server]'` (or set TIDEMARK_MOTO_BIN)"
            )
        })
}

/// Starts a server and waits until it answers HTTP.
pub fn start() -> anyhow::Result<S3Server> {
    let bin = find_moto()?;
    let port = free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = tie_to_parent(&mut cmd)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("moto_server exited at start ({status})");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!("moto_server did not listen on port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `bucket` on the server at `endpoint` (an existing bucket is fine): a plain PUT,
/// which moto accepts unsigned.
pub fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{endpoint} is not an http:// endpoint"))?;
    let mut stream = std::net::TcpStream::connect(hostport).context("connect to the S3 server")?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply.lines().next().unwrap_or_default();
    if !(status.contains(" 200") || status.contains("BucketAlreadyOwnedByYou")) {
        bail!("create bucket {bucket}: {status}");
    }
    Ok(())
}
