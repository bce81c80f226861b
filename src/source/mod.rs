//! Sources: what a run reads. One small interface, [`Source`], with one implementation per
//! source kind — Parquet files (`parquet`), a PostgreSQL query (`postgres`), Debezium change
//! events from JSON-lines files or Kafka (`debezium`, over `crate::cdc`) — and the one place ([`of`]) that maps
//! a spec's source kind to its implementation.
//!
//! Row sources only extract the window; the shared row pipeline (`crate::batch::rows`) turns
//! it into the batch. Change-event sources reduce events to the last change per key
//! (`crate::cdc`). Sources import `crate::batch`, never the other way round.

pub mod debezium;
pub mod parquet;
pub mod postgres;

use crate::batch::RunContext;
use crate::error::Result;
use std::collections::BTreeMap;
use tidemark_workflows::payloads::ProcessManifest;
use tidemark_workflows::spec::{PipelineSpec, SourceKind};

/// What `validate --against-target` shows of a source: the columns its next batch would
/// have (before the transform), where each first appears, and how its inputs would be
/// unified under the schema contract.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Columns and types.
    pub columns: crate::contract::Columns,
    /// Where each column first appears (files).
    pub origins: Vec<(String, String)>,
    /// How the inputs of the window would be unified (None: they agree).
    pub unified: Option<tidemark_workflows::payloads::SchemaChange>,
    /// The input in words.
    pub from: String,
}

/// A source of one pipeline.
pub trait Source {
    /// Builds run `run.run_seq`'s batch: reads what is new past `run.store`, writes the batch
    /// files and the watermark document the run publishes, and returns the manifest.
    /// Blocking: call from a blocking thread of the runtime.
    fn build(&self, run: &RunContext<'_>) -> Result<ProcessManifest>;

    /// The columns the next run would read, reading no row (None: known only when a run
    /// reads, as for change events, or nothing to read). Blocking, like `build`.
    fn preview(
        &self,
        _spec: &PipelineSpec,
        _store: Option<&crate::state::watermark::Watermark>,
    ) -> Result<Option<Preview>> {
        Ok(None)
    }

    /// Called after a run's watermark is stored, with the positions it holds: a source may
    /// tell its system of record how far the pipeline got (Kafka: the consumer group's
    /// offsets). Advisory only — the watermark is the truth — so it returns nothing.
    /// Blocking.
    fn after_commit(&self, _spec: &PipelineSpec, _positions: &BTreeMap<String, i64>) {}
}

/// The source of a spec.
pub fn of(spec: &PipelineSpec) -> Box<dyn Source> {
    match spec.source.kind {
        SourceKind::Parquet => Box::new(parquet::ParquetFiles),
        SourceKind::Postgres => Box::new(postgres::PostgresQuery),
        SourceKind::DebeziumJsonl => Box::new(debezium::EventFiles),
        SourceKind::KafkaDebezium => Box::new(debezium::KafkaTopics),
    }
}

/// Builds run `run.run_seq`'s batch from the spec's source.
pub fn build(run: &RunContext<'_>) -> Result<ProcessManifest> {
    of(run.spec).build(run)
}
