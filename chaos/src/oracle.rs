//! The invariants checked after every round of a case.

use crate::case::{Case, NEW_COLUMN, Target as CaseTarget, channel_of};
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tidemark::polars::prelude::{DataType, TimeUnit};
use tidemark::target::Target;
use tidemark::workflows::spec::PipelineSpec;

/// Checks the target against the model, the watermark against the model's high mark and its
/// previous value, leftovers, and the ledger against the target's commits. Returns the
/// violations found (empty when all hold) and the number of rows checked.
pub async fn check_round(
    spec: &PipelineSpec,
    case: &Case,
    model: &BTreeMap<i64, (i64, String)>,
    model_watermark: Option<i64>,
    previous_watermark: Option<i64>,
    case_dir: &Path,
) -> (Vec<String>, usize) {
    let mut v = Vec::new();
    let target = match tidemark::target::open(spec) {
        Ok(t) => t,
        Err(e) => return (vec![format!("cannot open the target: {e}")], 0),
    };
    let (table, channels) = match read_target(&*target).await {
        Ok(t) => t,
        Err(e) => {
            v.push(format!("target unreadable or has a duplicate key: {e:#}"));
            (BTreeMap::new(), None)
        }
    };
    if case.schema_change {
        v.extend(check_schema(spec, case, &*target, &table, channels.as_ref()).await);
    }
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

    let state = match tidemark::state::open(spec) {
        Ok(s) => s,
        Err(e) => {
            v.push(format!("cannot open the state store: {e:#}"));
            return (v, 0);
        }
    };
    let stored = state.read_watermark().ok().flatten();
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

    match target.leftovers().await {
        Ok(found) => v.extend(found),
        Err(e) => v.push(format!("cannot list the target's leftovers: {e:#}")),
    }

    match target.run_commits().await {
        Ok(commits) => {
            let runs = state.read_ledger().unwrap_or_default();
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

/// The schema-change invariants: a crash never leaves data without its column, nor a row
/// without its value in the new column. Every row version written from the second round on
/// carries `channel` in the table (the column exists, with the row's value), the first
/// round's versions read null there; and where the target widens, `customer_id` is int64
/// once such a row is in (a local Delta table's every data file storing it so: the widening
/// rewrote them all in the commit that brought the row). A batch whose rows all lose may add
/// the column with no value (PostgreSQL and Parquet commit every batch): that is its data.
async fn check_schema(
    spec: &PipelineSpec,
    case: &Case,
    target: &dyn Target,
    table: &BTreeMap<i64, (i64, String)>,
    channels: Option<&BTreeMap<i64, Option<String>>>,
) -> Vec<String> {
    let mut v = Vec::new();
    let evolved = table.values().any(|(_, s)| channel_of(s).is_some());
    match channels {
        None if evolved => v.push(format!(
            "data of the new schema without its column: rows from a later round are in, `{NEW_COLUMN}` is not"
        )),
        None => {}
        Some(ch) => {
            for (k, (_, status)) in table {
                let want = channel_of(status);
                let got = ch.get(k).cloned().flatten();
                if got != want {
                    v.push(format!(
                        "order {k} ({status}): `{NEW_COLUMN}` is {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    if case.widens() && evolved {
        match target.columns().await {
            Ok(Some(cols)) => {
                let t = cols
                    .iter()
                    .find(|(n, _)| n == "customer_id")
                    .map(|(_, t)| t);
                if t != Some(&DataType::Int64) {
                    v.push(format!(
                        "customer_id is {t:?} after the widening, want Int64"
                    ));
                }
            }
            Ok(None) => v.push("the target has no columns".into()),
            Err(e) => v.push(format!("cannot read the target's columns: {e:#}")),
        }
        if case.target == CaseTarget::Delta {
            v.extend(delta_files_store(&spec.target.path, "customer_id", &DataType::Int64).await);
        }
    }
    v
}

/// Every live data file of a local Delta table stores `column` as `want`.
async fn delta_files_store(table: &str, column: &str, want: &DataType) -> Vec<String> {
    use tidemark::polars::prelude::{ParquetReader, SerReader};
    let t = match tidemark::target::delta::open(table).await {
        Ok(Some(t)) => t,
        Ok(None) => return vec![],
        Err(e) => return vec![format!("cannot open {table}: {e:#}")],
    };
    let uris: Vec<String> = match t.get_file_uris() {
        Ok(u) => u.collect(),
        Err(e) => return vec![format!("cannot list {table}'s files: {e}")],
    };
    let mut v = Vec::new();
    for uri in uris {
        let path = uri.trim_start_matches("file://").to_string();
        let stored = std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| ParquetReader::new(f).schema().map_err(|e| e.to_string()))
            .map(|s| s.get(column).map(DataType::from_arrow_field));
        match stored {
            Ok(Some(t)) if &t == want => {}
            Ok(t) => v.push(format!(
                "data file {path} stores {column} as {t:?} but the table's type is {want:?} (a widening left it unrewritten)"
            )),
            Err(e) => v.push(format!("cannot read {path}: {e}")),
        }
    }
    v
}

/// The target's rows, and its `channel` column when it has one.
type TargetRows = (
    BTreeMap<i64, (i64, String)>,
    Option<BTreeMap<i64, Option<String>>>,
);

/// `order_id -> (updated_at µs, status)` of the target (and `order_id -> channel` when the
/// column exists), failing on a duplicate key.
async fn read_target(target: &dyn Target) -> anyhow::Result<TargetRows> {
    let df = target.read_all().await?;
    let mut out = BTreeMap::new();
    if df.height() == 0 {
        return Ok((out, None));
    }
    let channels = match df.column(NEW_COLUMN) {
        Ok(c) => {
            let ids = df.column("order_id")?.cast(&DataType::Int64)?;
            let c = c.cast(&DataType::String)?;
            Some(
                ids.i64()?
                    .iter()
                    .zip(c.str()?.iter())
                    .filter_map(|(id, v)| Some((id?, v.map(str::to_string))))
                    .collect(),
            )
        }
        Err(_) => None,
    };
    let ids = df.column("order_id")?.cast(&DataType::Int64)?;
    let ts = df.column("updated_at")?;
    // Microseconds in the column's own zone (a zone-aware column stays in it: only the unit
    // changes), then the physical value.
    let zone = match ts.dtype() {
        DataType::Datetime(_, zone) => zone.clone(),
        _ => None,
    };
    let ts = ts
        .cast(&DataType::Datetime(TimeUnit::Microseconds, zone))?
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
            anyhow::bail!("duplicate key {id} in {}", target.describe());
        }
    }
    Ok((out, channels))
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
