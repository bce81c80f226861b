//! Every value that crosses Temporal: activity inputs and outputs, the run summary and the
//! `progress` query's answer. Batches never travel here, only manifests that point at files
//! under the pipeline's `state_dir`.

use crate::cursor::CursorType;
use crate::spec::PipelineSpec;
use serde::{Deserialize, Serialize};

/// Input of the `IncrementalRun` workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInput {
    /// The resolved spec, embedded so the history says exactly what ran.
    pub spec: PipelineSpec,
    /// Operational knobs of this run.
    #[serde(default)]
    pub options: RunOptions,
    /// The end of the run's window for a timestamp cursor (ms since epoch): a scheduled run's
    /// action time, passed on by `ScheduledRun`.
    #[serde(default)]
    pub as_of_ms: Option<i64>,
    /// Exclusive upper bound of the window in cursor units (µs for timestamps): a backfill
    /// window's end.
    #[serde(default)]
    pub until: Option<i64>,
    /// A run catching up a big window continues as a new execution after many batches: what
    /// the earlier executions did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<Carried>,
}

/// What the earlier executions of a continued run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// When the run started (ms since epoch, workflow time).
    pub started_at_ms: i64,
    /// The run's progress when the previous execution continued as new: its counts so far
    /// and its committed batches.
    pub progress: Progress,
}

/// One batch of a run, as `progress` and the run summary list them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDone {
    /// The batch's run_seq (its own token, ledger line and watermark).
    pub run_seq: u64,
    /// Its window's inclusive lower bound.
    pub window_low: Option<i64>,
    /// Its window's upper bound (the cut).
    pub window_high: Option<i64>,
    /// Rows in the batch.
    pub rows_batch: u64,
    /// Rows inserted + updated.
    pub rows_promoted: u64,
    /// The target version of its commit.
    pub target_version: Option<i64>,
    /// Workflow-time milliseconds it took.
    pub elapsed_ms: u64,
    /// Its finished activities (empty in a history written before they were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<ActivityTiming>,
}

/// Operational knobs of a run (timeouts), fixed at start and recorded in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunOptions {
    /// Heartbeat timeout of every activity, ms (default 30 s): how soon a killed or paused
    /// worker's activity is retried elsewhere.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Set the `TidemarkAlert` search attribute on a run whose alerts fire. Only when the
    /// namespace has the attribute (the client checks before starting; an unregistered
    /// attribute would fail the workflow task).
    #[serde(default)]
    pub alert_search_attribute: bool,
    /// Batches one execution of a run commits before it continues as new (None: 100). A
    /// knob for tests; the history stays short either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches_per_execution: Option<u32>,
}

/// Identity of one workflow execution, passed to activities for the ledger and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// Temporal workflow id.
    pub workflow_id: String,
    /// Temporal run id.
    pub run_id: String,
    /// Workflow start time (ms since epoch), from workflow time.
    pub started_at_ms: i64,
}

/// Input of `process`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInput {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Who runs.
    pub run: RunIdentity,
    /// A scheduled run's action time (ms since epoch): rows whose timestamp cursor is later
    /// are left to the next run, so a delayed start or a retry reads the same window.
    #[serde(default)]
    pub as_of_ms: Option<i64>,
    /// Exclusive upper bound of the window in cursor units (a backfill window's end).
    #[serde(default)]
    pub until: Option<i64>,
}

/// Input of `process_local`: `process` tried inside the workflow task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalProcessInput {
    /// What `process` gets.
    pub process: ProcessInput,
    /// Run locally only when the previous run committed at most this many rows...
    pub max_rows: u64,
    /// ...and its watermark was written at most this long ago (ms).
    pub max_age_ms: u64,
}

/// Result of `process_local`: the manifest, or why `process` must run as a regular activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalProcessOutcome {
    /// Processed inside the workflow task.
    Done(Box<ProcessManifest>),
    /// Nothing was read: the window may be big (first load, catch-up, big batches).
    Deferred(String),
}

/// One column of the processed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Polars dtype, as displayed.
    pub dtype: String,
    /// Null values of the column in the batch. A column null in every row says nothing with
    /// its type (a change-event source types it as text), so it fits any type of the table's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nulls: u64,
    /// Where the column first appeared in the run's input (a file, the query, an event), for
    /// errors that must name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// What a run's schema contract did (`[schema]`): the table's columns added and widened, the
/// columns written as null and the batch columns dropped. Recorded in the ledger line,
/// logged, and raised as the `schema_change` alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    /// Columns added to the table (nullable; earlier rows read null), with their types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<ColumnType>,
    /// Columns whose type the table widened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widened: Vec<WidenedColumn>,
    /// Table columns (or columns of other files of the window) the batch lacked, written as
    /// null, with the rows concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nulled: Vec<ColumnCount>,
    /// Batch columns the table lacks, dropped (`new_columns = "ignore"`), with the non-null
    /// values dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<ColumnCount>,
    /// How the target applied it (e.g. `metadata action in commit 7`, `ALTER TABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
}

impl SchemaChange {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.widened.is_empty()
            && self.nulled.is_empty()
            && self.ignored.is_empty()
    }

    /// Whether the table's schema changed (columns added or widened).
    pub fn changes_table(&self) -> bool {
        !self.added.is_empty() || !self.widened.is_empty()
    }

    /// Adds `other`'s entries (a column counted twice sums its rows).
    pub fn absorb(&mut self, other: &SchemaChange) {
        for c in &other.added {
            if !self.added.iter().any(|a| a.name == c.name) {
                self.added.push(c.clone());
            }
        }
        for w in &other.widened {
            if !self.widened.iter().any(|a| a.name == w.name) {
                self.widened.push(w.clone());
            }
        }
        for (mine, theirs) in [
            (&mut self.nulled, &other.nulled),
            (&mut self.ignored, &other.ignored),
        ] {
            for c in theirs {
                match mine.iter_mut().find(|m| m.name == c.name) {
                    Some(m) => m.rows += c.rows,
                    None => mine.push(c.clone()),
                }
            }
        }
        if self.applied.is_none() {
            self.applied = other.applied.clone();
        }
    }

    /// One line for logs, alerts and `status`: `added note (string); widened qty int32 →
    /// int64; nulled region (12 rows); ignored debug (3 values)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            let cols: Vec<String> = self
                .added
                .iter()
                .map(|c| format!("{} ({})", c.name, c.dtype))
                .collect();
            parts.push(format!("added {}", cols.join(", ")));
        }
        if !self.widened.is_empty() {
            let cols: Vec<String> = self
                .widened
                .iter()
                .map(|w| format!("{} {} → {}", w.name, w.from, w.to))
                .collect();
            parts.push(format!("widened {}", cols.join(", ")));
        }
        if !self.nulled.is_empty() {
            let cols: Vec<String> = self
                .nulled
                .iter()
                .map(|c| format!("{} ({} rows)", c.name, c.rows))
                .collect();
            parts.push(format!("nulled {}", cols.join(", ")));
        }
        if !self.ignored.is_empty() {
            let cols: Vec<String> = self
                .ignored
                .iter()
                .map(|c| format!("{} ({} values)", c.name, c.rows))
                .collect();
            parts.push(format!("ignored {}", cols.join(", ")));
        }
        parts.join("; ")
    }
}

/// A column and its type, in tidemark's type names (`int64`, `string`, `decimal(12,2)`,
/// `timestamp[us, UTC]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnType {
    /// Column name.
    pub name: String,
    /// Type name.
    pub dtype: String,
}

/// A column whose type was widened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidenedColumn {
    /// Column name.
    pub name: String,
    /// The table's type before.
    pub from: String,
    /// The table's type after.
    pub to: String,
}

/// A column and a count of rows or values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnCount {
    /// Column name.
    pub name: String,
    /// Rows (nulled) or non-null values (ignored).
    pub rows: u64,
}

/// The result of one `[[checks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Its query.
    pub sql: String,
    /// The value the query returned (None: null).
    pub value: Option<f64>,
    /// The expectation in words (`= 0`, `<= 10`).
    pub expectation: String,
    /// Whether the value met it.
    pub passed: bool,
    /// `fail` or `warn`.
    pub on_fail: crate::spec::OnCheckFail,
}

/// A file written by `process` under the run directory, with its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchFile {
    /// Absolute path.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Hex SHA-256 of the file's bytes; `stage` refuses a file that does not match.
    pub sha256: String,
}

/// What `process` produced: the run's fixed identity, its window and its counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessManifest {
    /// The run's sequence number, assigned once from the (reconciled) store.
    pub run_seq: u64,
    /// The cursor's type, declared or inferred.
    pub cursor_type: CursorType,
    /// The committed watermark this run started from.
    pub watermark_before: Option<i64>,
    /// Inclusive lower bound of the read window (watermark − lookback, or `initial`).
    pub window_low: Option<i64>,
    /// Greatest cursor seen in this read (the window's upper bound).
    pub window_high: Option<i64>,
    /// The watermark this run will publish once promoted.
    pub watermark_after: Option<i64>,
    /// Source files considered.
    pub files_total: u64,
    /// Source files skipped from their statistics alone (entirely below the window).
    pub files_skipped: u64,
    /// Rows read inside the window.
    pub rows_extracted: u64,
    /// Rows dropped because their cursor was null (`on_null_cursor = "exclude"`).
    pub rows_null_cursor: u64,
    /// Rows at the watermark value already loaded by the previous append run.
    pub rows_boundary_skipped: u64,
    /// Rows removed by the per-key dedup.
    pub rows_deduplicated: u64,
    /// Rows whose event time is below the previous event-time high mark.
    pub rows_late: u64,
    /// Rows past a scheduled run's action time, left to the next run.
    #[serde(default)]
    pub rows_after_as_of: u64,
    /// Late rows routed to the quarantine table.
    pub rows_quarantined: u64,
    /// Rows in the batch bound for the target.
    pub rows_batch: u64,
    /// The batch bound for the target (None when empty).
    pub batch: Option<BatchFile>,
    /// Late rows bound for the quarantine table (None when none).
    pub quarantine: Option<BatchFile>,
    /// Schema of the batch.
    pub schema: Vec<ColumnInfo>,
    /// Path of the watermark document this run publishes (written by `process`).
    pub next_watermark_path: String,
    /// Time spent, in milliseconds.
    pub duration_ms: u64,
    /// The attempt that produced this manifest (1 = first try).
    #[serde(default)]
    pub attempt: u32,
    /// Change-event sources: what the run read and will apply.
    #[serde(default)]
    pub cdc: Option<CdcStats>,
    /// How the files of the window were unified into one batch schema under the schema
    /// contract (columns of other files nulled, columns ignored); None when they agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_resolution: Option<SchemaChange>,
    /// The window was bigger than a batch (`max_batch_rows` / `max_batch_bytes`) and was cut
    /// at `window_high`: rows past it remain for the next batch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// When cut: about how many rows remain past the cut (from the source's statistics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_remaining_estimate: Option<u64>,
    /// A single cursor value held more rows than a batch may: it was read whole, in one
    /// batch (rows tied at a value are never split), named here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oversized_value: Option<String>,
}

/// What a change-event run read (`rows_extracted` counts its events, `rows_deduplicated` the
/// changes superseded within the batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcStats {
    /// Events read (tombstones and bad events included).
    pub events: u64,
    /// Tombstones skipped.
    pub tombstones: u64,
    /// Malformed events set aside in the dead-letter file.
    pub bad_events: u64,
    /// Upserts (c, u, r) in the reduced batch.
    pub upserts: u64,
    /// Deletes in the reduced batch.
    pub deletes: u64,
    /// The batch contains a truncate: the target is emptied in the same commit.
    pub truncate: bool,
    /// The dead-letter file of this run, when it set events aside.
    pub dead_letter: Option<String>,
}

impl ProcessManifest {
    /// Whether there is anything to stage and promote (a truncate with no rows after it
    /// still commits).
    pub fn has_rows(&self) -> bool {
        self.batch.is_some()
            || self.quarantine.is_some()
            || self.cdc.as_ref().is_some_and(|c| c.truncate)
    }
}

/// Input of `stage`, `promote` and `update_watermark`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInput {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Who runs.
    pub run: RunIdentity,
    /// What `process` produced.
    pub manifest: ProcessManifest,
}

/// What `stage` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageOutput {
    /// Staged files (invisible to readers of the target).
    pub files: Vec<String>,
    /// Bytes staged.
    pub bytes: u64,
    /// Time spent, in milliseconds.
    pub duration_ms: u64,
    /// The attempt that produced this result (1 = first try).
    #[serde(default)]
    pub attempt: u32,
}

/// What `promote` did. A repeated promote returns `already_promoted = true` and the version
/// that carries the run's token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromoteOutput {
    /// Target table version that carries this run's commit.
    pub target_version: Option<i64>,
    /// Quarantine table version, when late rows were quarantined.
    pub quarantine_version: Option<i64>,
    /// True when the target already held this run's token: nothing was written.
    pub already_promoted: bool,
    /// Rows inserted into the target.
    pub rows_inserted: u64,
    /// Rows updated in the target.
    pub rows_updated: u64,
    /// Rows deleted (change events).
    #[serde(default)]
    pub rows_deleted: u64,
    /// Rows of the batch left alone because the target held a newer version.
    pub rows_stale: u64,
    /// Time spent, in milliseconds.
    pub duration_ms: u64,
    /// The attempt that produced this result (1 = first try).
    #[serde(default)]
    pub attempt: u32,
    /// What the schema contract changed in the table with this commit (None: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<SchemaChange>,
    /// The audit checks' results (they ran before the commit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
}

/// Input of `update_watermark`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkInput {
    /// The run's commit input.
    pub commit: CommitInput,
    /// The promote result (None for an empty run).
    pub promote: Option<PromoteOutput>,
    /// Stage time, for the ledger.
    pub stage_ms: u64,
}

/// What `update_watermark` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkOutput {
    /// The watermark now in the store.
    pub watermark: Option<i64>,
    /// False when the store already held this run (a retry).
    pub updated: bool,
    /// Rules of the `[monitor]` table that fired for this run (`lag`, `spike`, ...).
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Time spent, in milliseconds.
    pub duration_ms: u64,
    /// The attempt that produced this result (1 = first try).
    #[serde(default)]
    pub attempt: u32,
}

/// Input of `record_failure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureInput {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Who ran.
    pub run: RunIdentity,
    /// The run's sequence number, if `process` got that far.
    pub run_seq: Option<u64>,
    /// The phase that failed.
    pub phase: Phase,
    /// The error, as the activity reported it.
    pub message: String,
}

/// Phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Scheduled, no activity started yet.
    #[default]
    Starting,
    /// Extract, dedup, transform.
    Process,
    /// Writing the batch to staging.
    Stage,
    /// The atomic commit.
    Promote,
    /// Persisting the new watermark.
    UpdateWatermark,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Table maintenance (a `Maintain` workflow holds the pipeline's id).
    Maintain,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Process => "process",
            Phase::Stage => "stage",
            Phase::Promote => "promote",
            Phase::UpdateWatermark => "update_watermark",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Maintain => "maintain",
        }
    }
}

/// One finished activity, as the workflow saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityTiming {
    /// Activity name.
    pub activity: String,
    /// Time from schedule to result, in workflow time (milliseconds).
    pub elapsed_ms: u64,
    /// The attempt that succeeded (1 = first try; more means retries).
    pub attempt: u32,
    /// Ran as a local activity (inside the workflow task). Its `elapsed_ms` is workflow time
    /// too: the SDK moves workflow time on by a local activity's runtime when it resolves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

/// Answer of the `progress` query, and the core of the run summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Progress {
    /// Pipeline name.
    pub pipeline: String,
    /// Current phase.
    pub phase: Phase,
    /// Run sequence number, once assigned.
    pub run_seq: Option<u64>,
    /// Cursor type, once known.
    pub cursor_type: Option<CursorType>,
    /// Inclusive window lower bound.
    pub window_low: Option<i64>,
    /// Window upper bound (max cursor read).
    pub window_high: Option<i64>,
    /// Source files considered.
    pub files_total: u64,
    /// Source files skipped from their statistics alone.
    pub files_skipped: u64,
    /// Rows extracted.
    pub rows_extracted: u64,
    /// Rows removed by dedup.
    pub rows_deduplicated: u64,
    /// Late rows counted.
    pub rows_late: u64,
    /// Rows sent to quarantine.
    pub rows_quarantined: u64,
    /// Rows in the batch.
    pub rows_batch: u64,
    /// Rows inserted + updated in the target.
    pub rows_promoted: u64,
    /// Watermark before the run.
    pub watermark_before: Option<i64>,
    /// Watermark after the run (planned until promoted).
    pub watermark_after: Option<i64>,
    /// Target version of the commit.
    pub target_version: Option<i64>,
    /// True when promote found the run already committed.
    pub already_promoted: bool,
    /// Finished activities of the batch in progress (each committed batch keeps its own in
    /// `batches`; [`Progress::run_activities`] sums them over the run).
    pub activities: Vec<ActivityTiming>,
    /// Error message when failed.
    pub error: Option<String>,
    /// A scheduled run's action time (ms since epoch), the upper bound of its window.
    #[serde(default)]
    pub as_of_ms: Option<i64>,
    /// Alert rules that fired when the run finished.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// What the schema contract did (columns added, widened, nulled, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<SchemaChange>,
    /// The audit checks' results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// The batch in progress (1-based). A window bigger than a batch is read in several,
    /// each committed on its own; the counts above are the run's, summed over its batches.
    #[serde(default)]
    pub batch: u32,
    /// About how many batches the run takes (from the source's estimate of what remains),
    /// when it takes more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches_estimate: Option<u32>,
    /// A batch read a single cursor value holding more rows than the budget (rows tied at a
    /// value are never split): the value, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oversized_value: Option<String>,
    /// The run stopped at `[execution] max_batches` with rows left: the next run goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batches_capped: bool,
    /// The run's committed batches, oldest first (only when it took more than one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<BatchDone>,
}

impl Progress {
    /// The run's activities: for a run in batches, each activity's time summed over its
    /// batches (the highest attempt, local only when it ran locally in every batch), in the
    /// order they first ran; for a run of one batch, that batch's.
    pub fn run_activities(&self) -> Vec<ActivityTiming> {
        if self.batches.iter().all(|b| b.activities.is_empty()) {
            return self.activities.clone();
        }
        let mut total: Vec<ActivityTiming> = Vec::new();
        for a in self.batches.iter().flat_map(|b| &b.activities) {
            match total.iter_mut().find(|t| t.activity == a.activity) {
                Some(t) => {
                    t.elapsed_ms += a.elapsed_ms;
                    t.attempt = t.attempt.max(a.attempt);
                    t.local &= a.local;
                }
                None => total.push(a.clone()),
            }
        }
        total
    }
}

/// Result of a successful `IncrementalRun`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Final progress.
    pub progress: Progress,
    /// Whole-run time in workflow time, milliseconds.
    pub duration_ms: u64,
}

/// One window `[low, high)` of a backfill, in cursor units, with its texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillWindow {
    /// Inclusive lower bound.
    pub low: i64,
    /// Exclusive upper bound.
    pub high: i64,
    /// `low` as a cursor value (the window run's `initial`).
    pub low_text: String,
    /// `high` as a cursor value.
    pub high_text: String,
    /// A compact name (`20260101T000000Z-20260102T000000Z`), part of the window's token.
    pub label: String,
}

impl BackfillWindow {
    /// The name of the pseudo-pipeline that loads this window of `pipeline`: its own state
    /// directory, its own idempotency token in the target, never the live watermark.
    pub fn pipeline_name(&self, pipeline: &str) -> String {
        format!("{pipeline}@bf-{}", self.label)
    }
}

/// Input of the `Backfill` workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillInput {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// The windows, in order.
    pub windows: Vec<BackfillWindow>,
    /// Windows loaded at once.
    pub parallel: u32,
    /// Run options for each window's run.
    #[serde(default)]
    pub options: RunOptions,
}

/// Input of `backfill_plan` and `record_backfill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillPlanInput {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// The windows concerned.
    pub windows: Vec<BackfillWindow>,
    /// For `record_backfill`: the window run's summary.
    #[serde(default)]
    pub summary: Option<RunSummary>,
}

/// Live state of a backfill (its `progress` query) and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BackfillProgress {
    /// Pipeline.
    pub pipeline: String,
    /// Windows requested.
    pub windows_total: u32,
    /// Windows a previous backfill had already loaded (skipped).
    pub already_covered: u32,
    /// Windows loaded by this backfill.
    pub done: u32,
    /// Labels of windows loading now.
    pub running: Vec<String>,
    /// Window runs that failed and were retried.
    pub retried: u32,
    /// Labels of windows that failed every attempt.
    pub failed: Vec<String>,
    /// Rows inserted or updated in the target.
    pub rows_promoted: u64,
    /// True once every window is settled.
    pub finished: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Input of the `Maintain` workflow and its activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintainInput {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Who runs.
    pub run: RunIdentity,
    /// Plan and report only: change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Operational knobs (the activity's heartbeat timeout).
    #[serde(default)]
    pub options: RunOptions,
}

/// What a maintenance did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintainReport {
    /// Pipeline.
    pub pipeline: String,
    /// The target, in words.
    pub target: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Files rewritten (compacted: their live rows, without deletion vectors).
    pub files_compacted: u64,
    /// Files the compaction wrote.
    pub files_written: u64,
    /// Rows the compacted files' deletion vectors deleted (purged by the rewrite).
    pub rows_purged: u64,
    /// Live rows rewritten.
    pub rows_rewritten: u64,
    /// Bytes of the compacted files.
    pub bytes_compacted: u64,
    /// The compaction's table version (None: nothing to compact, or dry).
    pub compaction_version: Option<i64>,
    /// The compaction was already committed (a retry found its token).
    #[serde(default)]
    pub already_compacted: bool,
    /// The table version a checkpoint was written at.
    pub checkpoint_version: Option<i64>,
    /// Files vacuumed (or, dry, that would be).
    pub files_vacuumed: u64,
    /// The retention vacuum used (ms): the spec's, or the pipeline's longest run when longer.
    pub vacuum_retention_ms: u64,
    /// What else to know (why nothing was done, a retention raised, a target's own job).
    pub notes: Vec<String>,
    /// Time spent, ms.
    pub duration_ms: u64,
}
