//! The `kafka-debezium` reader: Debezium envelopes from Kafka topics, read with librdkafka.
//!
//! Offsets are the watermark: the run assigns each partition at the next offset its committed
//! watermark stores (the partition's earliest offset the first time), reads until every
//! partition reports its end (librdkafka's partition EOF; the brokers' high watermarks are not
//! trusted as the end — some Kafka-compatible brokers report a batch's base offset) or until
//! `max_events`, and records the next offset of each partition in the watermark document that
//! the target commit embeds. Nothing is committed to
//! Kafka before that; the consumer group's offsets are written afterwards for monitoring only
//! ([`commit_advisory`]) and never read back. How the consumer connects (TLS, SASL,
//! secrets) is `kafka_conn`'s.

use super::kafka_conn::{self, consumer};
use super::{Limits, Origin, ReadOutcome};
use crate::error::{EngineError, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tidemark_workflows::spec::CdcSpec;

/// Silence after which the partitions not yet at their end count as drained (a broker that
/// sends no partition-EOF condition, or reports wrong high watermarks).
const IDLE_END: Duration = Duration::from_millis(1500);
/// Silence before the first message or end of partition, after which the run reads nothing.
const FIRST_FETCH: Duration = Duration::from_secs(15);
/// Time limit of metadata and offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The position key of a partition.
pub fn position_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

struct Partition {
    topic: String,
    id: i32,
    key: String,
    next: i64,
    at_end: bool,
}

/// Reads the events past `positions` (see the module doc), calling `each` in arrival order.
pub fn read(
    cdc: &CdcSpec,
    positions: &BTreeMap<String, i64>,
    limits: Limits,
    each: &mut dyn FnMut(Origin<'_>, &[u8]) -> Result<()>,
) -> Result<ReadOutcome> {
    let brokers = cdc.brokers.as_deref().unwrap_or_default();
    let c = consumer(cdc)?;
    let mut parts: Vec<Partition> = Vec::new();
    for topic in &cdc.topics {
        let md = kafka_conn::metadata(&c, brokers, topic, REQUEST_TIMEOUT)?;
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
            let (low, _high) = c
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
                at_end: false,
            });
        }
    }
    let mut out = ReadOutcome {
        positions: positions.clone(),
        sources: parts.len() as u64,
        events: 0,
        limited: false,
    };
    let mut bytes = 0u64;
    for p in &parts {
        out.positions.insert(p.key.clone(), p.next);
    }
    if parts.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(&p.topic, p.id, Offset::Offset(p.next))
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
    }
    c.assign(&tpl)
        .map_err(|e| EngineError::Kafka(format!("assign partitions: {e}")))?;
    let mut index: HashMap<(String, i32), usize> = HashMap::new();
    for (i, p) in parts.iter().enumerate() {
        index.insert((p.topic.clone(), p.id), i);
    }
    let mut open = parts.len();
    let mut last_progress = Instant::now();
    let mut heard = false;
    while open > 0 {
        if limits.reached(out.events, bytes) {
            out.limited = true;
            break;
        }
        let Some(msg) = c.poll(Duration::from_millis(100)) else {
            let limit = if heard { IDLE_END } else { FIRST_FETCH };
            if last_progress.elapsed() > limit {
                tracing::debug!(
                    open,
                    heard,
                    "no more messages: the partitions count as drained"
                );
                break;
            }
            continue;
        };
        last_progress = Instant::now();
        heard = true;
        let msg = match msg {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(id)) => {
                // The event names the partition only; with several topics, the first of them
                // not yet at its end.
                if let Some(p) = parts.iter_mut().find(|p| p.id == id && !p.at_end) {
                    p.at_end = true;
                    open -= 1;
                }
                continue;
            }
            Err(e) => return Err(kafka_conn::consume_error(&c, e)),
        };
        let Some(&i) = index.get(&(msg.topic().to_string(), msg.partition())) else {
            continue;
        };
        let p = &mut parts[i];
        if msg.offset() < p.next {
            continue; // cannot happen with an explicit assignment; checked anyway
        }
        out.events += 1;
        bytes += msg.payload().map_or(0, |b| b.len() as u64);
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
