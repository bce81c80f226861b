//! Command-line arguments (clap derive): the top-level [`Cli`], the [`Command`] list, and
//! the arguments shared by several subcommands. Each subcommand's own arguments and handler
//! live in its module.

pub mod backfill;
pub mod demo;
pub mod dev;
pub mod history;
pub mod maintain;
pub mod ping;
pub mod reset;
pub mod run;
pub mod schedule;
mod shared;
pub mod status;
pub mod validate;
pub mod worker;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use shared::{Named, load_spec, pipeline_name, resolve_pipeline, settings, shutdown_signal};
use std::path::PathBuf;

/// tidemark: incremental data pipelines that run as durable Temporal workflows.
///
/// A pipeline is a TOML spec (source with a cursor column, optional SQL transform, target).
/// Each `run` is one `IncrementalRun` workflow: process → stage → promote → update_watermark,
/// where promote is one atomic, idempotent commit and the watermark moves only after it.
///
/// Quick start: `tidemark demo`. Day to day: `tidemark dev` (local server + worker) in one
/// shell, `tidemark run pipeline.toml` in another.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More logging (or set TIDEMARK_LOG, e.g. TIDEMARK_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// How to reach Temporal. Every setting defaults to Temporal's own conventions, in the
/// `temporal` CLI's order: the flag, else the TEMPORAL_* environment (TEMPORAL_ADDRESS,
/// TEMPORAL_NAMESPACE, TEMPORAL_TLS, TEMPORAL_TLS_SERVER_CA_CERT_PATH,
/// TEMPORAL_TLS_CLIENT_CERT_PATH / _KEY_PATH, TEMPORAL_TLS_SERVER_NAME, TEMPORAL_API_KEY),
/// else the `temporal.toml` profile (TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Temporal frontend `host:port` (default: TEMPORAL_ADDRESS, the profile, or localhost:7233).
    #[arg(long)]
    pub address: Option<String>,
    /// Temporal namespace (default: TEMPORAL_NAMESPACE, the profile, or `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The `temporal.toml` profile to use (default: TEMPORAL_PROFILE, or `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// The `temporal.toml` file (default: TEMPORAL_CONFIG_FILE, or
    /// ~/.config/temporalio/temporal.toml).
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,
    /// Connect over TLS (also implied by any --tls-* flag or an API key).
    #[arg(long, conflicts_with = "no_tls")]
    pub tls: bool,
    /// Connect in plain text even if the environment or profile turns TLS on.
    #[arg(long)]
    pub no_tls: bool,
    /// CA certificate (PEM) the server's certificate must chain to (default: the system's
    /// trusted roots).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS (with --tls-cert).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name to check the server's certificate for (and send as SNI), when it is not the
    /// address's host.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// The environment variable that holds the API key (Temporal Cloud); TEMPORAL_API_KEY
    /// is read without this flag. The key itself is never taken on the command line.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Task queue of the workers.
    #[arg(long, env = "TIDEMARK_TASK_QUEUE", default_value = tidemark::workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
}

/// Subcommands. The doc comments here are the subcommands' `--help` texts; the argument
/// structs in the modules carry none, so these are the only ones.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec file without running it (exit 0 valid, 2 invalid).
    ///
    /// With --against-target, also show the schema change the next run would apply to the
    /// target under the spec's `[schema]` contract (or the error it would fail with: exit 2).
    Validate(validate::ValidateArgs),
    /// Start an incremental run and wait for it (exit 0 only on success).
    ///
    /// Needs a worker on the task queue (`tidemark worker` or `tidemark dev`). At most one run
    /// per pipeline is active at a time; a second start is refused. A window bigger than
    /// `[source] max_batch_rows` is read and committed batch after batch in the same run (each
    /// batch its own commit and watermark; progress shows batch i of ~n, --json lists them).
    Run(run::RunArgs),
    /// Run a worker (workflow + activities) until SIGINT/SIGTERM.
    ///
    /// Every worker of a task queue must see the same `state_dir` and target storage.
    Worker(worker::WorkerArgs),
    /// Show a pipeline's watermark, its lag, recent runs, active alerts, and a running run's
    /// live progress (through the workflow's `progress` query).
    ///
    /// Exit code 0, or 3 when an alert is active (for cron checks and CI).
    Status(status::StatusArgs),
    /// Print a pipeline's run ledger: every run, reset and reconciliation, oldest first.
    History(history::HistoryArgs),
    /// Move a pipeline's watermark backwards (or clear it) for a full or partial reprocessing.
    ///
    /// Refuses while a run of the pipeline is active. Prints the plan, then applies it (unless
    /// --dry-run). Records the reset in the ledger. Pause the pipeline's schedule first.
    Reset(reset::ResetArgs),
    /// Load a past range window by window, beside the live pipeline.
    ///
    /// Each window [a, b) is one run with its own idempotency token: it is published once
    /// however often it is retried, and the live watermark never moves. At most --parallel
    /// windows load at once; a failed window is retried alone (3 runs). Windows an earlier
    /// backfill loaded are skipped, so running the same command again resumes a stopped
    /// backfill; --resume also attaches to one still running. Progress shows on a terminal.
    Backfill(backfill::BackfillArgs),
    /// Manage the pipeline's Temporal Schedule (from the spec's `[schedule]` table).
    Schedule(schedule::ScheduleArgs),
    /// Start a local Temporal dev server (state under .tidemark/) and a worker, until Ctrl-C.
    Dev(dev::DevArgs),
    /// Check that a worker serves the task queue: run a workflow of no-op activities.
    ///
    /// Prints the round trip (start to result): the orchestration floor of this server, task
    /// queue and worker, which a pipeline run's time can be compared with. Exit 0 when a
    /// worker answered, 1 when none did within --timeout.
    Ping(ping::PingArgs),
    /// Maintain the pipeline's table: compact files whose deleted rows (deletion vectors) or
    /// small size pass the `[maintenance]` thresholds, write a checkpoint, vacuum files no
    /// version needs (older than the retention, at least the longest run).
    ///
    /// Runs as a Temporal workflow under the pipeline's own id, so never beside a run of the
    /// pipeline (refused while one is active); idempotent under retry and crash. `--dry-run`
    /// plans only. `[maintenance] cron` / `every` makes `tidemark schedule create` schedule
    /// it too.
    Maintain(maintain::MaintainArgs),
    /// Self-contained demo: generates an orders source, starts a dev server and a worker,
    /// runs three incremental rounds (the third with late and boundary rows) into a Delta
    /// table, and checks the table against the source's newest version per key.
    Demo(demo::DemoArgs),
}

impl Command {
    /// Runs the subcommand; the exit code on success.
    pub async fn run(self) -> anyhow::Result<u8> {
        match self {
            Command::Validate(a) => validate::run(a).await,
            Command::Run(a) => run::run(a).await,
            Command::Worker(a) => worker::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::History(a) => history::run(a),
            Command::Reset(a) => reset::run(a).await,
            Command::Backfill(a) => backfill::run(a).await,
            Command::Schedule(a) => schedule::run(a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Ping(a) => ping::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Maintain(a) => maintain::run(a).await,
        }
    }
}
