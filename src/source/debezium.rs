//! The change-event sources: Debezium events from JSON-lines files (`debezium-jsonl`) or from
//! Kafka topics (`kafka-debezium`). Each hands its reader to `crate::cdc::build_batch`, which
//! reduces the events to the last change per key and writes the batch.

use super::Source;
use crate::batch::RunContext;
use crate::cdc::{self, jsonl, kafka};
use crate::error::Result;
use std::collections::BTreeMap;
use tidemark_workflows::payloads::ProcessManifest;
use tidemark_workflows::spec::PipelineSpec;

/// `debezium-jsonl`: change events in `*.jsonl` files, resumed at byte offsets.
pub struct EventFiles;

impl Source for EventFiles {
    fn build(&self, run: &RunContext<'_>) -> Result<ProcessManifest> {
        let path = &run.spec.source.path;
        cdc::build_batch(run, &|_, positions, limits, each| {
            jsonl::read(path, positions, limits, each)
        })
    }
}

/// `kafka-debezium`: change events in Kafka topics, read by explicit assignment from the
/// offsets the watermark stores.
pub struct KafkaTopics;

impl Source for KafkaTopics {
    fn build(&self, run: &RunContext<'_>) -> Result<ProcessManifest> {
        cdc::build_batch(run, &|cdc, positions, limits, each| {
            kafka::read(cdc, positions, limits, each)
        })
    }

    fn after_commit(&self, spec: &PipelineSpec, positions: &BTreeMap<String, i64>) {
        if let Some(cdc) = &spec.source.cdc {
            kafka::commit_advisory(cdc, positions);
        }
    }
}
