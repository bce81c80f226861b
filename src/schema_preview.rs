//! `tidemark validate --against-target`: what the schema contract would do in the next run —
//! the columns the source's next batch would have (after the transform) against the target's,
//! and the change the run would apply, or the error it would fail with. Reads footers, the
//! query's description and the table's schema; no row, no write.

use crate::contract::{self, Columns};
use crate::error::{EngineError, Result};
use crate::{source, state, target};
use polars::prelude::*;
use serde::Serialize;
use tidemark_workflows::payloads::{ColumnType, SchemaChange};
use tidemark_workflows::spec::PipelineSpec;

/// What the next run would do to the target's schema.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchemaPreview {
    /// The target, in words.
    pub target: String,
    /// The target's columns (None: no table yet).
    pub target_columns: Option<Vec<ColumnType>>,
    /// Where the next batch comes from, in words.
    pub source: String,
    /// The next batch's columns, after the transform (None: not known before a run reads).
    pub batch_columns: Option<Vec<ColumnType>>,
    /// The change the run would apply under the contract (None: none).
    pub change: Option<SchemaChange>,
    /// The error the run would fail with, when the contract refuses the change.
    pub refused: Option<String>,
    /// Why the preview is partial, when it is.
    pub note: Option<String>,
}

fn named(columns: &Columns) -> Vec<ColumnType> {
    columns
        .iter()
        .map(|(n, t)| ColumnType {
            name: n.clone(),
            dtype: contract::type_name(t),
        })
        .collect()
}

/// Computes the preview of `spec`'s next run.
pub async fn preview(spec: &PipelineSpec) -> Result<SchemaPreview> {
    let state = state::open(spec)?;
    let store = state.read_watermark()?;
    let target = target::open(spec)?;
    let mut out = SchemaPreview {
        target: target.describe(),
        ..Default::default()
    };
    let table = target.columns().await?;
    out.target_columns = table.as_ref().map(named);
    let for_source = spec.clone();
    let previewed = tokio::task::spawn_blocking(move || {
        source::of(&for_source).preview(&for_source, store.as_ref())
    })
    .await
    .map_err(|e| EngineError::io("preview task", std::io::Error::other(e.to_string())))?;
    let p = match previewed {
        Ok(Some(p)) => p,
        Ok(None) if spec.source.kind.is_cdc() => {
            out.source = "change events".into();
            out.note = Some("the columns of change events are known only when a run reads them; the contract applies to them then".into());
            return Ok(out);
        }
        Ok(None) => {
            out.source = "the source".into();
            out.note = Some("the next window holds no file: nothing to compare".into());
            return Ok(out);
        }
        Err(e @ EngineError::Schema(_)) => {
            out.source = "the files of the next window".into();
            out.refused = Some(e.to_string());
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    out.source = p.from.clone();
    let mut columns = p.columns.clone();
    if let Some(t) = &spec.transform {
        let empty = DataFrame::empty_with_schema(&Schema::from_iter(
            columns
                .iter()
                .map(|(n, d)| Field::new(n.as_str().into(), d.clone())),
        ));
        let shaped = crate::batch::transform::apply_sql(empty, &t.sql)?;
        columns = shaped
            .schema()
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
    }
    out.batch_columns = Some(named(&columns));
    let Some(table) = table else {
        out.note = Some("no target table yet: the first run creates it from the batch".into());
        return Ok(out);
    };
    let batch = contract::Batch {
        columns: columns
            .iter()
            .map(|(n, d)| contract::BatchColumn {
                name: n.clone(),
                dtype: d.clone(),
                nulls: 0,
                origin: p
                    .origins
                    .iter()
                    .find(|(c, _)| c == n)
                    .map(|(_, o)| o.clone()),
            })
            .collect(),
        rows: 0,
        from: p.from.clone(),
        deletes_only: false,
    };
    if let Some(u) = &p.unified {
        out.note = Some(format!(
            "the window's files differ among themselves; the contract unifies them ({})",
            u.summary()
                .replace(" (0 rows)", "")
                .replace(" (0 values)", "")
        ));
    }
    match contract::against_table(&spec.schema, &table, &target.describe(), &batch) {
        Ok(r) => out.change = (!r.record.is_empty()).then_some(r.record),
        Err(e) => out.refused = Some(e.to_string()),
    }
    Ok(out)
}
