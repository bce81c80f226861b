//! The `kafka-debezium` source against a real Kafka-protocol broker (`tansu`, started once per
//! test binary): oracle tests for streams spread over partitions, the offsets committed with
//! the target, a crash between the target commit and the advisory Kafka commit, bad events,
//! and an unreachable broker.

use crate::cdc::{CdcPipe, drain, promote_only, run_steps_once};
use crate::harness::{queue, run, with_worker};
use tidemark::cdc::sim::{SimTable, random_stream};
use tidemark_testkit::kafkaserver::{self, EventProducer};

/// The shared broker's address, started on first use (tidemark-testkit).
fn brokers() -> String {
    tidemark_testkit::broker_address()
}

fn topic(name: &str) -> String {
    format!("shop.public.{name}.{}", std::process::id())
}

/// The event's key, read back from the line (tombstones name the previous line's key).
fn key_of(line: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let p = v.get("payload").unwrap_or(&v);
    let row = p
        .get("after")
        .filter(|a| !a.is_null())
        .or(p.get("before"))?;
    row.get("order_id")?.as_i64()
}

/// Produces `lines` to `topic`, each key to partition `key % partitions`; tombstones follow
/// their delete. Partition 1's events are all sent before partition 0's: arrival order across
/// partitions differs from the source order.
fn produce(topic: &str, partitions: i32, lines: &[String]) {
    let p = EventProducer::new(&brokers()).unwrap();
    let mut by_part: Vec<Vec<(i64, Option<&str>)>> = vec![Vec::new(); partitions as usize];
    let mut last_key = 0;
    for l in lines {
        let (k, v) = if l == "null" {
            (last_key, None)
        } else {
            (key_of(l).expect("a key"), Some(l.as_str()))
        };
        last_key = k;
        by_part[(k % partitions as i64) as usize].push((k, v));
    }
    for (part, events) in by_part.iter().enumerate().rev() {
        for (k, v) in events {
            p.send(topic, part as i32, &k.to_string(), *v).unwrap();
        }
    }
    p.flush().unwrap();
}

fn kafka_source(topic: &str, extra: &str) -> String {
    format!(
        "kind = \"kafka-debezium\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"tidemark-{topic}\"\n{extra}",
        brokers()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_stream_over_partitions_equals_the_captured_table_through_temporal() {
    let t = topic("orders");
    kafkaserver::create_topic(&brokers(), &t, 2).await.unwrap();
    let p = CdcPipe::with_source(
        "kafka-delta",
        "delta",
        &kafka_source(&t, "max_events = 80"),
        "",
    );
    let mut sim = SimTable::new(true, true);
    let snap: Vec<String> = (0..30)
        .map(|i| sim.snapshot_read(i, "new", 1_767_225_600_000_000 + i, 1000))
        .collect();
    produce(&t, 2, &snap);
    let lines = random_stream(&mut sim, 3, 200, 50);
    produce(&t, 2, &lines);
    let q = queue("kafka-delta");
    let batches = with_worker(&q, async {
        let (mut runs, mut batches) = (0, 0);
        loop {
            let s = run(&p.spec, &q).await.expect("run succeeds");
            if s.progress.rows_extracted == 0 {
                break batches;
            }
            runs += 1;
            batches += s.progress.batches.len().max(1);
            assert!(runs < 20);
        }
    })
    .await;
    assert!(
        batches >= 3,
        "max_events bounds each batch, and a run goes on batch after batch ({batches} batches)"
    );
    assert_eq!(p.table().await, sim.rows, "target = the captured table");
    // Offsets live in the watermark that the Delta commit embeds.
    let wm = tidemark::state::open(&p.spec)
        .unwrap()
        .read_watermark()
        .unwrap()
        .unwrap();
    let produced = (snap.len() + lines.len()) as i64;
    let consumed: i64 = wm.positions.values().sum();
    assert_eq!(
        consumed, produced,
        "next offsets = every message: {:?}",
        wm.positions
    );
    let committed = tidemark::target::committed_run(&p.spec)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        committed.watermark.unwrap().positions,
        wm.positions,
        "the last commit carries the offsets"
    );
    // The consumer group sees them too (advisory, for Kafka's lag tools).
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("tidemark-{t}"))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&t, 0);
    tpl.add_partition(&t, 1);
    let got = c
        .committed_offsets(tpl, std::time::Duration::from_secs(10))
        .unwrap();
    for e in got.elements() {
        assert_eq!(
            e.offset(),
            rdkafka::Offset::Offset(wm.positions[&format!("{t}/{}", e.partition())]),
            "group offset of partition {}",
            e.partition()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_commit_before_the_kafka_commit_replays_nothing_twice() {
    for target in ["delta", "postgres"] {
        let t = topic(&format!("crash_{target}"));
        kafkaserver::create_topic(&brokers(), &t, 3).await.unwrap();
        let p = CdcPipe::with_source(
            &format!("kafka-crash-{target}"),
            target,
            &kafka_source(&t, "max_events = 40"),
            "",
        );
        let mut sim = SimTable::new(false, false);
        let lines = random_stream(&mut sim, 5, 90, 25);
        produce(&t, 3, &lines);
        // Run 1 commits to the target, then dies: no watermark file, no Kafka commit.
        let (_, promoted) = promote_only(&p.spec).await;
        assert!(promoted.is_some());
        std::fs::remove_dir_all(
            tidemark::state::LocalStore::at(&p.spec.state_dir, &p.spec.name)
                .root()
                .join("runs"),
        )
        .unwrap();
        // The next runs recover the offsets from the target commit and go on from there.
        let (m, _) = run_steps_once(&p.spec).await;
        assert_eq!(m.run_seq, 2, "{target}");
        drain(&p.spec).await;
        assert_eq!(p.table().await, sim.rows, "{target}");
        let entries = tidemark::state::open(&p.spec)
            .unwrap()
            .read_ledger()
            .unwrap();
        let events: u64 = entries
            .iter()
            .filter_map(|e| e.cdc.as_ref())
            .map(|c| c.events)
            .sum();
        // Run 1 died before its ledger line: it is `reconciled` from the target, and its 40
        // messages (max_events) are not read again.
        assert!(entries.iter().any(|e| e.status == "reconciled"), "{target}");
        assert_eq!(
            events + 40,
            lines.len() as u64,
            "{target}: every message read exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_kafka_event_names_its_partition_and_offset_and_an_unreachable_broker_is_retried() {
    let t = topic("bad");
    kafkaserver::create_topic(&brokers(), &t, 1).await.unwrap();
    let p = CdcPipe::with_source("kafka-bad", "delta", &kafka_source(&t, ""), "");
    let mut sim = SimTable::new(true, false);
    let good = sim.upsert(1, "new", 1);
    let prod = EventProducer::new(&brokers()).unwrap();
    prod.send(&t, 0, "1", Some(&good)).unwrap();
    prod.send(
        &t,
        0,
        "2",
        Some(r#"{"op":"c","after":{"status":"no key"}}"#),
    )
    .unwrap();
    prod.flush().unwrap();
    let err = tidemark::run_steps::process(p.spec.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("{t}/0 offset 1")) && !err.is_retryable(),
        "{err}"
    );
    assert!(p.table().await.is_empty());

    let mut spec = p.spec.clone();
    spec.name = "kafka-down".into();
    spec.source.cdc.as_mut().unwrap().brokers = Some(format!(
        "127.0.0.1:{}",
        tidemark_testkit::free_port().unwrap()
    ));
    let err = tidemark::run_steps::process(spec).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot reach brokers") && err.is_retryable(),
        "{err}"
    );
}
