//! The resolved pipeline spec: what the TOML file said, validated, with paths made absolute.
//!
//! It is embedded in every run's workflow input, so the history records exactly what ran.
//! Parsing and validation of the TOML lives in `tidemark::spec`; this module holds only the
//! serialisable result.

use crate::cursor::{CursorType, Lookback};
use serde::{Deserialize, Serialize};

/// A validated pipeline spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    /// Unique pipeline name, `[A-Za-z0-9_-]+`.
    pub name: String,
    /// Absolute path of the spec file this was read from.
    pub spec_path: String,
    /// Absolute state directory: watermark store, run ledger, per-run batches.
    pub state_dir: String,
    /// Where rows come from.
    pub source: SourceSpec,
    /// Optional Polars SQL over the extracted batch, named `batch`.
    pub transform: Option<TransformSpec>,
    /// Where rows go.
    pub target: TargetSpec,
    /// Late-arrival handling (needs `source.event_time`).
    pub late: LateSpec,
    /// Alert thresholds, evaluated after every run and by `status`.
    #[serde(default)]
    pub monitor: MonitorSpec,
    /// The Temporal Schedule `tidemark schedule create` makes (None: run by hand only).
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// How a run's steps are executed (local activities or not).
    #[serde(default)]
    pub execution: ExecutionSpec,
    /// The schema contract: what a run does when the batch's columns differ from the
    /// table's, or among the files of its window.
    #[serde(default, skip_serializing_if = "SchemaContract::is_default")]
    pub schema: SchemaContract,
    /// Audit checks over the staged batch, run before it is published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// Table maintenance (`tidemark maintain`, and its optional schedule).
    #[serde(default)]
    pub maintenance: MaintenanceSpec,
}

/// The `[maintenance]` table: what `tidemark maintain` does to the target, and when a
/// Temporal Schedule runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceSpec {
    /// When maintenance runs on its own (a Temporal Schedule `tidemark schedule create`
    /// makes beside the pipeline's); None: by hand only.
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// Compact a file whose deleted rows (by deletion vector) are at least this share of it.
    pub deleted_fraction: f64,
    /// Compact files smaller than this (bytes) when a partition holds two or more (0: off).
    pub small_file_bytes: u64,
    /// The size compaction aims its files at (bytes).
    pub target_file_bytes: u64,
    /// Vacuum files unreferenced for longer than this (ms); never below the pipeline's
    /// longest run.
    pub vacuum_retention_ms: u64,
    /// Write a checkpoint of the table's log.
    pub checkpoint: bool,
}

impl Default for MaintenanceSpec {
    fn default() -> Self {
        MaintenanceSpec {
            schedule: None,
            deleted_fraction: 0.2,
            small_file_bytes: 16 << 20,
            target_file_bytes: 128 << 20,
            vacuum_retention_ms: 7 * 24 * 60 * 60 * 1000,
            checkpoint: true,
        }
    }
}

/// The `[schema]` table. The defaults refuse every change (no silent schema evolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaContract {
    /// A batch column the table lacks.
    #[serde(default)]
    pub new_columns: NewColumns,
    /// A batch column whose type differs from the table's.
    #[serde(default)]
    pub type_changes: TypeChanges,
    /// A table column the batch lacks.
    #[serde(default)]
    pub missing_columns: MissingColumns,
}

impl SchemaContract {
    /// Every key at its default (`fail`).
    pub fn is_default(&self) -> bool {
        *self == SchemaContract::default()
    }
}

/// `[schema] new_columns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewColumns {
    /// Fail the run, naming the column (default).
    #[default]
    Fail,
    /// Add the column to the table, nullable: earlier rows read null.
    Add,
    /// Drop the column from the batch, counting the values dropped.
    Ignore,
}

/// `[schema] type_changes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeChanges {
    /// Fail the run, naming the column and both types (default).
    #[default]
    Fail,
    /// Widen the table's column when the new type holds every old value exactly
    /// (int8→16→32→64, float32→64, int→decimal wide enough, decimal precision up,
    /// date→timestamp); any other change still fails.
    Widen,
}

/// `[schema] missing_columns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingColumns {
    /// Fail the run, naming the column (default).
    #[default]
    Fail,
    /// Write the column as null in the batch's rows.
    Null,
}

/// One `[[checks]]` entry: a Polars SQL query over the staged batch (table `batch`) and,
/// where the target can be queried, the target (`target`), returning one number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// Name, for messages, the ledger and `status`.
    pub name: String,
    /// The query: one row, one numeric (or boolean) column.
    pub sql: String,
    /// The value must equal this.
    #[serde(default)]
    pub expect: Option<f64>,
    /// The value must be at least this.
    #[serde(default)]
    pub expect_min: Option<f64>,
    /// The value must be at most this.
    #[serde(default)]
    pub expect_max: Option<f64>,
    /// What a failed check does.
    #[serde(default)]
    pub on_fail: OnCheckFail,
    /// The query reads the table `target` (validated: the target kind can be queried).
    #[serde(default)]
    pub reads_target: bool,
}

impl CheckSpec {
    /// Whether `value` meets the expectation.
    pub fn passes(&self, value: f64) -> bool {
        self.expect.is_none_or(|e| value == e)
            && self.expect_min.is_none_or(|m| value >= m)
            && self.expect_max.is_none_or(|m| value <= m)
    }

    /// The expectation in words (`= 0`, `>= 1`, `<= 10`, `>= 1 and <= 10`).
    pub fn expectation(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = self.expect {
            parts.push(format!("= {e}"));
        }
        if let Some(m) = self.expect_min {
            parts.push(format!(">= {m}"));
        }
        if let Some(m) = self.expect_max {
            parts.push(format!("<= {m}"));
        }
        parts.join(" and ")
    }
}

/// `on_fail` of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCheckFail {
    /// Publish nothing; the run fails non-retryably and the batch stays staged for
    /// inspection until the next run (default).
    #[default]
    Fail,
    /// Publish, and raise the `check` alert.
    Warn,
}

/// The `[source]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Source kind.
    pub kind: SourceKind,
    /// Parquet: absolute directory of `*.parquet` files, or an absolute glob (empty for
    /// PostgreSQL).
    pub path: String,
    /// PostgreSQL: how to reach the server.
    #[serde(default)]
    pub conn: Option<ConnSpec>,
    /// PostgreSQL: the query whose rows are the source (`table = ...` becomes
    /// `SELECT * FROM table`).
    #[serde(default)]
    pub query: Option<String>,
    /// The watermark column.
    pub cursor: String,
    /// Declared cursor type; inferred from the schema when `None`.
    pub cursor_type: Option<CursorType>,
    /// Re-read window for late data.
    pub lookback: Lookback,
    /// Lower bound of the first run, as written (resolved against the cursor type at run time).
    pub initial: Option<String>,
    /// What to do with rows whose cursor is null.
    pub on_null_cursor: OnNullCursor,
    /// Optional event-time column, distinct from the cursor, used to count late rows.
    pub event_time: Option<String>,
    /// Change-data-capture sources (`debezium_jsonl`, `kafka_debezium`): how events are read
    /// and applied. For them `cursor` is the hidden position column [`CDC_POS_COL`].
    #[serde(default)]
    pub cdc: Option<CdcSpec>,
    /// A batch holds at most this many rows: a bigger window is cut at a cursor value and
    /// read in several batches, each its own commit (rows tied at a cut stay together).
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: u64,
    /// A batch holds at most this many bytes, uncompressed, as the source's statistics
    /// count them (Parquet row groups; change events' raw bytes).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: u64,
}

/// Default of `[source] max_batch_rows`: what keeps a default worker well under 1 GiB.
pub const DEFAULT_MAX_BATCH_ROWS: u64 = 2_000_000;
/// Default of `[source] max_batch_bytes` (512 MiB, uncompressed).
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 512 << 20;

fn default_max_batch_rows() -> u64 {
    DEFAULT_MAX_BATCH_ROWS
}

fn default_max_batch_bytes() -> u64 {
    DEFAULT_MAX_BATCH_BYTES
}

/// The hidden target column holding the position of the last change applied to a row.
pub const CDC_POS_COL: &str = "_tidemark_pos";
/// The batch column holding a change's operation (`u` upsert, `d` delete); never written to
/// the target.
pub const CDC_OP_COL: &str = "_tidemark_op";
/// The target column of soft deletes: when the row was deleted at the source (null: live).
pub const CDC_DELETED_COL: &str = "_tidemark_deleted_at";

/// The CDC part of a `[source]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdcSpec {
    /// Key columns of the captured table (the target's key).
    pub key: Vec<String>,
    /// Events read per run at most (bounded batches).
    pub max_events: u64,
    /// What a malformed event does.
    pub on_bad_event: OnBadEvent,
    /// Kafka: bootstrap brokers (`host:port,...`).
    #[serde(default)]
    pub brokers: Option<String>,
    /// Kafka: the topics (one table's change streams).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Kafka: the consumer group offsets are committed to, advisorily, after a run.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Declared column types (`int64`, `float64`, `string`, `bool`, `date`, `timestamp`,
    /// `timestamptz`, `decimal(p,s)`), for envelopes without the schema wrapper.
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, String>,
    /// Deleted rows stay, marked in [`CDC_DELETED_COL`], instead of being removed.
    #[serde(default)]
    pub soft_delete: bool,
    /// Kafka: TLS and SASL settings. Names and paths only: the worker reads the secrets they
    /// point at when the activity runs, so no secret is in a workflow input.
    #[serde(default, skip_serializing_if = "KafkaSecurity::is_plaintext")]
    pub security: KafkaSecurity,
}

/// How a `kafka-debezium` source connects: `security_protocol` and what goes with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KafkaSecurity {
    /// `security_protocol`.
    pub protocol: KafkaProtocol,
    /// `sasl_mechanism` (with the `sasl_*` protocols).
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl_username`.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// Where the worker reads the SASL password.
    #[serde(default)]
    pub sasl_password: Option<SecretSource>,
    /// `ssl_ca_location`: PEM file of the CA(s) that sign the brokers' certificates (absent:
    /// the system's trusted roots).
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    /// `ssl_certificate_location`: the client certificate (PEM), for mutual TLS.
    #[serde(default)]
    pub ssl_certificate_location: Option<String>,
    /// `ssl_key_location`: the client certificate's private key (PEM).
    #[serde(default)]
    pub ssl_key_location: Option<String>,
    /// Where the worker reads the passphrase of an encrypted `ssl_key_location`.
    #[serde(default)]
    pub ssl_key_password: Option<SecretSource>,
    /// `[source.librdkafka]`: other librdkafka settings, passed as written (checked at
    /// validation: none that tidemark's guarantees depend on, and no secrets).
    #[serde(default)]
    pub librdkafka: std::collections::BTreeMap<String, String>,
}

impl KafkaSecurity {
    /// Plain text with no extra settings (today's default, left out of payloads).
    pub fn is_plaintext(&self) -> bool {
        *self == KafkaSecurity::default()
    }
}

/// `security_protocol` of a Kafka source (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    /// No TLS, no authentication (default).
    #[default]
    Plaintext,
    /// TLS, optionally with a client certificate.
    Ssl,
    /// SASL authentication over plain text.
    SaslPlaintext,
    /// SASL authentication over TLS (managed Kafka services).
    SaslSsl,
}

impl KafkaProtocol {
    /// librdkafka's name of the protocol.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the protocol authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }

    /// Whether the protocol runs over TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }
}

/// `sasl_mechanism` of a Kafka source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// `PLAIN`: the password itself is sent (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name, as Kafka and librdkafka write it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Where a secret is read when an activity runs: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// An environment variable of the worker.
    Env(String),
    /// A file on the worker's machine (its content, without a trailing newline).
    File(String),
}

/// `on_bad_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadEvent {
    /// Fail the run, non-retryably, naming the event's position (default).
    Fail,
    /// Write the event to the pipeline's dead-letter file, count it, go on.
    DeadLetter,
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A directory or glob of Parquet files.
    Parquet,
    /// A PostgreSQL query or table.
    Postgres,
    /// Debezium change events, one JSON envelope per line, from `*.jsonl` files.
    DebeziumJsonl,
    /// Debezium change events from Kafka topics.
    KafkaDebezium,
}

impl SourceKind {
    /// Whether the source yields change events (applied by position) rather than rows past a
    /// cursor.
    pub fn is_cdc(self) -> bool {
        matches!(self, SourceKind::DebeziumJsonl | SourceKind::KafkaDebezium)
    }
}

/// `on_null_cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNullCursor {
    /// Fail the run, non-retryably, naming the file.
    Error,
    /// Drop such rows, counting them.
    Exclude,
}

/// The `[transform]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformSpec {
    /// Polars SQL; the extracted batch is the table `batch`.
    pub sql: String,
}

/// The `[target]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    /// Target kind.
    pub kind: TargetKind,
    /// Absolute path of the Delta table or Parquet dataset.
    pub path: String,
    /// Write mode.
    pub mode: WriteMode,
    /// Key columns (required for merge; identify boundary rows in append).
    pub key: Vec<String>,
    /// Partition columns of a table tidemark creates.
    pub partition_by: Vec<String>,
    /// The spec promises that a key's partition values never change (e.g. an order's
    /// creation date), so a Delta MERGE looks for the batch's keys only in the batch's
    /// partitions. Without it, every partition is searched.
    #[serde(default)]
    pub partition_stable: bool,
    /// PostgreSQL: how to reach the server (a URL, or the worker's environment variable
    /// holding one, resolved when the activity runs so no secret lands in the history).
    #[serde(default)]
    pub conn: Option<ConnSpec>,
    /// PostgreSQL: the target table, `schema.table` or `table` (schema `public`).
    #[serde(default)]
    pub table: Option<String>,
    /// PostgreSQL `delete_insert`: the column whose [min, max] range in the batch is deleted
    /// before the insert.
    #[serde(default)]
    pub range_column: Option<String>,
    /// Object-store tables: non-secret settings of the store (region, endpoint, allow_http),
    /// in `object_store`'s key names. Credentials come from the worker's environment.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// Delta, merge mode: delete the rows a MERGE replaces with deletion vectors
    /// (merge-on-read) instead of rewriting the files that hold them. The table is upgraded
    /// to the `deletionVectors` feature in a commit of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_vectors: bool,
}

/// How to reach a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnSpec {
    /// A `postgres://` URL written in the spec.
    Url(String),
    /// The name of an environment variable of the worker holding the URL.
    UrlEnv(String),
}

/// Target kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A Delta Lake table on the local file system.
    Delta,
    /// A hive-partitioned Parquet dataset on the local file system.
    Parquet,
    /// A PostgreSQL table.
    Postgres,
}

/// Target write modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Upsert on `key`; a matched row is updated only by a version whose cursor is >= its own.
    Merge,
    /// Insert every row; boundary rows already loaded are skipped by key.
    Append,
    /// Replace each partition present in the batch with the batch's rows for it.
    PartitionOverwrite,
    /// Delete the batch's [min, max] range of `range_column`, then insert the batch.
    DeleteInsert,
}

impl WriteMode {
    /// The spelling used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Merge => "merge",
            WriteMode::Append => "append",
            WriteMode::PartitionOverwrite => "partition_overwrite",
            WriteMode::DeleteInsert => "delete_insert",
        }
    }
}

/// The `[late]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateSpec {
    /// Where late rows go.
    pub policy: LatePolicy,
    /// Absolute path of the side Delta table for `quarantine`.
    pub quarantine_path: Option<String>,
}

/// Late-row policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Merge late rows like any other (newer cursor still wins).
    Merge,
    /// Write late rows to the quarantine table instead of the target.
    Quarantine,
}

/// The `[monitor]` table: alert thresholds. A threshold of `None`/0 turns its rule off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorSpec {
    /// Alert when the watermark lags the clock by more than this (ms). Default 2 h.
    pub max_lag_ms: Option<u64>,
    /// Alert after this many consecutive runs with no new rows. Default 3.
    pub empty_runs_alert: u32,
    /// Alert when a batch exceeds this factor × the average batch of the recent runs.
    /// Default 10.
    pub spike_factor: f64,
    /// Alert when a run takes longer than this (ms). Default off.
    pub sla_ms: Option<u64>,
    /// Alert when a run changed the table's schema (or nulled or ignored columns). Default on.
    #[serde(default = "on")]
    pub schema_change: bool,
}

fn on() -> bool {
    true
}

impl Default for MonitorSpec {
    fn default() -> Self {
        MonitorSpec {
            max_lag_ms: Some(2 * 60 * 60 * 1000),
            empty_runs_alert: 3,
            spike_factor: 10.0,
            sla_ms: None,
            schema_change: true,
        }
    }
}

/// Whether a run may execute its short steps as local activities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LocalActivities {
    /// Short steps run inside the workflow task (decided per run from recorded results).
    #[default]
    Auto,
    /// Every step is a regular activity, dispatched through the task queue.
    Off,
}

/// The `[execution]` table: how a run's steps are executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSpec {
    /// Local activities for the short steps (`auto`, the default) or never (`off`).
    pub local_activities: LocalActivities,
    /// The largest batch (rows) whose stage and promote run as local activities; `process`
    /// runs locally when the previous run committed at most this many rows, recently.
    pub local_max_rows: u64,
    /// Batches one run commits at most when it catches up a window bigger than a batch
    /// (the rest waits for the next run).
    #[serde(default = "default_max_batches")]
    pub max_batches: u32,
}

/// Default of `[execution] max_batches`.
pub const DEFAULT_MAX_BATCHES: u32 = 1000;

fn default_max_batches() -> u32 {
    DEFAULT_MAX_BATCHES
}

/// Default of `[execution] local_max_rows`.
pub const DEFAULT_LOCAL_MAX_ROWS: u64 = 10_000;

impl Default for ExecutionSpec {
    fn default() -> Self {
        ExecutionSpec {
            local_activities: LocalActivities::Auto,
            local_max_rows: DEFAULT_LOCAL_MAX_ROWS,
            max_batches: DEFAULT_MAX_BATCHES,
        }
    }
}

/// The `[schedule]` table: when Temporal starts runs of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Cron expression (5 fields, or an `@every`/`@hourly` form Temporal accepts).
    pub cron: Option<String>,
    /// Fixed interval (ms), the alternative to `cron`.
    pub every_ms: Option<u64>,
    /// Create the schedule paused.
    pub paused: bool,
    /// Runs missed (server down) by less than this are still started (ms). Default 1 h.
    pub catchup_window_ms: u64,
    /// What happens when a run is due while the previous one is still going.
    pub overlap: Overlap,
    /// IANA time zone of the cron expression. Default UTC.
    pub timezone: Option<String>,
    /// Random delay added to each start, to spread many pipelines (ms).
    pub jitter_ms: Option<u64>,
}

/// Overlap policies that never run two runs of one pipeline at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Drop the due run (default).
    Skip,
    /// Start it once the running one ends (at most one waits).
    BufferOne,
}
