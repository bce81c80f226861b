//! Targets: stage a batch where no reader sees it, then promote it atomically and
//! idempotently. One implementation of [`Target`] per target — `delta` (Delta Lake
//! MERGE/append), `parquet` (hive-partitioned dataset, partition overwrite), `postgres`
//! (merge, delete_insert, append in one transaction) — each owning everything specific to it:
//! what its spec section allows ([`KindRules`]), staging, the token-checked commit, finding the
//! committed run, cleanup and truncation. [`open`] and [`rules`] are the registry: the only
//! places that map a target kind to its implementation. The run steps, reset, backfill and
//! the chaos oracle call the trait, never match on the kind.

pub mod delta;
pub mod parquet;
pub mod postgres;

use crate::error::{EngineError, Result};
use crate::state::watermark::Watermark;
use polars::prelude::DataFrame;
use tidemark_workflows::payloads::{BatchFile, ColumnInfo, MaintainReport, SchemaChange};
use tidemark_workflows::spec::{MaintenanceSpec, PipelineSpec, TargetKind, WriteMode};

/// A run whose commit the table holds.
#[derive(Debug, Clone)]
pub struct CommittedRun {
    /// The run.
    pub run_seq: u64,
    /// Delta: the table version of its commit; Parquet: the run_seq.
    pub version: i64,
    /// The watermark it published.
    pub watermark: Option<Watermark>,
    /// Rows inserted by it (from the operation metrics, when present).
    pub rows_inserted: u64,
    /// Rows updated by it.
    pub rows_updated: u64,
    /// Rows deleted by it (change events).
    pub rows_deleted: u64,
}

/// How a batch of change events is applied.
#[derive(Debug, Clone, Copy)]
pub struct CdcApply {
    /// The batch holds a truncate: rows the batch does not name are deleted in the same commit.
    pub truncate: bool,
    /// Deletes mark rows (`_tidemark_deleted_at`) instead of removing them.
    pub soft_delete: bool,
    /// Upserts in the batch. A batch of deletes only does not create a missing table (its
    /// before images carry only the key: the table would lack every other column).
    pub upserts: u64,
}

impl CdcApply {
    /// How the spec applies the run's batch (None for row sources).
    pub fn of(
        spec: &PipelineSpec,
        manifest: &tidemark_workflows::payloads::ProcessManifest,
    ) -> Option<CdcApply> {
        let cdc = spec.source.cdc.as_ref()?;
        Some(CdcApply {
            truncate: manifest.cdc.as_ref().is_some_and(|c| c.truncate),
            soft_delete: cdc.soft_delete,
            upserts: manifest.cdc.as_ref().map_or(0, |c| c.upserts),
        })
    }
}

/// What one promote wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Promoted {
    /// The commit carrying the run: Delta, its table version (None when nothing was written:
    /// a no-op MERGE makes no commit); PostgreSQL and Parquet, the run_seq (they always
    /// commit a non-empty batch, if only to publish the watermark).
    pub version: Option<i64>,
    /// The table already held the token.
    pub already: bool,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted (change events).
    pub deleted: u64,
    /// What the schema contract changed with this commit (None: nothing, or the run was
    /// already committed).
    pub schema: Option<SchemaChange>,
}

/// Where a run's batch was staged.
#[derive(Debug, Clone, Default)]
pub struct Staged {
    /// Staged files (or the staging table), displayed.
    pub locations: Vec<String>,
    /// Bytes written (rows, for PostgreSQL).
    pub bytes: u64,
}

/// One target of one pipeline. Every method is idempotent under retry, keyed by
/// `(pipeline, run_seq)`; a zombie attempt of a run can neither commit over the live one nor
/// remove its files.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// The target, for messages and plans (`Delta table /lake/orders`).
    fn describe(&self) -> String;

    /// A non-empty batch always makes a commit (PostgreSQL, Parquet: if only to publish the
    /// watermark); Delta makes none for a MERGE that changes nothing.
    fn commits_every_batch(&self) -> bool;

    /// The columns `process` groups the batch file by, no row group holding two groups (a
    /// partitioned Delta table's partitions, which its commit then copies as they are
    /// written). Empty: any order.
    fn batch_groups(&self) -> Vec<String> {
        Vec::new()
    }

    /// The last run of the pipeline the target holds, with the watermark its commit carries.
    async fn committed_run(&self) -> Result<Option<CommittedRun>>;

    /// Stages run `run_seq`'s batch where no reader sees it. `columns` describe the batch
    /// (the manifest's schema: null counts, where each column came from).
    async fn stage(
        &self,
        batch: &BatchFile,
        columns: &[ColumnInfo],
        run_seq: u64,
    ) -> Result<Staged>;

    /// The single atomic commit of run `run_seq`: checks the target's token first (a run
    /// already committed returns its result and writes nothing), stages again when the
    /// staging is missing or incomplete, resolves the batch's columns against the table's
    /// under the spec's schema contract, and publishes the batch — with the schema change,
    /// if any, and the watermark document — in the same commit.
    async fn promote(
        &self,
        batch: &BatchFile,
        columns: &[ColumnInfo],
        run_seq: u64,
        watermark_json: &str,
        cdc: Option<CdcApply>,
    ) -> Result<Promoted>;

    /// Change events: a batch whose only change is a truncate empties the target, with the
    /// watermark, in one token-checked commit.
    async fn promote_truncate(&self, run_seq: u64, watermark_json: &str) -> Result<Promoted>;

    /// Removes run `run_seq`'s staging.
    async fn cleanup(&self, run_seq: u64) -> Result<()>;

    /// Removes staging left by runs before `run_seq` (runs of a pipeline never overlap).
    fn clear_staging_before(&self, run_seq: u64) -> Result<()>;

    /// Empties the target (a reset with `--truncate-target`); returns the new version where
    /// the target has versions.
    async fn truncate(&self) -> Result<Option<i64>>;

    /// The table's columns and their types, as the schema contract compares them (None: no
    /// table yet).
    async fn columns(&self) -> Result<Option<crate::contract::Columns>>;

    /// Table maintenance (`tidemark maintain`): what the kind has of compaction, checkpoint
    /// and vacuum, or of clearing debris. Runs while no run of the pipeline can (the caller
    /// holds the pipeline's id). `id` names this maintenance (a retry recognises its own
    /// commit by it); `retention_floor_ms` is the pipeline's longest run.
    async fn maintain(
        &self,
        id: &str,
        m: &MaintenanceSpec,
        dry_run: bool,
        retention_floor_ms: u64,
    ) -> Result<MaintainReport>;

    // Inspection: what readers see and what the target recorded (tests, the chaos oracle).

    /// Every row the target holds, as its readers see them (empty when there is no table yet).
    async fn read_all(&self) -> Result<DataFrame>;

    /// The target as audit checks read it (`target` in a `[[checks]]` query): lazily where
    /// the kind allows (a local Delta table's files), else every row read.
    async fn scan(&self) -> Result<polars::prelude::LazyFrame> {
        use polars::prelude::IntoLazy;
        Ok(self.read_all().await?.lazy())
    }

    /// `(version, run_seq)` of every commit of this pipeline's runs the target holds, oldest
    /// first (Delta: every commit; PostgreSQL: the ledger table; Parquet: the marker's run).
    async fn run_commits(&self) -> Result<Vec<(i64, u64)>>;

    /// What the target holds at rest that no finished run may leave behind (staging tables,
    /// a partition holding other than one run's file).
    async fn leftovers(&self) -> Result<Vec<String>>;
}

/// What a target kind accepts in a spec's `[target]` section: the spec loader asks these
/// rules instead of matching on the kind.
#[derive(Debug)]
pub struct KindRules {
    /// The kind's name in a spec (`kind = "delta"`).
    pub name: &'static str,
    /// The kind in words, for messages (`PostgreSQL`, `Parquet dataset`).
    pub title: &'static str,
    /// The target lives at a `path` (file targets) rather than a `url` + `table`.
    pub takes_path: bool,
    /// The mode when the spec names none.
    pub default_mode: WriteMode,
    /// For each mode the kind refuses: the problem and the fix, as the spec error says them.
    pub refuses: fn(WriteMode) -> Option<(String, &'static str)>,
    /// `partition_by` is used.
    pub partitions: bool,
    /// `partition_stable` (MERGE pruned to the batch's partitions) is supported.
    pub partition_pruning: bool,
    /// Change events (`kafka-debezium`, `debezium-jsonl`) can be applied to it.
    pub accepts_change_events: bool,
    /// Why a `path` on object storage (`s3://`, …) is refused, and the fix; `None` when the
    /// kind works there.
    pub refuses_object_storage: Option<(&'static str, &'static str)>,
    /// `deletion_vectors = true` (merge-on-read) is supported.
    pub deletion_vectors: bool,
}

/// The refusal of `delete_insert` by a file target (Delta and Parquet say the same).
pub fn delete_insert_is_postgres() -> (String, &'static str) {
    (
        "delete_insert is a mode of the PostgreSQL target".into(),
        "use kind = \"postgres\", or mode = \"merge\" for a Delta table",
    )
}

/// Every target kind's rules, in the order the spec error lists them.
pub const KINDS: [TargetKind; 3] = [TargetKind::Delta, TargetKind::Parquet, TargetKind::Postgres];

/// The rules of a target kind.
pub fn rules(kind: TargetKind) -> &'static KindRules {
    match kind {
        TargetKind::Delta => &delta::RULES,
        TargetKind::Parquet => &parquet::RULES,
        TargetKind::Postgres => &postgres::RULES,
    }
}

/// The target kind named `name` in a spec.
pub fn kind_named(name: &str) -> Option<TargetKind> {
    KINDS.into_iter().find(|k| rules(*k).name == name)
}

/// The target of a spec.
pub fn open(spec: &PipelineSpec) -> Result<Box<dyn Target>> {
    Ok(match spec.target.kind {
        TargetKind::Delta => Box::new(delta::DeltaTarget::of(spec)),
        TargetKind::Parquet => Box::new(parquet::ParquetTarget::of(spec)),
        TargetKind::Postgres => Box::new(postgres::PostgresTarget::of(spec)?),
    })
}

/// The last run of the pipeline its target holds.
pub async fn committed_run(spec: &PipelineSpec) -> Result<Option<CommittedRun>> {
    open(spec)?.committed_run().await
}

/// Removes the staging directories of runs before the one staged at `current` (run
/// directories are named by zero-padded run_seq, so name order is run order).
pub fn clear_run_dirs_before(current: &std::path::Path) -> Result<()> {
    crate::state::fsio::remove_entries_before(&current.with_file_name(""), current)
}

/// Runs blocking target work off the async executor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::io("target task", std::io::Error::other(e.to_string())))?
}

/// Reads `watermark` of a committed run (helper for callers that need it present).
pub fn committed_watermark(
    run: &CommittedRun,
    target: &dyn Target,
    pipeline: &str,
) -> Result<Watermark> {
    run.watermark.clone().ok_or_else(|| {
        EngineError::Integrity(format!(
            "{} holds run {} of {pipeline} without its watermark metadata",
            target.describe(),
            run.run_seq
        ))
    })
}
