//! Command-line arguments (clap derive): plain data, resolved by `main`.

use clap::{Args, Parser, Subcommand, ValueEnum};
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

/// How to reach Temporal. The address and namespace default to Temporal's own conventions:
/// TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and `temporal.toml` profiles (TEMPORAL_PROFILE).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Temporal frontend `host:port` (default: TEMPORAL_ADDRESS, the profile, or localhost:7233).
    #[arg(long)]
    pub address: Option<String>,
    /// Temporal namespace (default: TEMPORAL_NAMESPACE, the profile, or `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Task queue of the workers.
    #[arg(long, env = "TIDEMARK_TASK_QUEUE", default_value = tidemark::workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec file without running it (exit 0 valid, 2 invalid).
    Validate {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// Print a JSON object (`valid`, `spec` or `error`).
        #[arg(long)]
        json: bool,
    },
    /// Start an incremental run and wait for it (exit 0 only on success).
    ///
    /// Needs a worker on the task queue (`tidemark worker` or `tidemark dev`). At most one run
    /// per pipeline is active at a time; a second start is refused.
    Run {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// Return once the run is started.
        #[arg(long)]
        no_wait: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Run a worker (workflow + activities) until SIGINT/SIGTERM.
    ///
    /// Every worker of a task queue must see the same `state_dir` and target storage.
    Worker {
        #[command(flatten)]
        connect: ConnectArgs,
        /// How long (ms) a workflow task waits for this worker's cache before any worker may
        /// take it (server default: 10 s). Lower it to fail over faster after a crash.
        #[arg(long)]
        sticky_timeout_ms: Option<u64>,
        /// Serve Prometheus metrics (tidemark_* per pipeline, and the SDK's temporal_*) on
        /// this address, e.g. 127.0.0.1:9464.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Show a pipeline's watermark, its lag, recent runs, active alerts, and a running run's
    /// live progress (through the workflow's `progress` query).
    ///
    /// Exit code 0, or 3 when an alert is active (for cron checks and CI).
    Status {
        /// A spec file, or a pipeline name (with --state-dir); with --all, a folder of specs
        /// (default: the current directory).
        pipeline: Option<String>,
        /// Every pipeline whose spec is in the folder (`*.toml`, not recursive).
        #[arg(long)]
        all: bool,
        /// Ledger lines to show per pipeline.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// State directory holding the pipeline (default ./.tidemark) when a name is given.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Print a pipeline's run ledger: every run, reset and reconciliation, oldest first.
    History {
        /// A spec file, or a pipeline name (with --state-dir).
        pipeline: String,
        /// State directory holding the pipeline (default ./.tidemark) when a name is given.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Only the last N lines.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line (the ledger's own format).
        #[arg(long)]
        json: bool,
    },
    /// Move a pipeline's watermark backwards (or clear it) for a full or partial reprocessing.
    ///
    /// Refuses while a run of the pipeline is active. Prints the plan, then applies it (unless
    /// --dry-run). Records the reset in the ledger. Pause the pipeline's schedule first.
    Reset {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// The new watermark (a cursor value: 2026-01-01T00:00:00Z, 2026-01-01, 1000).
        #[arg(long, conflicts_with = "epoch", required_unless_present = "epoch")]
        to: Option<String>,
        /// Clear the watermark: the next run reads from `initial` or the first row.
        #[arg(long)]
        epoch: bool,
        /// Print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Empty the target first (Delta: a delete commit; Parquet: every partition;
        /// PostgreSQL: TRUNCATE). Required for append-mode targets.
        #[arg(long)]
        truncate_target: bool,
        /// Print the plan (and outcome) as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Load a past range window by window, beside the live pipeline.
    ///
    /// Each window [a, b) is one run with its own idempotency token: it is published once
    /// however often it is retried, and the live watermark never moves. At most --parallel
    /// windows load at once; a failed window is retried alone (3 runs). Windows an earlier
    /// backfill loaded are skipped, so running the same command again resumes a stopped
    /// backfill; --resume also attaches to one still running. Progress shows on a terminal.
    Backfill {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// Start of the range (inclusive cursor value: 2026-01-01, 2026-01-01T06:00:00Z, 1000).
        #[arg(long)]
        from: String,
        /// End of the range (exclusive).
        #[arg(long)]
        to: String,
        /// Window size: a duration for timestamp cursors (1d, 6h), a number for integer ones.
        #[arg(long, default_value = "1d")]
        step: String,
        /// Windows loaded at once.
        #[arg(long, default_value_t = 2)]
        parallel: u32,
        /// Attach to the backfill in progress instead of refusing.
        #[arg(long)]
        resume: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Manage the pipeline's Temporal Schedule (from the spec's `[schedule]` table).
    Schedule {
        #[command(subcommand)]
        action: ScheduleCommand,
    },
    /// Start a local Temporal dev server (state under .tidemark/) and a worker, until Ctrl-C.
    Dev {
        /// Frontend port.
        #[arg(long, default_value_t = 7233)]
        port: u16,
        /// Where the server's SQLite file lives.
        #[arg(long, default_value = ".tidemark")]
        state_dir: PathBuf,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Self-contained demo: generates an orders source, starts a dev server and a worker,
    /// runs three incremental rounds (the third with late and boundary rows) into a Delta
    /// table, and checks the table against the source's newest version per key.
    Demo {
        /// Working directory for the demo's data, table and state (recreated).
        #[arg(long, default_value = "tidemark-demo")]
        dir: PathBuf,
        /// Keep the dev server and worker running afterwards, to browse the Web UI.
        #[arg(long)]
        keep: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `tidemark schedule ...`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create the schedule from the spec's `[schedule]` table, or update it to match the spec
    /// (an update keeps an operator's pause).
    Create {
        /// The pipeline spec (TOML).
        spec: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List tidemark's schedules in the namespace.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a schedule: spec, policies, recent and upcoming runs.
    Describe {
        /// A spec file or a pipeline name.
        pipeline: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Pause a schedule (runs in progress finish).
    Pause {
        /// A spec file or a pipeline name.
        pipeline: String,
        /// Why (shown by describe and in the Temporal UI).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Unpause a schedule.
    Unpause {
        /// A spec file or a pipeline name.
        pipeline: String,
        /// Note.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Start a run now through the schedule (skipped if a run is in progress).
    Trigger {
        /// A spec file or a pipeline name.
        pipeline: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a schedule (a run in progress continues).
    Delete {
        /// A spec file or a pipeline name.
        pipeline: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}
