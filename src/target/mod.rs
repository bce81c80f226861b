//! Targets: stage a batch where no reader sees it, then promote it atomically and
//! idempotently. `delta` (Delta Lake MERGE/append), `parquet` (hive-partitioned dataset,
//! partition overwrite) and `postgres` (merge, delete_insert, append in one transaction);
//! this module dispatches the run steps to the spec's target.

pub mod delta;
pub mod delta_rewrite;
pub mod parquet;
pub mod postgres;

use crate::error::{EngineError, Result};
use crate::state::watermark::Watermark;
use std::path::{Path, PathBuf};
use tidemark_workflows::payloads::BatchFile;
use tidemark_workflows::spec::{PipelineSpec, TargetKind};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

/// The PostgreSQL target of a spec (None for file targets).
pub fn pg_target(spec: &PipelineSpec) -> Option<postgres::PgTarget<'_>> {
    match (&spec.target.conn, &spec.target.table) {
        (Some(conn), Some(table)) if spec.target.kind == TargetKind::Postgres => {
            Some(postgres::PgTarget {
                conn,
                table,
                pipeline: &spec.name,
            })
        }
        _ => None,
    }
}

fn pg_target_of(spec: &PipelineSpec) -> Result<postgres::PgTarget<'_>> {
    pg_target(spec).ok_or_else(|| {
        EngineError::Spec("a PostgreSQL target needs `url` or `url_env`, and `table`".into())
    })
}

/// The staging directory of one run in a file target (None for PostgreSQL, which stages
/// into a table).
pub fn staging_dir(spec: &PipelineSpec, run_seq: u64) -> Option<PathBuf> {
    match spec.target.kind {
        TargetKind::Delta => Some(delta::staging_dir(&spec.target.path, &spec.name, run_seq)),
        TargetKind::Parquet => Some(parquet::staging_dir(&spec.target.path, &spec.name, run_seq)),
        TargetKind::Postgres => None,
    }
}

/// The last run of the pipeline the target holds (Parquet: after rolling forward a journaled
/// commit).
pub async fn committed_run(spec: &PipelineSpec) -> Result<Option<CommittedRun>> {
    let app_id = tidemark_workflows::app_id(&spec.name);
    match spec.target.kind {
        TargetKind::Delta => delta::committed_run(&spec.target.path, &app_id, &spec.name).await,
        TargetKind::Parquet => {
            let (path, name) = (spec.target.path.clone(), spec.name.clone());
            blocking(move || parquet::committed_run(&path, &name)).await
        }
        TargetKind::Postgres => postgres::committed_run(&pg_target_of(spec)?).await,
    }
}

/// Stages the run's batch into the target; returns where it went and the bytes (rows, for
/// PostgreSQL) written.
pub async fn stage(
    spec: &PipelineSpec,
    batch: &BatchFile,
    run_seq: u64,
) -> Result<(Vec<String>, u64)> {
    let path = PathBuf::from(&batch.path);
    match spec.target.kind {
        TargetKind::Delta => {
            let (spec, sha) = (spec.clone(), batch.sha256.clone());
            blocking(move || {
                let (dest, n) =
                    delta::stage_file(&path, &sha, &spec.target.path, &spec.name, run_seq)?;
                Ok((vec![dest.to_string_lossy().into_owned()], n))
            })
            .await
        }
        TargetKind::Parquet => {
            let (spec, sha) = (spec.clone(), batch.sha256.clone());
            blocking(move || {
                let (dests, n) = parquet::stage(
                    &path,
                    &sha,
                    &spec.target.path,
                    &spec.name,
                    run_seq,
                    parquet::Layout {
                        partition_by: &spec.target.partition_by,
                        key: &spec.target.key,
                        cursor: &spec.source.cursor,
                    },
                )?;
                Ok((
                    dests
                        .iter()
                        .map(|d| d.to_string_lossy().into_owned())
                        .collect(),
                    n,
                ))
            })
            .await
        }
        TargetKind::Postgres => {
            let t = pg_target_of(spec)?;
            let n = postgres::stage(&t, Path::new(&batch.path), run_seq).await?;
            Ok((vec![format!("{}.{}", t.table, t.staging_name(run_seq))], n))
        }
    }
}

/// Removes a run's staging from the target.
pub async fn cleanup(spec: &PipelineSpec, run_seq: u64) -> Result<()> {
    match spec.target.kind {
        TargetKind::Delta => crate::state::fsio::remove_dir_if_exists(&delta::staging_dir(
            &spec.target.path,
            &spec.name,
            run_seq,
        )),
        TargetKind::Parquet => {
            let (path, name) = (spec.target.path.clone(), spec.name.clone());
            blocking(move || parquet::cleanup(&path, &name, run_seq)).await
        }
        TargetKind::Postgres => postgres::cleanup(&pg_target_of(spec)?, run_seq).await,
    }
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
pub fn committed_watermark(run: &CommittedRun, spec: &PipelineSpec) -> Result<Watermark> {
    run.watermark.clone().ok_or_else(|| {
        EngineError::Integrity(format!(
            "{} holds run {} of {} without its watermark metadata",
            spec.target.path, run.run_seq, spec.name
        ))
    })
}
