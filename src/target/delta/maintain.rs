//! Maintenance of a Delta table (`tidemark maintain`): compaction, a checkpoint, a vacuum.
//!
//! **Compaction** rewrites, per partition, the files whose deletion vectors delete at least
//! `deleted_fraction` of their rows, and the small files (under `small_file_bytes`) of a
//! partition that holds two or more, into files of their live rows only (deletion vectors
//! purged), in one commit (`OPTIMIZE`, `dataChange: false`) with its own token
//! (`txn{tidemark:<pipeline>:maintain}`) and the maintenance's id in its metadata. It is
//! planned from the table's current state, so a retry after the commit finds nothing left to
//! compact and reports the committed one (found by that id); a zombie attempt's commit removes
//! files another commit removed, which Delta's conflict checker refuses.
//! **Checkpoint**: delta-rs's, at the head version. **Vacuum** (delta-rs, full mode) removes
//! files no live version references and older than the retention — replaced files, and a
//! deletion-vector or data file a crashed run wrote before its commit; `_tidemark_staging`
//! is hidden from it (runs clean their own).

use super::files::{self, ROW_COL, TableFile};
use super::rewrite::{self, FileSink};
use super::{META_PIPELINE, open, txn_version};
use crate::error::{EngineError, Result};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;
use polars::prelude::*;
use std::collections::BTreeMap;
use tidemark_workflows::payloads::MaintainReport;
use tidemark_workflows::spec::MaintenanceSpec;

/// Commit-metadata key naming the maintenance (its workflow run id) that made a compaction.
pub const META_MAINTAIN: &str = "tidemark.maintain";

/// The app id of a pipeline's maintenance commits.
pub fn maintain_app_id(pipeline: &str) -> String {
    format!("{}:maintain", tidemark_workflows::app_id(pipeline))
}

/// What one maintenance asks of a Delta table.
pub struct Request<'a> {
    /// Table path or URL.
    pub table: &'a str,
    /// The pipeline.
    pub pipeline: &'a str,
    /// This maintenance's id (its workflow run id): how a retry recognises its compaction.
    pub id: &'a str,
    /// Thresholds and retention.
    pub spec: &'a MaintenanceSpec,
    /// Plan only.
    pub dry_run: bool,
    /// The vacuum retention's floor (ms): the pipeline's longest run.
    pub retention_floor_ms: u64,
}

/// Runs (or, dry, plans) one maintenance of the table.
pub async fn maintain(req: &Request<'_>) -> Result<MaintainReport> {
    let mut report = MaintainReport {
        pipeline: req.pipeline.to_string(),
        target: format!("Delta table {}", req.table),
        dry_run: req.dry_run,
        ..Default::default()
    };
    let Some(t) = open(req.table).await? else {
        report
            .notes
            .push("no table yet: nothing to maintain".into());
        return Ok(report);
    };
    if let Some((version, metrics)) = committed_compaction(&t, req.table, req.id).await? {
        report.already_compacted = true;
        report.compaction_version = Some(version);
        report.files_compacted = metrics["num_removed_files"].as_u64().unwrap_or(0);
        report.files_written = metrics["num_added_files"].as_u64().unwrap_or(0);
        report.rows_purged = metrics["num_purged_rows"].as_u64().unwrap_or(0);
        report.rows_rewritten = metrics["num_rewritten_rows"].as_u64().unwrap_or(0);
    } else {
        compact(&t, req, &mut report).await?;
    }
    let t = open(req.table).await?.expect("the table exists");
    if req.spec.checkpoint && !req.dry_run {
        deltalake::checkpoints::create_checkpoint(&t, None)
            .await
            .map_err(|e| EngineError::delta(req.table, e))?;
        report.checkpoint_version = t.version().map(|v| v as i64);
    }
    vacuum(t, req, &mut report).await?;
    Ok(report)
}

/// The compaction this maintenance already committed (a retry after its commit): its version
/// and operation metrics, from the recent history.
async fn committed_compaction(
    t: &DeltaTable,
    table: &str,
    id: &str,
) -> Result<Option<(i64, serde_json::Value)>> {
    use futures::TryStreamExt;
    let head = t.version().unwrap_or(0) as i64;
    let recent: Vec<_> = t
        .history(Some(20))
        .try_collect()
        .await
        .map_err(|e| EngineError::delta(table, e))?;
    Ok(recent.iter().enumerate().find_map(|(i, c)| {
        (c.info.get(META_MAINTAIN).and_then(|v| v.as_str()) == Some(id)).then(|| {
            (
                head - i as i64,
                c.info.get("operationMetrics").cloned().unwrap_or_default(),
            )
        })
    }))
}

/// The files of one partition a compaction rewrites together.
struct Group {
    files: Vec<TableFile>,
}

/// Plans and (unless dry) commits the compaction.
async fn compact(t: &DeltaTable, req: &Request<'_>, report: &mut MaintainReport) -> Result<()> {
    let m = req.spec;
    if crate::storage::is_remote(req.table) {
        report.notes.push(
            "compaction reads files by local path: on object storage tidemark leaves it to the table's other maintenance (checkpoint and vacuum still run)".into(),
        );
        return Ok(());
    }
    if let Some(why) = rewrite::unsupported(t)? {
        report.notes.push(format!(
            "no compaction: {why} (tidemark rewrites only tables its MERGE handles)"
        ));
        return Ok(());
    }
    let schema = rewrite::table_schema(t)?;
    let mut all = files::table_files(t, req.table, &schema, None)?;
    files::load_deleted(t, &mut all).await?;
    let groups = plan(all, m);
    if groups.is_empty() {
        report.notes.push(format!(
            "nothing to compact (no file with {:.0}% or more of its rows deleted, no partition with two files under {} MiB)",
            m.deleted_fraction * 100.0,
            m.small_file_bytes >> 20
        ));
        return Ok(());
    }
    for g in &groups {
        for f in &g.files {
            report.files_compacted += 1;
            report.bytes_compacted += f.size;
            report.rows_purged += f.deleted.as_ref().map_or(0, |d| d.len());
        }
    }
    if req.dry_run {
        report.notes.push(format!(
            "would compact {} file(s) in {} group(s)",
            report.files_compacted,
            groups.len()
        ));
        return Ok(());
    }
    let columns: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let snapshot = t.snapshot().map_err(|e| EngineError::delta(req.table, e))?;
    let partition_cols = snapshot.metadata().partition_columns().to_vec();
    let sink = FileSink::new(t, rewrite::table_arrow_schema(t)?, partition_cols)?;
    let mut actions: Vec<Action> = Vec::new();
    for g in &groups {
        let frames = g
            .files
            .iter()
            .map(|f| {
                Ok(
                    files::scan_file(f, &columns, &schema)?.drop(Selector::ByName {
                        names: Arc::new([ROW_COL.into()]),
                        strict: true,
                    }),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut live = concat(frames, UnionArgs::default())?.collect()?;
        report.rows_rewritten += live.height() as u64;
        let handle = tokio::runtime::Handle::current();
        let adds = tokio::task::block_in_place(|| sink.write(&mut live, &handle))?;
        for a in adds {
            if let Action::Add(mut add) = a {
                add.data_change = false;
                actions.push(Action::Add(add));
            }
        }
        for f in &g.files {
            if let Action::Remove(mut r) = f.remove.clone() {
                r.data_change = false;
                actions.push(Action::Remove(r));
            }
        }
    }
    report.files_written = actions
        .iter()
        .filter(|a| matches!(a, Action::Add(_)))
        .count() as u64;
    let app = maintain_app_id(req.pipeline);
    let next = txn_version(t, &app)
        .await
        .map_err(|e| EngineError::delta(req.table, e))?
        .unwrap_or(0)
        + 1;
    let metrics = serde_json::json!({
        "num_removed_files": report.files_compacted,
        "num_added_files": report.files_written,
        "num_purged_rows": report.rows_purged,
        "num_rewritten_rows": report.rows_rewritten,
    });
    let props = CommitProperties::default()
        .with_application_transaction(Transaction::new(&app, next))
        .with_metadata([
            (
                META_PIPELINE.to_string(),
                serde_json::Value::from(req.pipeline),
            ),
            (META_MAINTAIN.to_string(), serde_json::Value::from(req.id)),
            ("operationMetrics".to_string(), metrics),
        ]);
    crate::crash::point("maintain_before_commit");
    let committed = CommitBuilder::from(props)
        .with_actions(actions)
        .build(
            Some(snapshot),
            t.log_store(),
            DeltaOperation::Optimize {
                predicate: None,
                target_size: m.target_file_bytes as i64,
            },
        )
        .await
        .map_err(|e| EngineError::delta(req.table, e))?;
    crate::crash::point("maintain_after_commit");
    report.compaction_version = Some(committed.version() as i64);
    Ok(())
}

/// Which files to compact, grouped by partition and bin-packed up to the target size.
fn plan(all: Vec<TableFile>, m: &MaintenanceSpec) -> Vec<Group> {
    let mut by_partition: BTreeMap<String, Vec<TableFile>> = BTreeMap::new();
    for f in all {
        by_partition
            .entry(format!("{:?}", f.partition))
            .or_default()
            .push(f);
    }
    let mut groups = Vec::new();
    for (_, files) in by_partition {
        let deleted_share = |f: &TableFile| {
            let deleted = f.deleted.as_ref().map_or(0, |d| d.len());
            match f.physical_rows() {
                Some(n) if n > 0 => deleted as f64 / n as f64,
                _ => 0.0,
            }
        };
        let small: Vec<bool> = files
            .iter()
            .map(|f| m.small_file_bytes > 0 && f.size < m.small_file_bytes)
            .collect();
        let pack_small = small.iter().filter(|s| **s).count() >= 2;
        let mut chosen: Vec<TableFile> = files
            .iter()
            .zip(&small)
            .filter(|(f, s)| {
                (f.deleted.is_some() && deleted_share(f) >= m.deleted_fraction)
                    || (**s && pack_small)
            })
            .map(|(f, _)| f.clone())
            .collect();
        chosen.sort_by_key(|f| f.size);
        let mut current = Group { files: Vec::new() };
        let mut bytes = 0u64;
        for f in chosen {
            let live = (f.size as f64 * (1.0 - deleted_share(&f))) as u64;
            if !current.files.is_empty() && bytes + live > m.target_file_bytes {
                groups.push(std::mem::replace(&mut current, Group { files: Vec::new() }));
                bytes = 0;
            }
            bytes += live;
            current.files.push(f);
        }
        // A lone small file without deleted rows gains nothing from a rewrite.
        if current.files.len() > 1 || current.files.iter().any(|f| f.deleted.is_some()) {
            groups.push(current);
        }
    }
    groups
}

/// Vacuums (or, dry, lists) the files no live version references, older than the retention.
async fn vacuum(t: DeltaTable, req: &Request<'_>, report: &mut MaintainReport) -> Result<()> {
    let retention = req.spec.vacuum_retention_ms.max(req.retention_floor_ms);
    if retention > req.spec.vacuum_retention_ms {
        report.notes.push(format!(
            "vacuum retention raised to {} ms, the pipeline's longest run",
            retention
        ));
    }
    report.vacuum_retention_ms = retention;
    let (_, metrics) = t
        .vacuum()
        .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
        .with_retention_period(chrono::Duration::milliseconds(retention as i64))
        .with_enforce_retention_duration(false)
        .with_dry_run(req.dry_run)
        .await
        .map_err(|e| EngineError::delta(req.table, e))?;
    report.files_vacuumed = metrics.files_deleted.len() as u64;
    Ok(())
}
