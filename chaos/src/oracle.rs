//! The invariants checked after every round of a case.

use crate::runner::TargetPlace;
use anyhow::Context;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tidemark::polars::prelude::{DataType, TimeUnit};
use tidemark::state::{PipelineDirs, ledger, watermark};
use tidemark::workflows::spec::PipelineSpec;

/// Checks the target against the model, the watermark against the model's high mark and its
/// previous value, leftovers, and the ledger against the target's commits. Returns the
/// violations found (empty when all hold) and the number of rows checked.
pub async fn check_round(
    spec: &PipelineSpec,
    place: &TargetPlace,
    model: &BTreeMap<i64, (i64, String)>,
    model_watermark: Option<i64>,
    previous_watermark: Option<i64>,
    case_dir: &Path,
) -> (Vec<String>, usize) {
    let mut v = Vec::new();
    let table = match read_target(spec, place).await {
        Ok(t) => t,
        Err(e) => {
            v.push(format!("target unreadable or has a duplicate key: {e:#}"));
            BTreeMap::new()
        }
    };
    for (k, want) in model {
        match table.get(k) {
            None => v.push(format!("lost row: order {k} (want {want:?})")),
            Some(got) if got != want => v.push(format!(
                "stale or wrong version of order {k}: got {got:?}, want {want:?}"
            )),
            _ => {}
        }
    }
    for k in table.keys().filter(|k| !model.contains_key(k)) {
        v.push(format!("unexpected row: order {k}"));
    }

    let dirs = PipelineDirs::of(spec);
    let stored = watermark::read(&dirs.watermark()).ok().flatten();
    let value = stored.as_ref().and_then(|w| w.value);
    if value != model_watermark {
        v.push(format!(
            "watermark {value:?} != committed high mark {model_watermark:?}"
        ));
    }
    if let (Some(prev), Some(now)) = (previous_watermark, value)
        && now < prev
    {
        v.push(format!("watermark moved backwards: {prev} -> {now}"));
    }

    for leftover in leftovers(case_dir) {
        v.push(format!("leftover file: {leftover}"));
    }

    if let TargetPlace::Postgres { url, schema } = place {
        match pg_staging_tables(url, schema).await {
            Ok(names) => v.extend(
                names
                    .into_iter()
                    .map(|n| format!("leftover staging table {n}")),
            ),
            Err(e) => v.push(format!("cannot list staging tables: {e:#}")),
        }
    }
    if let TargetPlace::Parquet = place {
        v.extend(partitions_with_several_files(Path::new(&spec.target.path)));
    }

    match commits(spec, place).await {
        Ok(commits) => {
            let runs = ledger::read_all(&dirs.ledger()).unwrap_or_default();
            let mut seen = BTreeSet::new();
            for (version, run_seq) in &commits {
                if !seen.insert(*run_seq) {
                    v.push(format!(
                        "run {run_seq} committed twice (again at version {version})"
                    ));
                }
                let recorded = runs.iter().any(|r| {
                    r.run_seq == Some(*run_seq)
                        && (r.status == "succeeded" || r.status == "reconciled")
                        && r.target_version.is_none_or(|tv| tv == *version)
                });
                if !recorded {
                    let entries: Vec<String> = runs
                        .iter()
                        .filter(|r| r.run_seq == Some(*run_seq))
                        .map(|r| format!("{} v{:?} {:?}", r.status, r.target_version, r.error))
                        .collect();
                    v.push(format!(
                        "commit v{version} of run {run_seq} is not in the ledger (its entries: {entries:?})"
                    ));
                }
            }
            if let Some(w) = &stored
                && let Some(max) = commits.iter().map(|(_, r)| *r).max()
                && w.run_seq < max
            {
                v.push(format!(
                    "watermark store is at run {} but the target holds run {max}",
                    w.run_seq
                ));
            }
        }
        Err(e) => v.push(format!("cannot read the target's history: {e:#}")),
    }
    (v, table.len())
}

/// `order_id -> (updated_at µs, status)` of the target, failing on a duplicate key.
async fn read_target(
    spec: &PipelineSpec,
    place: &TargetPlace,
) -> anyhow::Result<BTreeMap<i64, (i64, String)>> {
    match place {
        TargetPlace::Delta => tidemark::demo::read_orders_table(&spec.target.path).await,
        TargetPlace::Parquet => {
            let df = tidemark::target::parquet::read_all(&spec.target.path)?;
            let mut out = BTreeMap::new();
            if df.height() == 0 {
                return Ok(out);
            }
            let ids = df.column("order_id")?.cast(&DataType::Int64)?;
            let ts = df
                .column("updated_at")?
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))?
                .cast(&DataType::Int64)?;
            let st = df.column("status")?.cast(&DataType::String)?;
            let (ids, ts, st) = (ids.i64()?, ts.i64()?, st.str()?);
            for i in 0..df.height() {
                let id = ids.get(i).context("null order_id")?;
                let row = (
                    ts.get(i).context("null updated_at")?,
                    st.get(i).unwrap_or("").to_string(),
                );
                if out.insert(id, row).is_some() {
                    anyhow::bail!("duplicate key {id} in {}", spec.target.path);
                }
            }
            Ok(out)
        }
        TargetPlace::Postgres { url, schema } => {
            let c = pg(url).await?;
            let rows = match c
                .query(
                    &format!(
                        "SELECT order_id, (extract(epoch FROM updated_at) * 1000000)::bigint, status FROM {schema}.orders"
                    ),
                    &[],
                )
                .await
            {
                Ok(rows) => rows,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
            let mut out = BTreeMap::new();
            for r in rows {
                let id: i64 = r.get(0);
                if out.insert(id, (r.get(1), r.get(2))).is_some() {
                    anyhow::bail!("duplicate key {id} in {schema}.orders");
                }
            }
            Ok(out)
        }
    }
}

async fn pg(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn pg_staging_tables(url: &str, schema: &str) -> anyhow::Result<Vec<String>> {
    let c = pg(url).await?;
    Ok(c.query(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'tidemark_stage_%'",
        &[&schema],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// A partition directory must hold exactly one data file (one run's), never two runs' or none.
fn partitions_with_several_files(dataset: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dataset) else {
        return out;
    };
    for e in rd.flatten() {
        let files = std::fs::read_dir(e.path())
            .map(|f| f.flatten().count())
            .unwrap_or(0);
        if files != 1 {
            out.push(format!(
                "partition {} holds {files} files",
                e.file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// (version, run_seq) of every run the target holds, oldest first (Delta: every commit;
/// PostgreSQL: the ledger table; Parquet: the marker's run).
async fn commits(spec: &PipelineSpec, place: &TargetPlace) -> anyhow::Result<Vec<(i64, u64)>> {
    match place {
        TargetPlace::Delta => commits_by_run(&spec.target.path).await,
        TargetPlace::Parquet => {
            let marker = tidemark::target::parquet::sidecar(&spec.target.path)
                .join("commits")
                .join(format!("{}.json", spec.name));
            match std::fs::read(&marker) {
                Ok(bytes) => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
                    let seq = v["run_seq"].as_u64().context("marker run_seq")?;
                    Ok(vec![(seq as i64, seq)])
                }
                Err(_) => Ok(Vec::new()),
            }
        }
        TargetPlace::Postgres { url, schema } => {
            let c = pg(url).await?;
            match c
                .query(
                    &format!(
                        "SELECT run_seq FROM {schema}.tidemark_runs WHERE pipeline = $1 ORDER BY run_seq"
                    ),
                    &[&spec.name],
                )
                .await
            {
                Ok(rows) => Ok(rows
                    .iter()
                    .map(|r| {
                        let s: i64 = r.get(0);
                        (s, s as u64)
                    })
                    .collect()),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    Ok(Vec::new())
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// (version, run_seq) of every tidemark commit of a table, oldest first.
async fn commits_by_run(table: &str) -> anyhow::Result<Vec<(i64, u64)>> {
    let Some(t): Option<DeltaTable> = tidemark::target::delta::open(table).await? else {
        return Ok(Vec::new());
    };
    let head = t.version().unwrap_or(0) as i64;
    let infos: Vec<_> = t.history(None).try_collect().await?;
    let mut out: Vec<(i64, u64)> = infos
        .iter()
        .enumerate()
        .filter_map(|(i, info)| {
            info.info
                .get(tidemark::target::delta::META_RUN_SEQ)
                .and_then(|v| v.as_u64())
                .map(|seq| (head - i as i64, seq))
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Staging folders, temp files and run directories left under `dir`.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let in_runs = d.file_name().is_some_and(|n| n == "runs");
            if name.starts_with("run-") || name.contains(".tmp") || in_runs {
                out.push(p.display().to_string());
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}
