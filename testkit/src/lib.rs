//! tidemark-testkit: what only the test suites, the chaos harness and the benchmarks use.
//!
//! Launchers for the services the tests run against (a throwaway PostgreSQL cluster, a
//! `tansu` Kafka-protocol broker, a `moto` S3-compatible server), each also available once per process (started on first
//! use, owned by a parked thread, so it dies with the test process), and worker processes of
//! the real `tidemark` binary. The Temporal dev-server launcher itself stays in the product
//! (`tidemark dev`, `tidemark demo`); it is re-exported here as [`devserver`].

pub mod kafkaserver;
pub mod pgserver;
pub mod s3server;

pub use tidemark::devserver;
pub use tidemark::devserver::{free_port, tie_to_parent};

use anyhow::Context;
use std::path::Path;
use std::sync::OnceLock;

/// Starts `start` on a thread that then parks forever (a launcher ties its child to the
/// spawning thread), and returns what `start` reported; panics with `what` on an error.
fn start_parked<T, F>(what: &str, start: F) -> String
where
    F: FnOnce() -> anyhow::Result<(String, T)> + Send + 'static,
    T: 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match start() {
        Ok((address, guard)) => {
            tx.send(Ok(address)).expect("send the address");
            let _guard = guard;
            loop {
                std::thread::park();
            }
        }
        Err(e) => tx.send(Err(format!("{e:#}"))).expect("send the error"),
    });
    rx.recv()
        .unwrap_or_else(|_| panic!("the {what} thread"))
        .unwrap_or_else(|e| panic!("the {what} starts: {e}"))
}

static SERVER: OnceLock<String> = OnceLock::new();

/// The address of this process's Temporal dev server (SQLite file in a temp directory),
/// started on first use.
pub fn dev_server_address() -> String {
    SERVER
        .get_or_init(|| {
            start_parked("Temporal dev server (is `temporal` on PATH?)", || {
                let rt = tokio::runtime::Runtime::new().context("runtime")?;
                let dir = std::env::temp_dir().join(format!("tidemark-it-{}", std::process::id()));
                let server =
                    rt.block_on(devserver::start(&dir.join("temporal.db"), None, false))?;
                Ok((server.address.clone(), (server, rt)))
            })
        })
        .clone()
}

static PG: OnceLock<String> = OnceLock::new();

/// A PostgreSQL server for the tests: `TIDEMARK_TEST_PG_URL` when set, else a throwaway
/// cluster started once per process.
pub fn pg_url() -> String {
    if let Ok(url) = std::env::var("TIDEMARK_TEST_PG_URL") {
        return url;
    }
    PG.get_or_init(|| {
        start_parked("test PostgreSQL cluster", || {
            let dir = std::env::temp_dir().join(format!("tidemark-it-pg-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let cluster = pgserver::start(&dir)?;
            Ok((cluster.url.clone(), cluster))
        })
    })
    .clone()
}

static BROKER: OnceLock<String> = OnceLock::new();

/// The address of this process's Kafka-protocol broker (tansu, in-memory), started on first
/// use.
pub fn broker_address() -> String {
    BROKER
        .get_or_init(|| {
            start_parked("test Kafka broker", || {
                let broker = kafkaserver::start()?;
                Ok((broker.address.clone(), broker))
            })
        })
        .clone()
}

static S3: OnceLock<String> = OnceLock::new();

/// The endpoint (`http://127.0.0.1:PORT`) of this process's S3-compatible server (moto),
/// started on first use; clients take [`s3server::env_for`] of it.
pub fn s3_endpoint() -> String {
    S3.get_or_init(|| {
        start_parked("test S3 server", || {
            let server = s3server::start()?;
            Ok((server.endpoint.clone(), server))
        })
    })
    .clone()
}

/// Starts a `tidemark worker` (the binary `bin`) on `address` and `queue`, silent, tied to
/// this thread's life; in `cwd` when given.
pub fn spawn_worker(
    bin: &Path,
    address: &str,
    queue: &str,
    cwd: Option<&Path>,
) -> anyhow::Result<std::process::Child> {
    spawn_worker_with_env(bin, address, queue, cwd, &[])
}

/// [`spawn_worker`] with extra environment variables (an object store's settings).
pub fn spawn_worker_with_env(
    bin: &Path,
    address: &str,
    queue: &str,
    cwd: Option<&Path>,
    env: &[(&str, String)],
) -> anyhow::Result<std::process::Child> {
    use std::process::Stdio;
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["worker", "--address", address, "--task-queue", queue])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    tie_to_parent(&mut cmd).spawn().context("start a worker")
}
