//! Shared test harness: the dev server, a worker running beside a test body, pipeline specs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tidemark::client::{self, ConnectSettings};
use tidemark::workflows::payloads::RunSummary;
use tidemark::workflows::spec::PipelineSpec;

/// The shared dev server, the test PostgreSQL server (`TIDEMARK_TEST_PG_URL` or a throwaway
/// cluster), each started once per test binary on first use (tidemark-testkit).
pub use tidemark_testkit::{dev_server_address as server_address, pg_url};

/// Connection settings of the shared server.
pub fn settings() -> ConnectSettings {
    ConnectSettings::local(&server_address())
}

/// Runs `body` while a worker polls `task_queue`; stops the worker afterwards.
pub async fn with_worker<T>(task_queue: &str, body: impl Future<Output = T>) -> T {
    let client = client::connect(&settings()).await.expect("connect");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tidemark::worker::run(client, task_queue, async move {
        let _ = rx.await;
    });
    let body = async move {
        let out = body.await;
        let _ = tx.send(());
        out
    };
    let (w, out) = tokio::join!(worker, body);
    w.expect("worker ran");
    out
}

/// Runs one incremental run through Temporal and waits for it.
pub async fn run(spec: &PipelineSpec, task_queue: &str) -> Result<RunSummary, String> {
    let client = client::connect(&settings())
        .await
        .map_err(|e| e.to_string())?;
    let handle = client::start_run(&client, spec, task_queue)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(120),
        client::wait_run(&handle, Duration::from_secs(30), || {}),
    )
    .await
    .map_err(|_| "run timed out".to_string())?
    .map_err(|e| e.message)
}

/// A test directory with an orders spec (merge on order_id, partitioned by order_date).
pub struct Pipeline {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The loaded spec.
    pub spec: PipelineSpec,
}

impl Pipeline {
    /// Writes a spec with `extra_source` lines in [source] and `target_mode` lines in [target].
    pub fn new(name: &str, extra_source: &str, target_extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = if target_extra.contains("key") {
            ""
        } else {
            "key = [\"order_id\"]\n"
        };
        let text = format!(
            "name = \"{name}\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n{extra_source}\n[target]\nkind = \"delta\"\npath = \"lake/orders\"\n{key}partition_by = [\"order_date\"]\n{target_extra}\n"
        );
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).expect("write spec");
        let spec = tidemark::spec::load(&path).expect("spec loads");
        Pipeline { dir, spec }
    }

    /// Path of source file number `n`.
    pub fn source_file(&self, n: usize) -> PathBuf {
        PathBuf::from(&self.spec.source.path).join(format!("part-{n:05}.parquet"))
    }

    /// The pipeline's state store.
    pub fn state(&self) -> Box<dyn tidemark::state::StateStore> {
        tidemark::state::open(&self.spec).unwrap()
    }

    /// Current Delta version of the target (None if absent).
    pub async fn table_version(&self) -> Option<u64> {
        tidemark::target::delta::open(&self.spec.target.path)
            .await
            .expect("open table")
            .and_then(|t| t.version())
    }

    /// The stored watermark value.
    pub fn watermark(&self) -> Option<i64> {
        self.state()
            .read_watermark()
            .expect("read watermark")
            .and_then(|w| w.value)
    }
}

/// A unique task queue per test.
pub fn queue(test: &str) -> String {
    format!("it-{test}-{}", std::process::id())
}

/// True when `path` has no leftover staging or temp files under it.
pub fn no_leftovers(path: &Path) -> bool {
    fn walk(p: &Path, bad: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("run-") || name.contains(".tmp") {
                    bad.push(e.path());
                }
                if e.path().is_dir() {
                    walk(&e.path(), bad);
                }
            }
        }
    }
    let mut bad = Vec::new();
    walk(path, &mut bad);
    bad.is_empty()
}

/// A connected PostgreSQL client of the test server.
pub async fn pg_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// The workers' log (`<crash dir>/worker.log`, appended by every restart).
fn log_file(crash_dir: &Path) -> std::process::Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(crash_dir.join("worker.log"))
        .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from)
}

/// Real `tidemark worker` processes (the binary under test) with crash points enabled by a
/// plan, restarted whenever one exits (a crash point aborts it), until dropped.
pub struct CrashingWorkers {
    /// The crash directory (`plan` file and fired tokens).
    pub crash_dir: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl CrashingWorkers {
    /// Starts one supervised worker process on `task_queue`; `plan` lines are `point count`.
    pub fn start(task_queue: &str, plan: &str, env: &[(&str, String)]) -> Self {
        let crash_dir = tempfile::tempdir().expect("crash dir").keep();
        std::fs::write(crash_dir.join("plan"), plan).expect("write plan");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, q, flag) = (crash_dir.clone(), task_queue.to_string(), stop.clone());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let address = server_address();
        let thread = std::thread::spawn(move || {
            let spawn = || {
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
                cmd.args(["worker", "--address", &address, "--task-queue", &q])
                    .args(["--sticky-timeout-ms", "500"])
                    .env("TIDEMARK_CRASH_DIR", &dir)
                    .env("TIDEMARK_LOG", "warn")
                    .stdout(std::process::Stdio::null())
                    .stderr(log_file(&dir));
                for (k, v) in &env {
                    cmd.env(k, v);
                }
                tidemark_testkit::tie_to_parent(&mut cmd)
                    .spawn()
                    .expect("spawn the tidemark worker")
            };
            let mut child = spawn();
            let mut restarts = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if child.try_wait().ok().flatten().is_some() {
                    child = spawn();
                    restarts += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            restarts
        });
        CrashingWorkers {
            crash_dir,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the workers; returns how many times one was restarted.
    pub fn stop(mut self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }

    /// What the workers logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.crash_dir.join("worker.log")).unwrap_or_default()
    }

    /// How many times `point` fired.
    pub fn fired(&self, point: &str) -> usize {
        std::fs::read_dir(&self.crash_dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{point}."))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for CrashingWorkers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs one incremental run with a short heartbeat timeout (so a crashed worker's activity is
/// retried within seconds) and waits for it.
pub async fn run_fast_retry(spec: &PipelineSpec, task_queue: &str) -> Result<RunSummary, String> {
    let client = client::connect(&settings())
        .await
        .map_err(|e| e.to_string())?;
    let handle = client::start_run_with(
        &client,
        spec,
        task_queue,
        client::StartOptions {
            run: tidemark::workflows::payloads::RunOptions {
                heartbeat_timeout_ms: Some(2_000),
                ..Default::default()
            },
            task_timeout: Some(Duration::from_secs(2)),
            eager: false,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(180),
        client::wait_run(&handle, Duration::from_secs(60), || {}),
    )
    .await
    .map_err(|_| "run timed out".to_string())?
    .map_err(|e| e.message)
}

/// What one `tidemark` CLI process printed, and whether it succeeded.
pub struct CliRun {
    /// It exited 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (the log lines).
    pub stderr: String,
}

impl CliRun {
    /// Standard output, then standard error: everything it printed.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the `tidemark` binary with `args` at debug log level, with `env` added to and
/// `unset` removed from this process's environment (the tests' secret searches read it).
pub fn tidemark_cli(args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> CliRun {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args).env("TIDEMARK_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("run tidemark");
    CliRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The history of pipeline `name`'s run workflow as text, every payload decoded (payload
/// data is base64 in the history's JSON), so a search for a secret sees what Temporal stores.
pub async fn history_text(name: &str) -> String {
    use base64::Engine;
    use temporalio_client::WorkflowFetchHistoryOptions;
    use tidemark::workflows::{IncrementalRun, run_workflow_id};
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push('\n');
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let client = client::connect(&settings()).await.expect("connect");
    let json = client
        .get_workflow_handle::<IncrementalRun>(run_workflow_id(name))
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("the run's history");
    let mut out = String::new();
    walk(
        &serde_json::from_slice(&json).expect("history JSON"),
        &mut out,
    );
    out
}
