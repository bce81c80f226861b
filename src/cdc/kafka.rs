//! The `kafka-debezium` reader: Debezium envelopes from Kafka topics, read with librdkafka.
//!
//! Offsets are the watermark: the run assigns each partition at the next offset its committed
//! watermark stores (the partition's earliest offset the first time), reads up to the end
//! offset it saw when it started or `max_events`, and records the next offset of each
//! partition in the watermark document that the target commit embeds. Nothing is committed to
//! Kafka before that; the consumer group's offsets are written afterwards for monitoring only
//! ([`commit_advisory`]) and never read back.

use super::{Origin, ReadOutcome};
use crate::error::{EngineError, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tidemark_workflows::spec::CdcSpec;

/// How long a broker may stay silent before the run fails (and is retried).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of metadata and offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The position key of a partition.
pub fn position_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn consumer(cdc: &CdcSpec) -> Result<BaseConsumer> {
    let brokers = cdc.brokers.as_deref().unwrap_or_default();
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", cdc.group_id.as_deref().unwrap_or("tidemark"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("socket.timeout.ms", "10000")
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("log_level", "3")
        .create()
        .map_err(|e| EngineError::Kafka(format!("cannot create a consumer for {brokers}: {e}")))
}

struct Partition {
    topic: String,
    id: i32,
    key: String,
    next: i64,
    end: i64,
}

/// Reads the events past `positions` (see the module doc), calling `each` in arrival order.
pub fn read(
    cdc: &CdcSpec,
    positions: &BTreeMap<String, i64>,
    each: &mut dyn FnMut(Origin<'_>, &[u8]) -> Result<()>,
) -> Result<ReadOutcome> {
    let brokers = cdc.brokers.as_deref().unwrap_or_default();
    let c = consumer(cdc)?;
    let mut parts: Vec<Partition> = Vec::new();
    for topic in &cdc.topics {
        let md = c
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| EngineError::Kafka(format!("cannot reach brokers {brokers}: {e}")))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| {
                EngineError::SourceMissing(format!(
                    "topic {topic:?} does not exist on {brokers} (source.topic)"
                ))
            })?;
        for p in t.partitions() {
            let (low, high) = c
                .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                .map_err(|e| EngineError::Kafka(format!("offsets of {topic}/{}: {e}", p.id())))?;
            let key = position_key(topic, p.id());
            let next = match positions.get(&key) {
                Some(&n) if n < low => {
                    return Err(EngineError::SourceMissing(format!(
                        "{key}: the next offset to apply is {n}, but the broker only keeps offsets from {low}: events were deleted by retention before tidemark applied them; reset the pipeline (tidemark reset --epoch) after re-snapshotting the table"
                    )));
                }
                Some(&n) => n,
                None => low,
            };
            parts.push(Partition {
                topic: topic.clone(),
                id: p.id(),
                key,
                next,
                end: high,
            });
        }
    }
    let mut out = ReadOutcome {
        positions: positions.clone(),
        sources: parts.len() as u64,
        events: 0,
    };
    for p in &parts {
        out.positions.insert(p.key.clone(), p.next);
    }
    let mut tpl = TopicPartitionList::new();
    for p in parts.iter().filter(|p| p.next < p.end) {
        tpl.add_partition_offset(&p.topic, p.id, Offset::Offset(p.next))
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
    }
    if tpl.count() == 0 {
        return Ok(out);
    }
    c.assign(&tpl)
        .map_err(|e| EngineError::Kafka(format!("assign partitions: {e}")))?;
    let mut index: HashMap<(String, i32), usize> = HashMap::new();
    for (i, p) in parts.iter().enumerate() {
        index.insert((p.topic.clone(), p.id), i);
    }
    let mut open = parts.iter().filter(|p| p.next < p.end).count();
    let mut last_progress = Instant::now();
    while open > 0 && out.events < cdc.max_events {
        let Some(msg) = c.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > IDLE_TIMEOUT {
                return Err(EngineError::Kafka(format!(
                    "no message from {brokers} for {}s while {open} partition(s) still had events to read",
                    IDLE_TIMEOUT.as_secs()
                )));
            }
            continue;
        };
        let msg = msg.map_err(|e| EngineError::Kafka(format!("consume: {e}")))?;
        last_progress = Instant::now();
        let Some(&i) = index.get(&(msg.topic().to_string(), msg.partition())) else {
            continue;
        };
        let p = &mut parts[i];
        // Past the end seen at the start (left to the next run), or before the position
        // (cannot happen with an explicit assignment, checked anyway).
        if msg.offset() >= p.end || msg.offset() < p.next {
            continue;
        }
        out.events += 1;
        each(
            Origin {
                source: &p.key,
                at: msg.offset(),
                unit: "offset",
            },
            msg.payload().unwrap_or_default(),
        )?;
        p.next = msg.offset() + 1;
        out.positions.insert(p.key.clone(), p.next);
        if p.next >= p.end {
            open -= 1;
        }
    }
    Ok(out)
}

/// Commits the positions of a committed run to the consumer group, for lag monitoring by
/// Kafka tools. Advisory: tidemark never reads them back; failures are logged, not raised.
pub fn commit_advisory(cdc: &CdcSpec, positions: &BTreeMap<String, i64>) {
    let Some(group) = &cdc.group_id else {
        return;
    };
    let result = (|| -> Result<()> {
        let c = consumer(cdc)?;
        let mut tpl = TopicPartitionList::new();
        for (key, &next) in positions {
            if let Some((topic, part)) = key.rsplit_once('/')
                && let Ok(part) = part.parse::<i32>()
                && cdc.topics.iter().any(|t| t == topic)
            {
                tpl.add_partition_offset(topic, part, Offset::Offset(next))
                    .map_err(|e| EngineError::Kafka(e.to_string()))?;
            }
        }
        if tpl.count() > 0 {
            c.commit(&tpl, CommitMode::Sync)
                .map_err(|e| EngineError::Kafka(e.to_string()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(group = %group, error = %e, "advisory offset commit to Kafka failed (the watermark holds the offsets)");
    }
}
