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
    },
    /// Show a pipeline's watermark, its lag, recent runs, and a running run's live progress.
    Status {
        /// A spec file, or a pipeline name (with --state-dir).
        pipeline: String,
        /// State directory holding the pipeline (default ./.tidemark) when a name is given.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
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
