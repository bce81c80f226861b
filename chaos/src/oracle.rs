//! The invariants checked after every round of a case.

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
    let table = match read_target(&*target).await {
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

/// `order_id -> (updated_at µs, status)` of the target, failing on a duplicate key.
async fn read_target(target: &dyn Target) -> anyhow::Result<BTreeMap<i64, (i64, String)>> {
    let df = target.read_all().await?;
    let mut out = BTreeMap::new();
    if df.height() == 0 {
        return Ok(out);
    }
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
