//! Command-line arguments of `tidemark-bench` (clap derive): the options `tidemark bench ...`
//! had, unchanged.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// tidemark-bench: benchmarks of tidemark against the Python peer in ../shared/bench.
///
/// Run a release build of both binaries, from the checkout:
/// `cargo build --release --bins && cargo run --release -p tidemark-bench -- all`.
/// The merge and overhead scenarios drive the `tidemark` binary found beside this one
/// (or `TIDEMARK_BIN`). Writes its sections of docs/benchmarks.md.
#[derive(Debug, Parser)]
#[command(name = "tidemark-bench", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More logging (or set TIDEMARK_LOG, e.g. TIDEMARK_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub scenario: BenchCommand,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `tidemark-bench ...`: the scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// S4: empty and 1-row runs, each from a fresh `tidemark run` process through a local dev
    /// server and a worker process, in four variants (today's path, eager activity dispatch,
    /// local activities, both) beside the no-op floor (`tidemark ping --activities 4`);
    /// end-to-end medians, the time per activity, history events and workflow tasks per run.
    Overhead {
        /// Repetitions of each kind of run (medians are reported).
        #[arg(long, default_value_t = tidemark_bench::overhead::FULL_REPS)]
        reps: usize,
        /// Working directory (recreated).
        #[arg(long, default_value = "target/bench-overhead")]
        dir: PathBuf,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// S1, S2, S5, S6: a new daily file merged into a Delta table loaded from 1, 10 and 40
    /// earlier files (S1) and into a ~10 M-row table (S2), through a dev server and a fresh
    /// worker per run, against the peer's seed_pipeline.py on a copy of the same table; peak
    /// RSS (S5) and Parquet bytes per second next to the disk's throughput (S6).
    Merge {
        /// S1: source sizes in files, the new file included (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,10,40")]
        files: Vec<usize>,
        #[command(flatten)]
        sizes: MergeSizes,
        /// Working directory (recreated).
        #[arg(long, default_value = "target/bench-merge")]
        dir: PathBuf,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// S2 on object storage: the steady merge of S2 with the Delta table and state_dir on a
    /// local S3-compatible server (moto, started here), beside the local-disk S2 measured in
    /// the same run; the peer writes its table to the same server.
    MergeS3 {
        #[command(flatten)]
        sizes: MergeSizes,
        /// Working directory (recreated).
        #[arg(long, default_value = "target/bench-merge-s3")]
        dir: PathBuf,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// S7, scale: a first load of 2.5 M, 10 M and 40 M rows into an empty Delta table, tidemark
    /// (in batches of its budget) against the peer: peak RSS and time against rows.
    Scale {
        /// Source sizes in 250,000-row files (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10,40,160")]
        files: Vec<usize>,
        /// Rows per daily file.
        #[arg(long, default_value_t = 250_000)]
        rows: usize,
        /// Repetitions of each size.
        #[arg(long, default_value_t = 1)]
        reps: usize,
        /// `[source] max_batch_rows` of tidemark's pipeline (default: the product's default).
        #[arg(long)]
        max_batch_rows: Option<u64>,
        /// Working directory (recreated).
        #[arg(long, default_value = "target/bench-scale")]
        dir: PathBuf,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Every scenario (S1–S7) at full size, then the plots: regenerates docs/benchmarks.md
    /// and docs/bench/*.png. About an hour on two cores.
    All {
        /// Working directory (recreated).
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
        /// The report to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
    /// S3: apply Debezium events (60% updates, 10% deletes) to a table; tidemark vs the peer's
    /// one-event-at-a-time applier (seed_cdc.py), events per second side by side.
    Cdc {
        /// Rows of the table the events apply to.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Events tidemark applies in one run (also measured at a tenth, for linearity).
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events the peer applies (it rebuilds the table per event: a size it can finish).
        #[arg(long, default_value_t = 1_000)]
        peer_events: usize,
        /// Repetitions of each measurement (medians are reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Skip the Python peer.
        #[arg(long)]
        no_peer: bool,
        /// Working directory (recreated).
        #[arg(long, default_value = "target/bench-cdc")]
        dir: PathBuf,
        #[command(flatten)]
        report: ReportArgs,
    },
}

/// What every scenario takes about its size and its report.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Tiny sizes, one or two repetitions (what the test suite runs so the code cannot rot).
    #[arg(long)]
    pub quick: bool,
    /// The report whose sections of this scenario are replaced (docs/benchmarks.md unless
    /// --quick; none with --quick unless given).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ReportArgs {
    /// Where the scenario's sections are written, if anywhere.
    pub fn report_to(&self) -> Option<PathBuf> {
        self.out
            .clone()
            .or_else(|| (!self.quick).then(|| PathBuf::from("docs/benchmarks.md")))
    }
}

/// The table sizes of the merge scenarios (S2 on local disk and on object storage).
#[derive(Debug, Args)]
pub struct MergeSizes {
    /// Rows per daily file.
    #[arg(long, default_value_t = 250_000)]
    pub rows: usize,
    /// S2: files loaded into the table before the new one (48 × 250,000-row files make a
    /// ~10 M-row table).
    #[arg(long, default_value_t = 48)]
    pub s2_loaded: usize,
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}
