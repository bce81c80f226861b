//! The process fleet: a dev server and worker processes that can be killed, paused, resumed
//! and restarted. Workers are the real `tidemark` binary with crash points enabled.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tidemark::client::ConnectSettings;
use tidemark::devserver::{self, DevServer};

/// Heartbeat timeout of the runs the fleet plays: how soon a dead worker's activity moves.
pub const HEARTBEAT_MS: u64 = 2_000;
/// Sticky-queue timeout of the fleet's workers.
pub const STICKY_MS: u64 = 500;

/// Counters of what the fleet did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Worker processes restarted after they died.
    pub worker_restarts: u32,
    /// SIGKILLs sent by the harness.
    pub kills: u32,
    /// SIGSTOP/SIGCONT pairs (zombies).
    pub pauses: u32,
    /// Server restarts.
    pub server_restarts: u32,
}

/// The S3 server of S3 cases and the proxy in front of it.
struct S3 {
    server: tidemark_testkit::s3server::S3Server,
    proxy: crate::storeproxy::StoreProxy,
    bucket: String,
}

/// Where an S3 case's parties reach the store.
#[derive(Debug, Clone)]
pub struct S3Endpoints {
    /// Through the fault proxy: the workers' endpoint.
    pub workers: String,
    /// The server itself: the oracle's.
    pub direct: String,
    /// The fleet's bucket.
    pub bucket: String,
}

/// A dev server and its workers.
pub struct Fleet {
    /// Working directory (server database, worker logs, crash tokens).
    pub dir: PathBuf,
    /// The task queue every worker polls.
    pub task_queue: String,
    /// The crash-point directory (`TIDEMARK_CRASH_DIR` of the workers).
    pub crash_dir: PathBuf,
    /// Counters.
    pub stats: FleetStats,
    bin: PathBuf,
    port: u16,
    server: Option<DevServer>,
    workers: Vec<Option<Child>>,
    sabotage: Option<String>,
    pg: Option<(String, std::sync::mpsc::Sender<()>)>,
    /// The S3 server of S3 cases, started on first use, and the fault proxy the workers
    /// reach it through.
    s3: Option<S3>,
}

/// The `tidemark` binary: `$TIDEMARK_BIN`, else next to (or above) the running executable.
pub fn tidemark_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TIDEMARK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("tidemark");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the `tidemark` binary next to {}; build it (`cargo build --bin tidemark`) or set TIDEMARK_BIN",
        exe.display()
    )
}

impl Fleet {
    /// Starts a server and `workers` worker processes under `dir`. `sabotage` (self-test
    /// only) is passed to the workers as `TIDEMARK_CHAOS_SABOTAGE`.
    pub async fn start(
        dir: &Path,
        workers: usize,
        sabotage: Option<&str>,
    ) -> anyhow::Result<Fleet> {
        std::fs::create_dir_all(dir)?;
        let crash_dir = dir.join("crash");
        std::fs::create_dir_all(&crash_dir)?;
        let port = devserver::free_port()?;
        let server = devserver::start(&dir.join("temporal.db"), Some(port), false).await?;
        let mut fleet = Fleet {
            dir: dir.to_path_buf(),
            task_queue: format!("chaos-{}", std::process::id()),
            crash_dir,
            stats: FleetStats::default(),
            bin: tidemark_bin()?,
            port,
            server: Some(server),
            workers: Vec::new(),
            sabotage: sabotage.map(str::to_string),
            pg: None,
            s3: None,
        };
        fleet.set_plan(&[])?;
        for i in 0..workers {
            let child = fleet.spawn_worker(i)?;
            fleet.workers.push(Some(child));
        }
        Ok(fleet)
    }

    /// Connection settings of the fleet's server.
    pub fn settings(&self) -> ConnectSettings {
        ConnectSettings::local(&format!("127.0.0.1:{}", self.port))
    }

    fn spawn_worker(&self, i: usize) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.log")))?;
        // Each worker has its own working directory and TMPDIR: nothing on local disk is
        // shared between workers but what a case's spec names (its source files).
        let home = self.dir.join(format!("worker-{i}"));
        let tmp = home.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&home).env("TMPDIR", &tmp);
        if let Some(s3) = &self.s3 {
            cmd.envs(tidemark_testkit::s3server::env_for(&s3.proxy.endpoint));
            // Every upload a multipart one: `mid_stage` then kills a worker between the
            // staged file's first stored part and the upload's completion.
            cmd.env("TIDEMARK_MULTIPART_THRESHOLD", "0");
        }
        cmd.args(["worker", "--address", &format!("127.0.0.1:{}", self.port)])
            .args(["--task-queue", &self.task_queue])
            .args(["--sticky-timeout-ms", &STICKY_MS.to_string()])
            .env("TIDEMARK_CRASH_DIR", &self.crash_dir)
            .env("TIDEMARK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match &self.sabotage {
            Some(s) => cmd.env("TIDEMARK_CHAOS_SABOTAGE", s),
            None => cmd.env_remove("TIDEMARK_CHAOS_SABOTAGE"),
        };
        devserver::tie_to_parent(&mut cmd)
            .spawn()
            .with_context(|| format!("start worker {}", self.bin.display()))
    }

    /// Restarts every worker that exited (crash point, kill). Returns how many.
    pub fn supervise(&mut self) -> anyhow::Result<u32> {
        let mut restarted = 0;
        for i in 0..self.workers.len() {
            let dead = match &mut self.workers[i] {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if dead {
                self.workers[i] = Some(self.spawn_worker(i)?);
                restarted += 1;
            }
        }
        self.stats.worker_restarts += restarted;
        Ok(restarted)
    }

    fn signal(&mut self, i: usize, sig: i32) {
        if let Some(Some(c)) = self.workers.get(i % self.workers.len().max(1)) {
            // SAFETY: kill(2) on a child pid we own; no memory is touched.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGKILLs worker `i` (the supervisor restarts it).
    pub fn kill_worker(&mut self, i: usize) {
        self.signal(i, libc::SIGKILL);
        self.stats.kills += 1;
    }

    /// SIGSTOPs worker `i`.
    pub fn pause_worker(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONTs worker `i`.
    pub fn resume_worker(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.stats.pauses += 1;
    }

    /// Kills the server and starts it again on the same port and database.
    pub async fn restart_server(&mut self) -> anyhow::Result<()> {
        drop(self.server.take());
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.server =
            Some(devserver::start(&self.dir.join("temporal.db"), Some(self.port), false).await?);
        self.stats.server_restarts += 1;
        Ok(())
    }

    /// Installs a crash plan (`point`, how many times) and clears the fired tokens.
    pub fn set_plan(&self, crashes: &[(String, u32)]) -> anyhow::Result<()> {
        self.set_plan_skipping(crashes, 0)
    }

    /// [`Fleet::set_plan`] where the first `skip` hits of each point pass (a run in batches
    /// crashes in a later batch).
    pub fn set_plan_skipping(&self, crashes: &[(String, u32)], skip: u32) -> anyhow::Result<()> {
        for e in std::fs::read_dir(&self.crash_dir)? {
            let path = e?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        let plan: String = crashes
            .iter()
            .map(|(p, n)| format!("{p} {n} {skip}\n"))
            .collect();
        std::fs::write(self.crash_dir.join("plan"), plan)?;
        Ok(())
    }

    /// Crashes that fired since the last plan, per point.
    pub fn crashes_fired(&self) -> anyhow::Result<BTreeMap<String, u32>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&self.crash_dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some((point, _)) = name.rsplit_once('.') {
                *out.entry(point.to_string()).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// The PostgreSQL server of Postgres cases: `$TIDEMARK_CHAOS_PG_URL`, else a throwaway
    /// TLS-only cluster under the fleet's directory (a test CA and a certificate for
    /// `localhost`), started on first use and stopped with the fleet: every connection of a
    /// case, the workers' and the oracle's, goes over `sslmode=verify-full`.
    pub fn pg_url(&mut self) -> anyhow::Result<String> {
        if let Ok(url) = std::env::var("TIDEMARK_CHAOS_PG_URL") {
            return Ok(url);
        }
        if let Some((url, _)) = &self.pg {
            return Ok(url.clone());
        }
        let dir = self.dir.join("pg");
        let _ = std::fs::remove_dir_all(&dir);
        let pki = self.dir.join("pg-pki");
        let _ = std::fs::remove_dir_all(&pki);
        let ca = tidemark_testkit::pki::Ca::new(&pki, "ca")?;
        let server = ca.server("server", "localhost", &["DNS:localhost"])?;
        let ca_cert = ca.files.cert.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        // The cluster is tied to this thread, which lives until the fleet is dropped.
        std::thread::spawn(move || {
            match tidemark_testkit::pgserver::start_tls(
                &dir,
                &tidemark_testkit::pgserver::TlsSetup {
                    server: &server,
                    client_ca: &ca.files.cert,
                    scram_password: "chaos",
                },
            ) {
                Ok(cluster) => {
                    let url = format!(
                        "{}?sslmode=verify-full&sslrootcert={}",
                        cluster.url.replace("@127.0.0.1:", "@localhost:"),
                        ca_cert.display()
                    );
                    let _ = ready_tx.send(Ok(url));
                    let _ = stop_rx.recv();
                    drop(cluster);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
        });
        let url = ready_rx
            .recv()
            .context("the PostgreSQL thread")?
            .map_err(|e| anyhow::anyhow!("start PostgreSQL for the chaos cases: {e}"))?;
        self.pg = Some((url.clone(), stop_tx));
        Ok(url)
    }

    /// The S3 server of S3 cases, started on first use (and the workers restarted with its
    /// environment): its endpoint and the fleet's bucket.
    pub fn s3(&mut self) -> anyhow::Result<S3Endpoints> {
        if let Some(s3) = &self.s3 {
            return Ok(S3Endpoints {
                workers: s3.proxy.endpoint.clone(),
                direct: s3.server.endpoint.clone(),
                bucket: s3.bucket.clone(),
            });
        }
        let server = tidemark_testkit::s3server::start()?;
        let bucket = format!("chaos-{}", std::process::id());
        tidemark_testkit::s3server::create_bucket(&server.endpoint, &bucket)?;
        let proxy = crate::storeproxy::StoreProxy::start(&server.endpoint)?;
        self.s3 = Some(S3 {
            server,
            proxy,
            bucket,
        });
        for i in 0..self.workers.len() {
            if let Some(mut c) = self.workers[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            self.workers[i] = Some(self.spawn_worker(i)?);
        }
        self.s3()
    }

    /// Connections the store faults have dropped, failed or delayed so far.
    pub fn store_faulted(&self) -> u64 {
        self.s3.as_ref().map_or(0, |s3| s3.proxy.faulted())
    }

    /// Puts an object-store fault between the workers and the S3 server (`None`: pass).
    pub fn store_fault(&self, fault: Option<crate::storeproxy::StoreFault>) {
        if let Some(s3) = &self.s3 {
            s3.proxy.set(fault);
        }
    }

    /// Number of worker slots.
    pub fn size(&self) -> usize {
        self.workers.len()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
