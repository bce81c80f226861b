//! A local Kafka-protocol broker for tests, the chaos harness and benchmarks: `tansu`
//! (Apache-2.0, Kafka API compatible) with in-memory storage, on a free port, tied to the
//! thread that starts it. Also the small producer and admin helpers those callers share.

use anyhow::{Context, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidemark::devserver::{free_port, tie_to_parent};

/// A running broker; killed on drop.
pub struct Broker {
    /// `127.0.0.1:PORT`.
    pub address: String,
    child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `tansu` binary: `TIDEMARK_TANSU_BIN`, else on PATH, else `~/.cargo/bin/tansu`.
pub fn find_tansu() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "the `tansu` Kafka broker is not installed; install it with `cargo install tansu --features dynostore --locked` (or set TIDEMARK_TANSU_BIN)"
            )
        })
}

/// Starts a broker with in-memory storage and waits until it answers metadata requests.
pub fn start() -> anyhow::Result<Broker> {
    let bin = find_tansu()?;
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ])
    .args(["--storage-engine", "memory://tansu/"])
    .env("RUST_LOG", "error")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = tie_to_parent(&mut cmd)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut broker = Broker {
        address: format!("127.0.0.1:{port}"),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = broker.child.try_wait()? {
            bail!("the tansu broker exited at start ({status})");
        }
        if std::net::TcpStream::connect(&broker.address).is_ok() {
            return Ok(broker);
        }
        if Instant::now() > deadline {
            bail!(
                "the tansu broker did not listen on {} within 30 s",
                broker.address
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `topic` with `partitions` partitions (an existing topic is fine).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("create topic")?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// A synchronous producer of Debezium-shaped events (the tests' and the harness's upstream).
pub struct EventProducer {
    producer: BaseProducer,
}

impl EventProducer {
    /// Connects to `brokers`.
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // One message per record batch: tansu 0.6 answers a fetch from an offset inside
            // a multi-message batch with nothing (real Kafka returns the batch), and reports
            // a batch's base offset as the high watermark.
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .create()
            .context("producer")?;
        Ok(EventProducer { producer })
    }

    /// Sends `value` (None: a tombstone) with `key` to a partition of `topic`.
    pub fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut record = BaseRecord::<str, str>::to(topic)
            .key(key)
            .partition(partition);
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    self.producer.poll(Duration::from_millis(50));
                    record = r;
                }
                Err((e, _)) => bail!("produce to {topic}/{partition}: {e}"),
            }
        }
    }

    /// Waits until every sent message is acknowledged.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .context("flush the producer")
    }
}
