//! tidemark-testkit: what only the test suites, the chaos harness and the benchmarks use.
//!
//! Launchers for the services the tests run against (a throwaway PostgreSQL cluster, a
//! `tansu` Kafka-protocol broker, a `moto` S3-compatible server), each also available once per process (started on first
//! use, owned by a parked thread, so it dies with the test process), and worker processes of
//! the real `tidemark` binary. The Temporal dev-server launcher itself stays in the product
//! (`tidemark dev`, `tidemark demo`); it is re-exported here as [`devserver`].

pub mod kafkaserver;
pub mod pgserver;
pub mod pki;
pub mod python;
pub mod s3server;
pub mod tlsproxy;

pub use tidemark::devserver;
pub use tidemark::devserver::{free_port, tie_to_parent};

use anyhow::Context;
use std::path::{Path, PathBuf};
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

/// A TLS-only PostgreSQL cluster ([`pgserver::start_tls`]) and the files to reach it.
#[derive(Debug, Clone)]
pub struct PgTls {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed the server's certificate (valid for `localhost` only, not for
    /// `127.0.0.1`) and the client certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing the server presents.
    pub other_ca: PathBuf,
    /// A client certificate for user `certuser`.
    pub client: pki::CertFiles,
    /// The password of user `scramuser`.
    pub scram_password: String,
}

impl PgTls {
    /// `postgres://USER@HOST:PORT/postgres?QUERY`.
    pub fn url(&self, user: &str, host: &str, query: &str) -> String {
        format!(
            "postgres://{user}@{host}:{}/postgres{}{query}",
            self.port,
            if query.is_empty() { "" } else { "?" }
        )
    }
}

static PG_TLS: OnceLock<PgTls> = OnceLock::new();

/// The password the TLS cluster's `scramuser` has: tests search histories and logs for it.
pub const PG_SCRAM_PASSWORD: &str = "tidemark-pg-secret-9f3b";

/// This process's TLS-only PostgreSQL cluster, started on first use.
pub fn pg_tls() -> PgTls {
    PG_TLS
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("tidemark-it-pgtls-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let pki_dir = dir.join("pki");
            let make = || -> anyhow::Result<(pki::Ca, pki::Ca, pki::CertFiles, pki::CertFiles)> {
                let ca = pki::Ca::new(&pki_dir, "ca")?;
                let other = pki::Ca::new(&pki_dir, "other-ca")?;
                let server = ca.server("server", "localhost", &["DNS:localhost"])?;
                let client = ca.client("certuser", "certuser")?;
                Ok((ca, other, server, client))
            };
            let (ca, other, server, client) = make().expect("make the test certificates");
            let ca_cert = ca.files.cert.clone();
            let cluster_dir = dir.join("cluster");
            let url = start_parked("test PostgreSQL TLS cluster", move || {
                let cluster = pgserver::start_tls(
                    &cluster_dir,
                    &pgserver::TlsSetup {
                        server: &server,
                        client_ca: &ca_cert,
                        scram_password: PG_SCRAM_PASSWORD,
                    },
                )?;
                Ok((cluster.url.clone(), cluster))
            });
            let port = url
                .rsplit_once(':')
                .and_then(|(_, rest)| rest.split('/').next())
                .and_then(|p| p.parse().ok())
                .expect("the cluster's port");
            PgTls {
                port,
                ca: ca.files.cert,
                other_ca: other.files.cert,
                client,
                scram_password: PG_SCRAM_PASSWORD.to_string(),
            }
        })
        .clone()
}

/// TLS in front of this process's dev server: a terminator that takes TLS only, one that
/// also requires a client certificate, and the files a client needs.
#[derive(Debug, Clone)]
pub struct TemporalTls {
    /// `127.0.0.1:PORT` of the TLS-only terminator.
    pub tls_address: String,
    /// `127.0.0.1:PORT` of the mutual-TLS terminator.
    pub mtls_address: String,
    /// The CA of the terminators' certificate (valid for `localhost` and `127.0.0.1`) and
    /// of the client certificate.
    pub ca: PathBuf,
    /// A CA that signed neither.
    pub other_ca: PathBuf,
    /// A client certificate the mutual-TLS terminator accepts.
    pub client: pki::CertFiles,
}

static TEMPORAL_TLS: OnceLock<TemporalTls> = OnceLock::new();

/// This process's TLS terminators in front of [`dev_server_address`], started on first use.
pub fn temporal_tls() -> TemporalTls {
    TEMPORAL_TLS
        .get_or_init(|| {
            let backend = dev_server_address();
            let dir = std::env::temp_dir().join(format!("tidemark-it-ttls-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let ca = pki::Ca::new(&dir, "ca").expect("test CA");
            let other = pki::Ca::new(&dir, "other-ca").expect("second test CA");
            let server = ca
                .server("frontend", "localhost", &["DNS:localhost", "IP:127.0.0.1"])
                .expect("server certificate");
            let client = ca
                .client("worker", "tidemark-worker")
                .expect("client certificate");
            let (s1, s2, ca_cert) = (server.clone(), server, ca.files.cert.clone());
            let b1 = backend.clone();
            let tls_address = start_parked("TLS terminator", move || {
                let p = tlsproxy::start(&b1, &s1, None)?;
                Ok((p.address.clone(), p))
            });
            let mtls_address = start_parked("mutual-TLS terminator", move || {
                let p = tlsproxy::start(&backend, &s2, Some(&ca_cert))?;
                Ok((p.address.clone(), p))
            });
            TemporalTls {
                tls_address,
                mtls_address,
                ca: ca.files.cert,
                other_ca: other.files.cert,
                client,
            }
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
