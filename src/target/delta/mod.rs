//! The Delta Lake target (delta-rs), on a local path or an object-store URL (`s3://`, `gs://`,
//! `az://`, `abfss://`; delta-rs's create-only PUT of each log entry is the commit's atomicity
//! there).
//!
//! *Stage* copies the batch, checksum-verified, into `<table>/_tidemark_staging/<pipeline>/
//! run-<seq>/`: files the Delta log never references, so no reader sees them (uploaded whole
//! to an object-store table).
//! *Promote* is one Delta commit carrying `txn{appId = "tidemark:<pipeline>", version =
//! run_seq}` and the watermark it publishes in its commit metadata. Before committing it
//! reads the table's transaction version for that appId and skips when it is ≥ run_seq, so
//! promote run twice is a no-op the second time and returns the recorded result.
//! Merge updates a matched row only when the incoming cursor is newer, or equal with
//! different contents, so a late, older version never overwrites a newer one.

use crate::error::{EngineError, Result};
use crate::state::fsio;
use crate::state::watermark::Watermark;
use crate::storage::{LocalCopy, Remote};
use deltalake::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use std::path::{Path, PathBuf};
use tidemark_workflows::spec::{CDC_DELETED_COL, CDC_OP_COL, CDC_POS_COL, WriteMode};

/// Commit-metadata keys tidemark writes.
pub const META_PIPELINE: &str = "tidemark.pipeline";
/// Commit-metadata key of the run sequence number.
pub const META_RUN_SEQ: &str = "tidemark.run_seq";
/// Commit-metadata key of the published watermark document.
pub const META_WATERMARK: &str = "tidemark.watermark";

pub mod adopt;
pub mod copy;
pub mod dv;
pub mod files;
pub mod maintain;
pub mod rewrite;

pub use super::{CdcApply, CommittedRun, Promoted};
use super::{KindRules, Staged, Target};
use crate::contract::{self, Resolution};
use tidemark_workflows::payloads::{BatchFile, ColumnInfo};
use tidemark_workflows::spec::{PipelineSpec, SchemaContract};

/// What a Delta target accepts.
pub static RULES: KindRules = KindRules {
    title: "Delta",
    name: "delta",
    takes_path: true,
    default_mode: WriteMode::Merge,
    refuses: |mode| match mode {
        WriteMode::DeleteInsert => Some(super::delete_insert_is_postgres()),
        WriteMode::PartitionOverwrite => Some((
            "partition_overwrite is a mode of the Parquet dataset target".into(),
            "use kind = \"parquet\", or mode = \"merge\" for a Delta table (its MERGE touches only the matching rows)",
        )),
        WriteMode::Merge | WriteMode::Append => None,
    },
    partitions: true,
    partition_pruning: true,
    accepts_change_events: true,
    refuses_object_storage: None,
    deletion_vectors: true,
};

/// The Delta table of one pipeline.
pub struct DeltaTarget {
    spec: PipelineSpec,
}

impl DeltaTarget {
    /// The target of a spec whose `[target]` is a Delta table.
    pub fn of(spec: &PipelineSpec) -> Self {
        crate::storage::use_spec_options(spec);
        DeltaTarget { spec: spec.clone() }
    }

    fn table(&self) -> &str {
        &self.spec.target.path
    }

    /// Whether the table already holds run `run_seq`'s commit (or a later run's).
    async fn run_committed(&self, run_seq: u64) -> Result<bool> {
        Ok(self
            .committed_run()
            .await?
            .is_some_and(|c| c.run_seq >= run_seq))
    }
}

/// The `storage_options` registered for an object-store table's store (empty for a path).
fn storage_options(table: &str) -> std::collections::HashMap<String, String> {
    match crate::storage::parse(table) {
        Ok(crate::storage::Location::Remote(url)) => crate::storage::registered_options(&url)
            .into_iter()
            .collect(),
        _ => Default::default(),
    }
}

/// The table's object-store prefix, `None` for a local table.
pub(super) fn table_remote(table: &str) -> Result<Option<Remote>> {
    match crate::storage::parse(table)? {
        crate::storage::Location::Local(_) => Ok(None),
        crate::storage::Location::Remote(url) => Remote::open(&url, &Default::default()).map(Some),
    }
}

/// The key of run `run_seq`'s staged file under the table's prefix.
fn staging_key(pipeline: &str, run_seq: u64) -> String {
    format!("_tidemark_staging/{pipeline}/run-{run_seq:08}/part-00000.parquet")
}

#[async_trait::async_trait]
impl Target for DeltaTarget {
    fn describe(&self) -> String {
        format!("Delta table {}", self.table())
    }

    fn commits_every_batch(&self) -> bool {
        false
    }

    fn batch_groups(&self) -> Vec<String> {
        self.spec.target.partition_by.clone()
    }

    async fn committed_run(&self) -> Result<Option<CommittedRun>> {
        let app_id = tidemark_workflows::app_id(&self.spec.name);
        committed_run(self.table(), &app_id, &self.spec.name).await
    }

    async fn stage(
        &self,
        batch: &BatchFile,
        _columns: &[ColumnInfo],
        run_seq: u64,
    ) -> Result<Staged> {
        let (batch, table, name) = (
            batch.clone(),
            self.table().to_string(),
            self.spec.name.clone(),
        );
        let staged = super::blocking(move || {
            let local = crate::storage::local_batch(&batch.path, &batch.sha256)?;
            let (dest, bytes) = stage_file(local.path(), &batch.sha256, &table, &name, run_seq)?;
            Ok(Staged {
                locations: vec![dest],
                bytes,
            })
        })
        .await?;
        // An attempt that staged after its run was committed (a zombie, woken or resumed
        // mid-upload after the run's cleanup) takes back what it wrote: the run no longer
        // needs it, and nothing else would remove it before the next run.
        if self.run_committed(run_seq).await? {
            self.cleanup(run_seq).await?;
        }
        Ok(staged)
    }

    async fn promote(
        &self,
        batch: &BatchFile,
        columns: &[ColumnInfo],
        run_seq: u64,
        watermark_json: &str,
        cdc: Option<CdcApply>,
    ) -> Result<Promoted> {
        let spec = &self.spec;
        let staged = ensure_staged(batch, self.table(), &spec.name, run_seq)?;
        let app_id = tidemark_workflows::app_id(&spec.name);
        let promoted = promote(&PromoteRequest {
            table: self.table(),
            app_id: &app_id,
            pipeline: &spec.name,
            run_seq,
            staged: staged.path(),
            staged_rows: batch.rows,
            mode: spec.target.mode,
            key: &spec.target.key,
            cursor: &spec.source.cursor,
            partition_by: &spec.target.partition_by,
            partition_stable: spec.target.partition_stable,
            watermark_json,
            cdc,
            contract: &spec.schema,
            columns,
            deletion_vectors: spec.target.deletion_vectors,
        })
        .await?;
        if promoted.already {
            // The run was committed before (a retry, or a zombie that re-staged after the
            // run's cleanup): its staging is no longer needed by anyone.
            self.cleanup(run_seq).await?;
        }
        Ok(promoted)
    }

    async fn promote_truncate(&self, run_seq: u64, watermark_json: &str) -> Result<Promoted> {
        let app_id = tidemark_workflows::app_id(&self.spec.name);
        truncate_run(
            self.table(),
            &app_id,
            &self.spec.name,
            run_seq,
            watermark_json,
        )
        .await
    }

    async fn cleanup(&self, run_seq: u64) -> Result<()> {
        remove_staging(self.table(), &self.spec.name, run_seq)
    }

    fn clear_staging_before(&self, run_seq: u64) -> Result<()> {
        clear_staging_before(self.table(), &self.spec.name, run_seq)
    }

    async fn truncate(&self) -> Result<Option<i64>> {
        truncate(self.table()).await
    }

    async fn maintain(
        &self,
        id: &str,
        m: &tidemark_workflows::spec::MaintenanceSpec,
        dry_run: bool,
        retention_floor_ms: u64,
    ) -> Result<tidemark_workflows::payloads::MaintainReport> {
        maintain::maintain(&maintain::Request {
            table: self.table(),
            pipeline: &self.spec.name,
            id,
            spec: m,
            dry_run,
            retention_floor_ms,
        })
        .await
    }

    async fn columns(&self) -> Result<Option<contract::Columns>> {
        match open(self.table()).await? {
            None => Ok(None),
            Some(t) => rewrite::table_columns(&t).map(Some),
        }
    }

    async fn read_all(&self) -> Result<polars::prelude::DataFrame> {
        let batches = read_all(self.table()).await?;
        if batches.is_empty() {
            return Ok(polars::prelude::DataFrame::empty());
        }
        rewrite::arrow_to_polars(&batches)
    }

    async fn scan(&self) -> Result<polars::prelude::LazyFrame> {
        use polars::prelude::IntoLazy;
        if !crate::storage::is_remote(self.table())
            && let Some(t) = open(self.table()).await?
            && rewrite::unsupported(&t)?.is_none()
        {
            let schema = rewrite::table_schema(&t)?;
            return files::scan_table(&t, self.table(), &schema).await;
        }
        Ok(self.read_all().await?.lazy())
    }

    async fn run_commits(&self) -> Result<Vec<(i64, u64)>> {
        use futures::TryStreamExt;
        let Some(t) = open(self.table()).await? else {
            return Ok(Vec::new());
        };
        let head = t.version().unwrap_or(0) as i64;
        let infos: Vec<_> = t
            .history(None)
            .try_collect()
            .await
            .map_err(|e| EngineError::delta(self.table(), e))?;
        let mut out: Vec<(i64, u64)> = infos
            .iter()
            .enumerate()
            .filter(|(_, info)| {
                info.info
                    .get(META_PIPELINE)
                    .is_none_or(|p| p.as_str() == Some(self.spec.name.as_str()))
            })
            .filter_map(|(i, info)| {
                info.info
                    .get(META_RUN_SEQ)
                    .and_then(|v| v.as_u64())
                    .map(|seq| (head - i as i64, seq))
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    async fn leftovers(&self) -> Result<Vec<String>> {
        // Local staging folders are files under the table: a scan of the directory finds
        // them. An object-store table's staging is listed here.
        let Some(remote) = table_remote(self.table())? else {
            return Ok(Vec::new());
        };
        let table = self.table().to_string();
        let prefix = format!("_tidemark_staging/{}", self.spec.name);
        super::blocking(move || {
            Ok(remote
                .list(&prefix)?
                .into_iter()
                .map(|k| format!("{}/{k}", table.trim_end_matches('/')))
                .collect())
        })
        .await
    }
}

/// The staged copy of `batch` in `table`, re-staged from the run's batch when it is missing
/// or does not match its checksum (an attempt that died mid-stage, or cleanup by another
/// attempt of this run). Staging is left in place until the run ends (the run's cleanup), so
/// a zombie attempt's cleanup can never take a staged file from under a live one.
///
/// Returns the staged file at a local path: for an object-store table, a private download
/// (checked against the checksum), which the MERGE and the writes read.
pub fn ensure_staged(
    batch: &BatchFile,
    table: &str,
    pipeline: &str,
    run_seq: u64,
) -> Result<LocalCopy> {
    let staged = match table_remote(table)? {
        None => {
            let path = staging_dir(table, pipeline, run_seq).join("part-00000.parquet");
            if fsio::sha256_file(&path).is_ok_and(|h| h == batch.sha256) {
                return Ok(LocalCopy::at(path));
            }
            path.display().to_string()
        }
        Some(remote) => {
            let url = remote.url_of(&staging_key(pipeline, run_seq));
            match crate::storage::local_copy(&url, Some(&batch.sha256)) {
                Ok(Some(copy)) => return Ok(copy),
                Ok(None) | Err(EngineError::Integrity(_)) => url,
                Err(e) => return Err(e),
            }
        }
    };
    tracing::warn!(path = %staged, "staged batch missing or changed; staging it again");
    let local = crate::storage::local_batch(&batch.path, &batch.sha256)?;
    let (dest, _) = stage_file(local.path(), &batch.sha256, table, pipeline, run_seq)?;
    if crate::storage::is_remote(table) {
        // The checked local copy of the batch is the staged file's content.
        return Ok(local);
    }
    Ok(LocalCopy::at(PathBuf::from(dest)))
}

/// What to promote into one table.
pub struct PromoteRequest<'a> {
    /// Table directory.
    pub table: &'a str,
    /// Idempotency app id.
    pub app_id: &'a str,
    /// Pipeline name (commit metadata).
    pub pipeline: &'a str,
    /// Run sequence number (txn version).
    pub run_seq: u64,
    /// Staged Parquet file.
    pub staged: &'a Path,
    /// Rows the staged file must hold (from the manifest).
    pub staged_rows: u64,
    /// Merge or append.
    pub mode: WriteMode,
    /// Key columns (merge).
    pub key: &'a [String],
    /// Cursor column (merge's newer-wins condition).
    pub cursor: &'a str,
    /// Partition columns of a table created by this promote.
    pub partition_by: &'a [String],
    /// The spec promises a key's partition values never change: the MERGE reads only the
    /// batch's partitions.
    pub partition_stable: bool,
    /// The watermark document to embed.
    pub watermark_json: &'a str,
    /// A batch of change events (`_tidemark_op`, `_tidemark_pos`): applied by position.
    pub cdc: Option<CdcApply>,
    /// The schema contract (`[schema]`).
    pub contract: &'a SchemaContract,
    /// The batch's columns as the manifest describes them (null counts, origins).
    pub columns: &'a [ColumnInfo],
    /// `[target] deletion_vectors`: merge-on-read (the table is upgraded to the feature in a
    /// commit of its own first).
    pub deletion_vectors: bool,
}

fn url_of(table: &str) -> Result<url::Url> {
    match crate::storage::parse(table)? {
        crate::storage::Location::Remote(url) => Ok(url),
        crate::storage::Location::Local(path) => url::Url::from_directory_path(&path)
            .map_err(|_| EngineError::Spec(format!("target path {table:?} must be absolute"))),
    }
}

/// A delta-rs builder for the table, with its storage options.
fn table_builder(table: &str) -> Result<deltalake::DeltaTableBuilder> {
    Ok(deltalake::DeltaTableBuilder::from_url(url_of(table)?)
        .map_err(|e| EngineError::delta(table, e))?
        .with_storage_options(storage_options(table)))
}

/// Opens the table at `table`; `None` when no Delta table exists there yet.
pub async fn open(table: &str) -> Result<Option<DeltaTable>> {
    if let Some(remote) = table_remote(table)? {
        // A table has its first commit or a checkpoint pointer: two HEADs at most, instead of
        // a log listing that fails (and logs an error) where no table is yet.
        let exists = super::blocking(move || {
            Ok(remote.exists("_delta_log/00000000000000000000.json")?
                || remote.exists("_delta_log/_last_checkpoint")?)
        })
        .await?;
        if !exists {
            return Ok(None);
        }
    } else {
        let local = url_of(table)?.to_file_path().unwrap_or_default();
        if !local.join("_delta_log").is_dir() {
            return Ok(None);
        }
    }
    match table_builder(table)?.load().await {
        Ok(t) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) if crate::storage::is_remote(table) => Ok(None),
        Err(e) => Err(EngineError::delta(table, e)),
    }
}

/// Deletes every row of the table (one Delta commit; the history keeps the old versions).
/// Returns the new version, or None when there is no table.
pub async fn truncate(table: &str) -> Result<Option<i64>> {
    let Some(t) = open(table).await? else {
        return Ok(None);
    };
    let (t, _) = t.delete().await.map_err(|e| EngineError::delta(table, e))?;
    Ok(t.version().map(|v| v as i64))
}

/// The staging directory of one run in a local table.
pub fn staging_dir(table: &str, pipeline: &str, run_seq: u64) -> PathBuf {
    Path::new(table)
        .join("_tidemark_staging")
        .join(pipeline)
        .join(format!("run-{run_seq:08}"))
}

/// Removes run `run_seq`'s staging from the table.
pub fn remove_staging(table: &str, pipeline: &str, run_seq: u64) -> Result<()> {
    match table_remote(table)? {
        None => fsio::remove_dir_if_exists(&staging_dir(table, pipeline, run_seq)),
        Some(remote) => {
            remote.delete_prefix(&format!("_tidemark_staging/{pipeline}/run-{run_seq:08}"))
        }
    }
}

/// Removes the staging of runs before `run_seq` (debris of runs that died).
pub fn clear_staging_before(table: &str, pipeline: &str, run_seq: u64) -> Result<()> {
    let Some(remote) = table_remote(table)? else {
        return super::clear_run_dirs_before(&staging_dir(table, pipeline, run_seq));
    };
    // Only runs that have not been cleaned up have a folder here: a short listing.
    let current = format!("run-{run_seq:08}");
    let base = format!("_tidemark_staging/{pipeline}");
    for dir in remote.list_dirs(&base)? {
        if dir.starts_with("run-") && dir < current {
            remote.delete_prefix(&format!("{base}/{dir}"))?;
        }
    }
    Ok(())
}

/// Copies a batch file into the table's staging area after checking its checksum; returns
/// where it went and its size.
pub fn stage_file(
    batch: &Path,
    sha256: &str,
    table: &str,
    pipeline: &str,
    run_seq: u64,
) -> Result<(String, u64)> {
    let actual = fsio::sha256_file(batch)?;
    if actual != sha256 {
        return Err(EngineError::Integrity(format!(
            "batch {} has checksum {actual}, the manifest says {sha256}",
            batch.display()
        )));
    }
    if let Some(remote) = table_remote(table)? {
        // One PUT (or a multipart upload completed at the end): a reader sees the whole file
        // or none.
        let key = staging_key(pipeline, run_seq);
        let bytes = remote.upload(&key, batch, Some("mid_stage"))?;
        return Ok((remote.url_of(&key), bytes));
    }
    // Replaced atomically (temp file, rename): a re-stage, or a zombie attempt of the same
    // run, never leaves a reader with a partial file.
    let dest = staging_dir(table, pipeline, run_seq).join("part-00000.parquet");
    // The batch file is never changed in place: a hard link stages it without a copy.
    let bytes = fsio::link_or_copy_durable(batch, &dest, Some("mid_stage"))?;
    Ok((dest.to_string_lossy().into_owned(), bytes))
}

/// Finds the newest commit of `app_id`'s run, if the table holds one.
pub async fn committed_run(
    table: &str,
    app_id: &str,
    pipeline: &str,
) -> Result<Option<CommittedRun>> {
    if let Some(head) = head_commit_run(table, app_id, pipeline)? {
        return Ok(Some(head));
    }
    let Some(t) = open(table).await? else {
        return Ok(None);
    };
    let Some(txn) = txn_version(&t, app_id)
        .await
        .map_err(|e| EngineError::delta(table, e))?
    else {
        return Ok(None);
    };
    find_run_commit(&t, table, pipeline, txn as u64).await
}

/// The fast path of [`committed_run`] (every run's `process` asks it): when the table's
/// newest commit is this pipeline's and carries its `txn` action, that commit is the answer
/// (the newest `txn` of an app id is its transaction version, by definition), found with one
/// listing of `_delta_log` and one small file read instead of a log replay. `None` sends the
/// caller to the full path (no table, another writer's commit on top, no token in it).
fn head_commit_run(table: &str, app_id: &str, pipeline: &str) -> Result<Option<CommittedRun>> {
    if crate::storage::is_remote(table) {
        // delta-rs reads an object-store log from its last checkpoint; no local fast path.
        return Ok(None);
    }
    let log = Path::new(table).join("_delta_log");
    let head = match head_version(Path::new(table)) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(e) => return Err(EngineError::io(format!("list {}", log.display()), e)),
    };
    let path = log.join(format!("{head:020}.json"));
    let entry =
        std::fs::read(&path).map_err(|e| EngineError::io(format!("read {}", path.display()), e))?;
    let mut info = None;
    let mut tokens = Vec::new();
    for mut action in actions_of(&entry) {
        if let Some(i) = action.get_mut("commitInfo") {
            info = serde_json::from_value::<deltalake::kernel::CommitInfo>(i.take()).ok();
        } else if let Some(t) = action.get_mut("txn") {
            tokens.push(t.take());
        }
    }
    let Some(info) = info else {
        return Ok(None);
    };
    let Some(seq) = info.info.get(META_RUN_SEQ).and_then(|v| v.as_u64()) else {
        return Ok(None);
    };
    let token = tokens.iter().any(|txn| {
        txn.get("appId").and_then(|v| v.as_str()) == Some(app_id)
            && txn.get("version").and_then(|v| v.as_u64()) == Some(seq)
    });
    Ok(token
        .then(|| run_of_commit(&info, head, pipeline, seq))
        .flatten())
}

/// The newest commit version in the table's `_delta_log` (`None`: no log or no commit yet),
/// from one directory listing.
pub fn head_version(table: &Path) -> std::io::Result<Option<i64>> {
    let entries = match std::fs::read_dir(table.join("_delta_log")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let digits = name.strip_suffix(".json")?;
            (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<i64>().ok())?
        })
        .max())
}

pub(super) async fn txn_version(
    t: &DeltaTable,
    app_id: &str,
) -> std::result::Result<Option<i64>, DeltaTableError> {
    let log_store = t.log_store();
    t.snapshot()?
        .transaction_version(log_store.as_ref(), app_id)
        .await
}

/// Finds the commit of `pipeline`'s run `run_seq`, reading commit entries by version from the
/// loaded head down: the run is almost always the head (or one of the few commits after it, by
/// a backfill sharing the table), so this reads one small file where reading the whole history
/// would make every run's fixed cost grow with the table's age. Versions come from the file
/// read, never from a position in a list (a commit without `commitInfo` cannot shift them).
async fn find_run_commit(
    t: &DeltaTable,
    table: &str,
    pipeline: &str,
    run_seq: u64,
) -> Result<Option<CommittedRun>> {
    let Some(head) = t.version() else {
        return Ok(None);
    };
    let log_store = t.log_store();
    for version in (0..=head).rev() {
        let Some(bytes) = log_store
            .read_commit_entry(version)
            .await
            .map_err(|e| EngineError::delta(table, e))?
        else {
            // Cleaned up by log retention: the older history is gone too.
            break;
        };
        let Some(info) = commit_info_of(&bytes) else {
            continue;
        };
        if let Some(found) = run_of_commit(&info, version as i64, pipeline, run_seq) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The actions of one commit entry (newline-delimited JSON), each as parsed JSON.
fn actions_of(entry: &[u8]) -> impl Iterator<Item = serde_json::Value> + '_ {
    entry
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
}

/// The `commitInfo` action of one commit entry, if any.
fn commit_info_of(entry: &[u8]) -> Option<deltalake::kernel::CommitInfo> {
    actions_of(entry)
        .find_map(|mut action| action.get_mut("commitInfo").map(serde_json::Value::take))
        .and_then(|info| serde_json::from_value(info).ok())
}

/// The run `run_seq` of `pipeline`, when `info` (the commit at `version`) is its commit.
fn run_of_commit(
    info: &deltalake::kernel::CommitInfo,
    version: i64,
    pipeline: &str,
    run_seq: u64,
) -> Option<CommittedRun> {
    let seq = info.info.get(META_RUN_SEQ).and_then(|v| v.as_u64());
    // Several writers share a table (a pipeline and its backfill windows): a commit is this
    // pipeline's only when it says so.
    let by = info.info.get(META_PIPELINE).and_then(|v| v.as_str());
    if seq != Some(run_seq) || by.is_some_and(|p| p != pipeline) {
        return None;
    }
    let watermark = info
        .info
        .get(META_WATERMARK)
        .and_then(|v| v.as_str())
        .and_then(|s| Watermark::from_json(s).ok());
    let metrics = info.info.get("operationMetrics");
    let metric = |name: &str| {
        metrics
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    let rows_inserted = match metrics.and_then(|m| m.get("num_target_rows_inserted")) {
        Some(_) => metric("num_target_rows_inserted"),
        None => metric("num_added_rows"),
    };
    Some(CommittedRun {
        run_seq,
        version,
        watermark,
        rows_inserted,
        rows_updated: metric("num_target_rows_updated"),
        rows_deleted: metric("num_target_rows_deleted").max(metric("num_deleted_rows")),
    })
}

/// Creates the table, empty, when it does not exist (idempotent: `SaveMode::Ignore`, no data,
/// no token). Promote then always checks the token and commits from one loaded state of an
/// existing table, which is what lets Delta's conflict checker fence a zombie attempt.
async fn ensure_table(
    table: &str,
    schema: deltalake::arrow::datatypes::SchemaRef,
    partition_by: &[String],
) -> Result<DeltaTable> {
    if let Some(t) = open(table).await? {
        return Ok(t);
    }
    if !crate::storage::is_remote(table) {
        std::fs::create_dir_all(table)
            .map_err(|e| EngineError::io(format!("create {table}"), e))?;
    }
    let empty = deltalake::arrow::record_batch::RecordBatch::new_empty(schema);
    let mut builder = table_builder(table)?
        .build()
        .map_err(|e| EngineError::delta(table, e))?
        .write(vec![empty])
        .with_save_mode(SaveMode::Ignore);
    if !partition_by.is_empty() {
        builder = builder.with_partition_columns(partition_by.to_vec());
    }
    let created = builder.await;
    // Loaded again in either case: the token check and the commit use this state.
    match (open(table).await?, created) {
        (Some(t), Ok(_)) => Ok(t),
        (Some(t), Err(e)) => {
            // Another attempt created it first: fine, it exists now.
            tracing::debug!(error = %e, "table created concurrently");
            Ok(t)
        }
        (None, Err(e)) => Err(EngineError::delta(table, e)),
        (None, Ok(_)) => Err(EngineError::Integrity(format!(
            "{table} vanished after it was created"
        ))),
    }
}

/// The staged file's Arrow schema and row count, from its Parquet footer.
fn staged_footer(staged: &Path) -> Result<(deltalake::arrow::datatypes::SchemaRef, u64)> {
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let unreadable = |e: String| {
        EngineError::Integrity(format!(
            "staged batch {} is unreadable: {e}",
            staged.display()
        ))
    };
    let file = std::fs::File::open(staged).map_err(|e| unreadable(e.to_string()))?;
    let b =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| unreadable(e.to_string()))?;
    let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
    Ok((b.schema().clone(), rows))
}

/// The staged file as a DataFusion frame, for the MERGE and write paths of delta-rs.
async fn datafusion_source(staged: &Path) -> Result<deltalake::datafusion::dataframe::DataFrame> {
    let mut config = SessionConfig::new();
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(config);
    let path = staged.to_string_lossy().into_owned();
    ctx.read_parquet(path.as_str(), ParquetReadOptions::default())
        .await
        .map_err(|e| EngineError::Integrity(format!("staged batch {path} is unreadable: {e}")))
}

pub(crate) fn quote(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

/// Promotes a staged file into a table: one commit with the run's token, or nothing when the
/// table already holds it.
///
/// The token check and the commit use one loaded state of the table, so a zombie attempt
/// (paused after its check, woken after another attempt committed the run) is refused by
/// Delta's conflict checker: a later version carries the same app id. A table that does not
/// exist yet is first created empty, so even a run's first promote follows that path.
pub async fn promote(req: &PromoteRequest<'_>) -> Result<Promoted> {
    promote_with(req, MergeEngine::from_env()).await
}

/// Which MERGE a row pipeline's promote uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeEngine {
    /// tidemark's own copy-on-write MERGE ([`rewrite`]), where the table allows it.
    Rewrite,
    /// delta-rs's MERGE (DataFusion).
    DeltaRs,
}

impl MergeEngine {
    /// `TIDEMARK_MERGE_ENGINE=delta-rs` on a worker selects delta-rs's MERGE (an escape
    /// hatch: both give the same table); anything else, or nothing, the rewrite MERGE.
    pub fn from_env() -> Self {
        match std::env::var("TIDEMARK_MERGE_ENGINE").as_deref() {
            Ok("delta-rs") => MergeEngine::DeltaRs,
            _ => MergeEngine::Rewrite,
        }
    }
}

/// [`promote`] with the MERGE engine chosen by the caller.
pub async fn promote_with(req: &PromoteRequest<'_>, engine: MergeEngine) -> Result<Promoted> {
    let table_err = |e| EngineError::delta(req.table, e);

    // The staged file's schema and row count from its footer (the data is read by whichever
    // MERGE or write applies it).
    let staged = req.staged.to_string_lossy().into_owned();
    let (mut arrow_schema, source_rows) = staged_footer(req.staged)?;
    if req.cdc.is_some() {
        // The operation column steers the MERGE; it is not a column of the table.
        let fields: Vec<_> = arrow_schema
            .fields()
            .iter()
            .filter(|f| f.name() != CDC_OP_COL)
            .cloned()
            .collect();
        arrow_schema = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields));
    }
    let columns: Vec<String> = arrow_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if source_rows != req.staged_rows {
        return Err(EngineError::Integrity(format!(
            "staged batch {staged} holds {source_rows} rows, the manifest says {}",
            req.staged_rows
        )));
    }
    if let Some(p) = req.partition_by.iter().find(|p| !columns.contains(p)) {
        return Err(EngineError::Schema(format!(
            "partition column `{p}` (target.partition_by) is not in the batch (columns: {})",
            columns.join(", ")
        )));
    }

    if req.cdc.is_some_and(|c| c.upserts == 0) && open(req.table).await?.is_none() {
        // Deletes of rows a table that does not exist yet cannot hold: nothing to write, and
        // a table made from key-only before images would lack every other column.
        return Ok(Promoted::default());
    }
    let mut t = ensure_table(req.table, arrow_schema.clone(), req.partition_by).await?;
    if req.deletion_vectors && !deletion_vectors_enabled(&t) {
        t = enable_deletion_vectors(t, req.table).await?;
    }
    // The version this run's commit, if any, comes after.
    let before = t.version().map(|v| v as i64);
    let committed_after = |v: Option<i64>| v.is_some() && v > before;
    let check_token = !crate::crash::sabotage("skip-idempotency-check");
    if check_token
        && let Some(v) = txn_version(&t, req.app_id).await.map_err(table_err)?
        && v >= req.run_seq as i64
    {
        let found = find_run_commit(&t, req.table, req.pipeline, req.run_seq).await?;
        return Ok(Promoted {
            version: found
                .as_ref()
                .map(|c| c.version)
                .or(t.version().map(|v| v as i64)),
            already: true,
            inserted: found.as_ref().map_or(0, |c| c.rows_inserted),
            updated: found.as_ref().map_or(0, |c| c.rows_updated),
            deleted: found.as_ref().map_or(0, |c| c.rows_deleted),
            schema: None,
        });
    }
    // The schema contract, against the table state the token was checked in: the schema
    // change, if any, goes into this run's commit.
    let deletes_only = req.cdc.is_some_and(|c| c.upserts == 0);
    let batch = contract::Batch::of_manifest(
        req.columns,
        &rewrite::batch_columns(&arrow_schema)?,
        source_rows,
        "the batch".into(),
        deletes_only,
    );
    let resolution = contract::against_table(
        req.contract,
        &rewrite::table_columns(&t)?,
        &format!("the Delta table {}", req.table),
        &batch,
    )?;
    let evolution = rewrite::evolve(&t, &resolution, &arrow_schema)?;
    if !resolution.widened.is_empty() && crate::storage::is_remote(req.table) {
        return Err(refuse_widening(
            &resolution,
            "the table is on object storage (a widening rewrites every data file of the table, which tidemark does for local tables only)",
        ));
    }
    // The columns this commit writes: the batch's, less those ignored, plus those the batch
    // lacks (written null).
    let write_cols: Vec<String> = columns
        .iter()
        .filter(|c| !resolution.ignored.contains(c))
        .chain(&resolution.nulled)
        .cloned()
        .collect();

    let txn = Transaction::new(req.app_id, req.run_seq as i64);
    let metadata = vec![
        (
            META_PIPELINE.to_string(),
            serde_json::Value::from(req.pipeline),
        ),
        (
            META_RUN_SEQ.to_string(),
            serde_json::Value::from(req.run_seq),
        ),
        (
            META_WATERMARK.to_string(),
            serde_json::Value::from(req.watermark_json),
        ),
    ];
    let props = CommitProperties::default()
        .with_application_transaction(txn.clone())
        .with_metadata(metadata.clone());
    // The crash point `promote_before_commit` sits right before each path's commit: inside
    // tidemark's own commits (after their files and deletion vectors are written), before the
    // call for delta-rs's (which write and commit in one).

    if let Some(cdc) = req.cdc {
        if !resolution.widened.is_empty() {
            return Err(refuse_widening(
                &resolution,
                "change events are applied by delta-rs's MERGE, which cannot change a column's type",
            ));
        }
        let source = shape_source(datafusion_source(req.staged).await?, &t, &resolution)?;
        let source = cast_to_table(source, &t)?;
        let merge_schema = !resolution.added.is_empty();
        let source = if merge_schema {
            let pos = quote(CDC_POS_COL);
            let applies = if cdc.truncate {
                "true".to_string()
            } else {
                format!("t.{pos} IS NULL OR s.{pos} > t.{pos}")
            };
            mask_added(source, &t, &resolution, req.key, &applies).await?
        } else {
            source
        };
        crate::crash::point("promote_before_commit");
        let p = merge_changes(req, t, source, &write_cols, props, cdc, merge_schema).await?;
        let committed = committed_after(p.version);
        return Ok(with_schema(
            p,
            &resolution,
            DELTA_RS_SCHEMA_MERGE,
            committed,
        ));
    }
    if req.mode == WriteMode::Append
        && (!resolution.record.is_empty() || adoptable_append(&t, req.table, &arrow_schema)?)
    {
        // tidemark's own append commit: for columns to add, widen, null or drop (it keeps the
        // table's id and can rewrite files in widened types), or to adopt the staged file as
        // the table's new data file as it is (write once).
        let append = rewrite::RewriteAppend {
            table: &t,
            table_dir: req.table,
            staged: req.staged,
            txn,
            metadata,
            evolution: evolution.as_ref(),
            staged_schema: &arrow_schema,
            first_load: None,
        };
        return appended(append, &resolution).await;
    }
    if req.mode == WriteMode::Append {
        let batches = datafusion_source(req.staged)
            .await?
            .collect()
            .await
            .map_err(|e| EngineError::Integrity(format!("staged batch {staged}: {e}")))?;
        crate::crash::point("promote_before_commit");
        let t = t
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await
            .map_err(table_err)?;
        return Ok(Promoted {
            version: t.version().map(|v| v as i64),
            already: false,
            inserted: source_rows,
            updated: 0,
            deleted: 0,
            schema: None,
        });
    }

    let on = req
        .key
        .iter()
        .map(|k| format!("t.{0} = s.{0}", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let cur = quote(req.cursor);
    // (An added column is not in the target yet: delta-rs's MERGE cannot compare with it.)
    let differs: Vec<String> = write_cols
        .iter()
        .filter(|c| !req.key.contains(c) && c.as_str() != req.cursor)
        .filter(|c| !resolution.added.iter().any(|(a, _)| a == *c))
        .map(|c| format!("(s.{0} IS DISTINCT FROM t.{0})", quote(c)))
        .collect();
    let newer = if differs.is_empty() {
        format!("s.{cur} > t.{cur}")
    } else {
        format!(
            "s.{cur} > t.{cur} OR (s.{cur} = t.{cur} AND ({}))",
            differs.join(" OR ")
        )
    };
    // A MERGE into a table on object storage that holds no rows yet (a first load): every
    // batch row is an insert, so the batch is appended, written once (the staged file
    // uploaded as a data file, or its partitions copied), where delta-rs's MERGE would read
    // and write it again; the commit is still a MERGE that read the whole table, so a
    // concurrent writer's rows make it conflict and retry. A local table's MERGE does the
    // same in `rewrite::merge`.
    if crate::storage::is_remote(req.table)
        && engine == MergeEngine::Rewrite
        && resolution.widened.is_empty()
        && t.snapshot().map_err(table_err)?.log_data().num_files() == 0
        && rewrite::unsupported(&t)?.is_none()
    {
        let append = rewrite::RewriteAppend {
            table: &t,
            table_dir: req.table,
            staged: req.staged,
            txn,
            metadata,
            evolution: evolution.as_ref(),
            staged_schema: &arrow_schema,
            first_load: Some(rewrite::FirstLoad {
                key: req.key,
                on: &on,
                newer: &newer,
            }),
        };
        let p = appended(append, &resolution).await?;
        return after_merge(req, p).await;
    }
    let unsupported = match engine {
        MergeEngine::DeltaRs => Some("TIDEMARK_MERGE_ENGINE=delta-rs".to_string()),
        // The rewrite MERGE reads the table's files by local path.
        MergeEngine::Rewrite if crate::storage::is_remote(req.table) => {
            Some("the table is on object storage".to_string())
        }
        MergeEngine::Rewrite => rewrite::unsupported(&t)?,
    };
    if let Some(why) = &unsupported {
        tracing::info!(table = req.table, reason = %why, "MERGE through delta-rs");
    } else {
        let out = rewrite::merge(rewrite::RewriteMerge {
            table: &t,
            table_dir: req.table,
            staged: req.staged,
            key: req.key,
            cursor: req.cursor,
            partition_stable: req.partition_stable,
            txn,
            metadata,
            on: &on,
            newer: &newer,
            evolution: evolution.as_ref(),
            deletion_vectors: req.deletion_vectors && deletion_vectors_enabled(&t),
            staged_schema: &arrow_schema,
        })
        .await?;
        tracing::info!(
            table = req.table,
            files_probed = out.files_probed,
            files_rewritten = out.files_rewritten,
            files_deleted_from = out.files_deleted_from,
            files_copied = out.files_copied,
            bytes_written = out.bytes_written,
            inserted = out.inserted,
            updated = out.updated,
            phase_ms = ?out.phase_ms,
            "rewrite MERGE"
        );
        let committed = out.version.is_some();
        let promoted = Promoted {
            version: out.version.or(t.version().map(|v| v as i64)),
            already: false,
            inserted: out.inserted,
            updated: out.updated,
            deleted: 0,
            schema: None,
        };
        let promoted = with_schema(promoted, &resolution, &applied_by_rewrite(&out), committed);
        return after_merge(req, promoted).await;
    }
    if !resolution.widened.is_empty() {
        return Err(refuse_widening(
            &resolution,
            &format!(
                "this MERGE goes through delta-rs ({}), which cannot change a column's type",
                unsupported.unwrap_or_default()
            ),
        ));
    }
    let source = shape_source(datafusion_source(req.staged).await?, &t, &resolution)?;
    let source = if resolution.added.is_empty() {
        source
    } else {
        mask_added(source, &t, &resolution, req.key, &newer).await?
    };
    crate::crash::point("promote_before_commit");
    let (t, metrics) = t
        .merge(source, on.as_str())
        .with_merge_schema(!resolution.added.is_empty())
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(props)
        .when_matched_update(|u| {
            write_cols.iter().fold(u.predicate(newer.as_str()), |u, c| {
                u.update(c.as_str(), format!("s.{}", quote(c)))
            })
        })
        .map_err(table_err)?
        .when_not_matched_insert(|i| {
            write_cols
                .iter()
                .fold(i, |i, c| i.set(c.as_str(), format!("s.{}", quote(c))))
        })
        .map_err(table_err)?
        .await
        .map_err(table_err)?;
    let promoted = Promoted {
        version: t.version().map(|v| v as i64),
        already: false,
        inserted: metrics.num_target_rows_inserted as u64,
        updated: metrics.num_target_rows_updated as u64,
        deleted: 0,
        schema: None,
    };
    let committed = committed_after(promoted.version);
    let promoted = with_schema(promoted, &resolution, DELTA_RS_SCHEMA_MERGE, committed);
    after_merge(req, promoted).await
}

/// tidemark's own append commit ([`rewrite::append`]), as a promote reports it.
async fn appended(append: rewrite::RewriteAppend<'_>, resolution: &Resolution) -> Result<Promoted> {
    let out = rewrite::append(append).await?;
    let p = Promoted {
        version: out.version,
        inserted: out.inserted,
        ..Promoted::default()
    };
    let committed = out.version.is_some();
    Ok(with_schema(
        p,
        resolution,
        &applied_by_rewrite(&out),
        committed,
    ))
}

/// Whether an append without a schema change can adopt the staged file as the table's new
/// data file (`adopt.rs`): a local table tidemark's own commits handle, unpartitioned, of the
/// file's columns and types.
fn adoptable_append(
    t: &DeltaTable,
    table: &str,
    staged: &deltalake::arrow::datatypes::SchemaRef,
) -> Result<bool> {
    if rewrite::unsupported(t)?.is_some() {
        return Ok(false);
    }
    let snapshot = t.snapshot().map_err(|e| EngineError::delta(table, e))?;
    let partitions = snapshot.metadata().partition_columns().to_vec();
    let table_schema = rewrite::table_arrow_schema(t)?;
    // A partitioned table's batch is not adopted whole; its partitions are copied.
    let refusal = match partitions.is_empty() {
        true => adopt::refusal(staged, &table_schema, &partitions, false),
        false => copy::refusal(staged, &table_schema, &partitions),
    };
    if let Some(why) = &refusal {
        tracing::debug!(table, reason = %why, "the staged batch is written again, not adopted");
    }
    Ok(refusal.is_none())
}

/// The table property that lets writers add deletion vectors (with the `deletionVectors`
/// reader and writer feature).
pub const ENABLE_DELETION_VECTORS: &str = "delta.enableDeletionVectors";

/// Whether the table lets writers add deletion vectors.
pub fn deletion_vectors_enabled(t: &DeltaTable) -> bool {
    t.snapshot().is_ok_and(|s| {
        s.metadata()
            .configuration()
            .get(ENABLE_DELETION_VECTORS)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    })
}

/// Upgrades the table to deletion vectors (reader 3 / writer 7, the `deletionVectors`
/// feature, `delta.enableDeletionVectors = true`) in a commit of its own, and returns it
/// loaded again. Idempotent: a table already upgraded is left alone. Readers without
/// deletion-vector support refuse the table from this commit on (docs/targets.md).
pub async fn enable_deletion_vectors(t: DeltaTable, table: &str) -> Result<DeltaTable> {
    if deletion_vectors_enabled(&t) {
        return Ok(t);
    }
    let upgraded = t
        .set_tbl_properties()
        .with_properties(std::collections::HashMap::from([(
            ENABLE_DELETION_VECTORS.to_string(),
            "true".to_string(),
        )]))
        .await;
    match upgraded {
        Ok(t) => {
            tracing::info!(table, "table upgraded to deletion vectors");
            Ok(t)
        }
        // Another attempt upgraded it first.
        Err(e) => match open(table).await? {
            Some(t) if deletion_vectors_enabled(&t) => Ok(t),
            _ => Err(EngineError::delta(table, e)),
        },
    }
}

/// How a schema change made by delta-rs's MERGE is recorded.
const DELTA_RS_SCHEMA_MERGE: &str = "columns added by delta-rs's MERGE with schema merge, in the run's commit (delta-rs gives the table a new metadata id when it does)";

/// How a schema change made by tidemark's own commit is recorded.
fn applied_by_rewrite(out: &rewrite::RewriteOutcome) -> String {
    let v = out.version.unwrap_or_default();
    if out.files_rewritten > 0 {
        format!(
            "metaData action in commit {v}, with the table's data files rewritten in the new types ({} file(s))",
            out.files_rewritten
        )
    } else {
        format!("metaData action in commit {v}")
    }
}

/// `p` with the contract's record, when the promote committed something.
fn with_schema(mut p: Promoted, r: &Resolution, applied: &str, committed: bool) -> Promoted {
    if r.record.is_empty() || p.already || !committed {
        return p;
    }
    let mut record = r.record.clone();
    if record.changes_table() {
        record.applied = Some(applied.to_string());
    }
    p.schema = Some(record);
    p
}

/// The error of a widening this path cannot make, naming the columns.
fn refuse_widening(r: &Resolution, why: &str) -> EngineError {
    let cols: Vec<String> = r
        .widened
        .iter()
        .map(|(n, from, to)| {
            format!(
                "`{n}` {} → {}",
                contract::type_name(from),
                contract::type_name(to)
            )
        })
        .collect();
    EngineError::Schema(format!(
        "the batch widens {} ([schema] type_changes = \"widen\"), but {why}; cast the column to the table's type in [transform], or load into a new table",
        cols.join(", ")
    ))
}

/// The batch with its added columns (`new_columns = "add"`) null on the rows whose change the
/// MERGE will not apply (`applies`, over `s.` the batch and `t.` the table, false).
///
/// delta-rs 1.1's MERGE with schema merge fills an added column of a matched row that no
/// clause updates from the source row (its "copy" of a column the target lacks reads the
/// source's), so a stale version's value would land in a row that keeps its newer version.
/// Nulling those values first leaves such rows null there, as for every row the batch does
/// not carry. Reads the table's key (and compared) columns once; only when columns are added.
async fn mask_added(
    source: deltalake::datafusion::dataframe::DataFrame,
    t: &DeltaTable,
    r: &Resolution,
    key: &[String],
    applies: &str,
) -> Result<deltalake::datafusion::dataframe::DataFrame> {
    let table = t.table_url().to_string();
    let err = |e: deltalake::datafusion::error::DataFusionError| {
        EngineError::Integrity(format!("{table}: masking added columns: {e}"))
    };
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())
        .map_err(|e| EngineError::delta(&table, e))?;
    let provider = t
        .table_provider()
        .await
        .map_err(|e| EngineError::delta(&table, e.into()))?;
    let columns: Vec<String> = source
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    ctx.register_table("s", source.into_view()).map_err(err)?;
    ctx.register_table("t", provider).map_err(err)?;
    let select: Vec<String> = columns
        .iter()
        .map(|c| {
            if r.added.iter().any(|(a, _)| a == c) {
                format!(
                    "CASE WHEN t.{k} IS NULL OR ({applies}) THEN s.{q} ELSE NULL END AS {q}",
                    k = quote(&key[0]),
                    q = quote(c)
                )
            } else {
                format!("s.{}", quote(c))
            }
        })
        .collect();
    let on = key
        .iter()
        .map(|k| format!("t.{0} = s.{0}", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    ctx.sql(&format!(
        "SELECT {} FROM s LEFT JOIN t ON {on}",
        select.join(", ")
    ))
    .await
    .map_err(err)
}

/// The batch as delta-rs's MERGE takes it under the contract: columns the table lacks and the
/// contract ignores are dropped, table columns the batch lacks are added as typed nulls.
fn shape_source(
    source: deltalake::datafusion::dataframe::DataFrame,
    t: &DeltaTable,
    r: &Resolution,
) -> Result<deltalake::datafusion::dataframe::DataFrame> {
    use deltalake::datafusion::prelude::{cast, ident, lit};
    use deltalake::datafusion::scalar::ScalarValue;
    if r.ignored.is_empty() && r.nulled.is_empty() {
        return Ok(source);
    }
    let table_schema = t
        .snapshot()
        .map_err(|e| EngineError::delta("target", e))?
        .snapshot()
        .arrow_schema();
    let mut exprs: Vec<_> = source
        .schema()
        .fields()
        .iter()
        .filter(|f| !r.ignored.contains(f.name()))
        .map(|f| ident(f.name()))
        .collect();
    for n in &r.nulled {
        let dtype = table_schema
            .field_with_name(n)
            .map(|f| f.data_type().clone())
            .map_err(|e| EngineError::Schema(format!("column `{n}`: {e}")))?;
        exprs.push(cast(lit(ScalarValue::Null), dtype).alias(n));
    }
    source
        .select(exprs)
        .map_err(|e| EngineError::Schema(format!("cannot shape the batch to the table: {e}")))
}

/// A MERGE that changed nothing made no commit. If another attempt of this run committed
/// after our token check (a zombie that woke up), the MERGE found its rows already there:
/// report that commit, not an empty promote at the old version.
async fn after_merge(req: &PromoteRequest<'_>, promoted: Promoted) -> Result<Promoted> {
    let table_err = |e| EngineError::delta(req.table, e);
    if promoted.inserted + promoted.updated > 0 {
        return Ok(promoted);
    }
    if let Some(t) = open(req.table).await?
        && txn_version(&t, req.app_id).await.map_err(table_err)? >= Some(req.run_seq as i64)
        && let Some(found) = find_run_commit(&t, req.table, req.pipeline, req.run_seq).await?
    {
        return Ok(Promoted {
            version: Some(found.version),
            already: true,
            inserted: found.rows_inserted,
            updated: found.rows_updated,
            deleted: found.rows_deleted,
            schema: None,
        });
    }
    Ok(promoted)
}

/// Casts the batch's columns to the table's types where they differ (a column null in every
/// event of a batch arrives as text; integers the table holds as doubles).
fn cast_to_table(
    source: deltalake::datafusion::dataframe::DataFrame,
    t: &DeltaTable,
) -> Result<deltalake::datafusion::dataframe::DataFrame> {
    use deltalake::datafusion::prelude::{cast, ident};
    let table_schema = t
        .snapshot()
        .map_err(|e| EngineError::delta("target", e))?
        .snapshot()
        .arrow_schema();
    let exprs: Vec<_> = source
        .schema()
        .fields()
        .iter()
        .map(|f| match table_schema.field_with_name(f.name()) {
            Ok(tf) if tf.data_type() != f.data_type() => {
                cast(ident(f.name()), tf.data_type().clone()).alias(f.name())
            }
            _ => ident(f.name()),
        })
        .collect();
    source.select(exprs).map_err(|e| {
        EngineError::Schema(format!("cannot cast the batch to the table's types: {e}"))
    })
}

/// Applies a batch of change events in one MERGE: a change applies when its position is newer
/// than the row's (`_tidemark_pos`), or always after a truncate in the batch, which also
/// deletes every row the batch does not name.
async fn merge_changes(
    req: &PromoteRequest<'_>,
    t: DeltaTable,
    source: deltalake::datafusion::dataframe::DataFrame,
    columns: &[String],
    props: CommitProperties,
    cdc: CdcApply,
    merge_schema: bool,
) -> Result<Promoted> {
    let table_err = |e| EngineError::delta(req.table, e);
    let on = req
        .key
        .iter()
        .map(|k| format!("t.{0} = s.{0}", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let (pos, op) = (quote(CDC_POS_COL), quote(CDC_OP_COL));
    let newer = if cdc.truncate {
        "true".to_string()
    } else {
        format!("(t.{pos} IS NULL OR s.{pos} > t.{pos})")
    };
    let upsert = format!("s.{op} = 'u' AND {newer}");
    let delete = format!("s.{op} = 'd' AND {newer}");
    let mut b = t
        .merge(source, on.as_str())
        .with_merge_schema(merge_schema)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_commit_properties(props)
        .when_matched_update(|u| {
            columns.iter().fold(u.predicate(upsert.as_str()), |u, c| {
                u.update(c.as_str(), format!("s.{}", quote(c)))
            })
        })
        .map_err(table_err)?;
    b = if cdc.soft_delete {
        b.when_matched_update(|u| {
            u.predicate(delete.as_str())
                .update(CDC_DELETED_COL, format!("s.{}", quote(CDC_DELETED_COL)))
                .update(CDC_POS_COL, format!("s.{pos}"))
        })
        .map_err(table_err)?
    } else {
        b.when_matched_delete(|d| d.predicate(delete.as_str()))
            .map_err(table_err)?
    };
    b = b
        .when_not_matched_insert(|i| {
            columns
                .iter()
                .fold(i.predicate(format!("s.{op} = 'u'")), |i, c| {
                    i.set(c.as_str(), format!("s.{}", quote(c)))
                })
        })
        .map_err(table_err)?;
    if cdc.soft_delete {
        // A delete of a row the table never held leaves a marked row too: its position keeps
        // an older change, delivered later, from bringing the row back.
        let keep: Vec<&str> = req
            .key
            .iter()
            .map(|k| k.as_str())
            .chain([CDC_POS_COL, CDC_DELETED_COL])
            .collect();
        b = b
            .when_not_matched_insert(|i| {
                keep.iter()
                    .fold(i.predicate(format!("s.{op} = 'd'")), |i, c| {
                        i.set(*c, format!("s.{}", quote(c)))
                    })
            })
            .map_err(table_err)?;
    }
    if cdc.truncate {
        b = b
            .when_not_matched_by_source_delete(|d| d)
            .map_err(table_err)?;
    }
    let (t, metrics) = b.await.map_err(table_err)?;
    Ok(Promoted {
        version: t.version().map(|v| v as i64),
        already: false,
        inserted: metrics.num_target_rows_inserted as u64,
        updated: metrics.num_target_rows_updated as u64,
        deleted: metrics.num_target_rows_deleted as u64,
        schema: None,
    })
}

/// Commits a truncate that no change follows in its batch: every row is deleted, in one
/// commit carrying the run's token and watermark (nothing when the table holds the run).
pub async fn truncate_run(
    table: &str,
    app_id: &str,
    pipeline: &str,
    run_seq: u64,
    watermark_json: &str,
) -> Result<Promoted> {
    let table_err = |e| EngineError::delta(table, e);
    let Some(t) = open(table).await? else {
        // No table yet: nothing to empty, nothing to commit.
        return Ok(Promoted::default());
    };
    if let Some(v) = txn_version(&t, app_id).await.map_err(table_err)?
        && v >= run_seq as i64
    {
        return Ok(Promoted {
            version: t.version().map(|v| v as i64),
            already: true,
            ..Promoted::default()
        });
    }
    let props = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id, run_seq as i64))
        .with_metadata([
            (META_PIPELINE.to_string(), serde_json::Value::from(pipeline)),
            (META_RUN_SEQ.to_string(), serde_json::Value::from(run_seq)),
            (
                META_WATERMARK.to_string(),
                serde_json::Value::from(watermark_json),
            ),
        ]);
    crate::crash::point("promote_before_commit");
    let (t, metrics) = t
        .delete()
        .with_commit_properties(props)
        .await
        .map_err(table_err)?;
    Ok(Promoted {
        version: t.version().map(|v| v as i64),
        already: false,
        inserted: 0,
        updated: 0,
        deleted: metrics.num_deleted_rows.unwrap_or(0) as u64,
        schema: None,
    })
}

/// Reads a whole table into Arrow batches (tests, demo, status).
pub async fn read_all(table: &str) -> Result<Vec<deltalake::arrow::record_batch::RecordBatch>> {
    let Some(t) = open(table).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state())
        .map_err(|e| EngineError::delta(table, e))?;
    let provider = t
        .table_provider()
        .await
        .map_err(|e| EngineError::delta(table, e.into()))?;
    ctx.register_table("t", provider)
        .map_err(|e| EngineError::Integrity(format!("{table}: {e}")))?;
    let df = ctx
        .sql("SELECT * FROM t")
        .await
        .map_err(|e| EngineError::Integrity(format!("{table}: {e}")))?;
    df.collect()
        .await
        .map_err(|e| EngineError::Integrity(format!("{table}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{ArrayRef, Int64Array};
    use deltalake::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    /// The zombie case of a run's first promote: an attempt that read the table state and
    /// then slept must not be able to append the batch after the live attempt committed it.
    #[tokio::test]
    async fn a_commit_from_a_stale_state_of_the_same_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t").to_string_lossy().into_owned();
        let batch = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        ensure_table(&table, batch.schema(), &[]).await.unwrap();
        ensure_table(&table, batch.schema(), &[]).await.unwrap(); // idempotent
        let props = || {
            CommitProperties::default()
                .with_application_transaction(Transaction::new("tidemark:t", 1))
        };
        let stale = open(&table).await.unwrap().unwrap();
        let live = open(&table).await.unwrap().unwrap();
        let live = live
            .write(vec![batch.clone()])
            .with_commit_properties(props())
            .await
            .unwrap();
        assert_eq!(live.version(), Some(1));
        let zombie = stale
            .write(vec![batch])
            .with_commit_properties(props())
            .await;
        assert!(
            zombie.is_err(),
            "the stale commit of the same run must be refused"
        );
        assert_eq!(open(&table).await.unwrap().unwrap().version(), Some(1));
    }

    /// The run's commit is found by its own version, under newer commits of another writer
    /// sharing the table, and not confused with that writer's commit of the same run number.
    #[tokio::test]
    async fn the_run_commit_is_found_by_version_under_other_writers_commits() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t").to_string_lossy().into_owned();
        let batch =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let mut t = ensure_table(&table, batch.schema(), &[]).await.unwrap();
        for (pipeline, seq) in [("p", 1u64), ("p", 2), ("q", 2), ("q", 3)] {
            let props = CommitProperties::default().with_metadata([
                (META_PIPELINE.to_string(), serde_json::Value::from(pipeline)),
                (META_RUN_SEQ.to_string(), serde_json::Value::from(seq)),
            ]);
            t = t
                .write(vec![batch.clone()])
                .with_commit_properties(props)
                .await
                .unwrap();
        }
        assert_eq!(t.version(), Some(4));
        let found = |seq| find_run_commit(&t, &table, "p", seq);
        assert_eq!(found(2).await.unwrap().map(|r| r.version), Some(2));
        assert_eq!(found(1).await.unwrap().map(|r| r.version), Some(1));
        assert!(found(3).await.unwrap().is_none());
        let q = find_run_commit(&t, &table, "q", 2).await.unwrap().unwrap();
        assert_eq!((q.version, q.rows_inserted), (3, 1));
    }

    /// The head-commit fast path answers only when the newest commit is the pipeline's own,
    /// with its token; it then agrees with the log replay, and otherwise leaves it to it.
    #[tokio::test]
    async fn the_head_commit_fast_path_agrees_with_the_log_replay() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t").to_string_lossy().into_owned();
        assert!(
            head_commit_run(&table, "tidemark:p", "p")
                .unwrap()
                .is_none()
        );
        let batch =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
                .unwrap();
        let mut t = ensure_table(&table, batch.schema(), &[]).await.unwrap();
        assert!(
            head_commit_run(&table, "tidemark:p", "p")
                .unwrap()
                .is_none()
        );
        let commit = |pipeline: &str, seq: u64| {
            CommitProperties::default()
                .with_application_transaction(Transaction::new(
                    format!("tidemark:{pipeline}"),
                    seq as i64,
                ))
                .with_metadata([
                    (META_PIPELINE.to_string(), serde_json::Value::from(pipeline)),
                    (META_RUN_SEQ.to_string(), serde_json::Value::from(seq)),
                ])
        };
        for (pipeline, seq) in [("p", 1u64), ("p", 2)] {
            t = t
                .write(vec![batch.clone()])
                .with_commit_properties(commit(pipeline, seq))
                .await
                .unwrap();
        }
        let fast = head_commit_run(&table, "tidemark:p", "p")
            .unwrap()
            .expect("p's commit is the head");
        assert_eq!((fast.run_seq, fast.version), (2, 2));
        let slow = committed_run(&table, "tidemark:p", "p")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((slow.run_seq, slow.version), (2, 2));
        // Another writer on top: the fast path steps aside, the replay still finds p's run.
        t.write(vec![batch])
            .with_commit_properties(commit("q", 7))
            .await
            .unwrap();
        assert!(
            head_commit_run(&table, "tidemark:p", "p")
                .unwrap()
                .is_none()
        );
        let found = committed_run(&table, "tidemark:p", "p")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.run_seq, found.version), (2, 2));
        let q = committed_run(&table, "tidemark:q", "q")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((q.run_seq, q.version), (7, 3));
    }
}
