//! A local Kafka-protocol broker for tests, the chaos harness and benchmarks: `tansu`
//! (Apache-2.0, Kafka API compatible) with in-memory storage, on a free port, tied to the
//! thread that starts it; a broker behind a TLS terminator, optionally requiring SASL/SCRAM
//! ([`start_tls`]). Also the small producer and admin helpers those callers share.

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

/// The `tansu` binary: `TIDEMARK_TANSU_BIN`, else on PATH, else `~/.cargo/bin/tansu`, else
/// the one scripts/test.sh installs ([`find_tansu_sqlite`]).
pub fn find_tansu() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let cargo_bin = home.as_ref().map(|h| h.join(".cargo/bin"));
    let ours = home.map(|h| h.join(".cache/tidemark/tansu-sqlite/bin"));
    std::env::split_paths(&path)
        .chain(cargo_bin)
        .chain(ours)
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "the `tansu` Kafka broker is not installed; scripts/test.sh installs it (`cargo install --locked tansu --version 0.6.0 --features dynostore,libsql --root ~/.cache/tidemark/tansu-sqlite`), or set TIDEMARK_TANSU_BIN"
            )
        })
}

/// Starts a broker with in-memory storage and waits until it answers metadata requests.
pub fn start() -> anyhow::Result<Broker> {
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    launch(&find_tansu()?, port, &url, "memory://tansu/", false, None)
}

/// Starts `bin` listening on `127.0.0.1:port`, advertising `advertised`, on `storage`;
/// with `authentication`, clients must authenticate with SASL; in `cwd` when given (where
/// tansu resolves a `sqlite://` file).
fn launch(
    bin: &std::path::Path,
    port: u16,
    advertised: &str,
    storage: &str,
    authentication: bool,
    cwd: Option<&std::path::Path>,
) -> anyhow::Result<Broker> {
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args([
        "broker",
        "--listener-url",
        &listener,
        "--advertised-listener-url",
        advertised,
    ])
    .args(["--storage-engine", storage])
    .env("RUST_LOG", "error")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if authentication {
        cmd.arg("--authentication");
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
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

/// The `tansu` binary built with SQLite storage (feature `libsql`), the only storage of
/// tansu 0.6 that keeps SCRAM credentials: `TIDEMARK_TANSU_SQLITE_BIN`, else
/// `~/.cache/tidemark/tansu-sqlite/bin/tansu`, where scripts/test.sh installs it.
pub fn find_tansu_sqlite() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("TIDEMARK_TANSU_SQLITE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/tidemark/tansu-sqlite/bin/tansu"),
    };
    if !path.is_file() {
        bail!(
            "{} is missing: the SASL tests need tansu with SQLite storage; install it with `cargo install --locked tansu --version 0.6.0 --features dynostore,libsql --root ~/.cache/tidemark/tansu-sqlite` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// A SCRAM user of a [`TlsBroker`].
#[derive(Debug, Clone)]
pub struct ScramUser {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: &'static str,
}

/// A broker reached through a TLS terminator: tansu listens in plain text on a loopback
/// port and advertises the terminator's port under the name `localhost`, so every
/// connection a client makes (bootstrap and partition leaders) goes through TLS.
pub struct TlsBroker {
    /// `localhost:PORT` of the terminator (the `brokers` of a client).
    pub address: String,
    /// The terminator, for its handshake counts.
    pub proxy: crate::tlsproxy::TlsProxy,
    _broker: Broker,
}

/// Starts a broker behind a TLS terminator presenting `server` (with `client_ca`, clients
/// must present a certificate it signed). With `users`, the broker requires SASL (SCRAM)
/// authentication from those users: it runs on SQLite storage ([`find_tansu_sqlite`]) in
/// `dir`, where the users are created first by a broker without authentication.
pub fn start_tls(
    dir: &std::path::Path,
    server: &crate::pki::CertFiles,
    client_ca: Option<&std::path::Path>,
    users: &[ScramUser],
) -> anyhow::Result<TlsBroker> {
    let port = free_port()?;
    let proxy = crate::tlsproxy::start_tcp(&format!("127.0.0.1:{port}"), server, client_ca)?;
    let tls_port = proxy
        .address
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("0");
    let advertised = format!("tcp://localhost:{tls_port}");
    let broker = if users.is_empty() {
        launch(
            &find_tansu()?,
            port,
            &advertised,
            "memory://tansu/",
            false,
            None,
        )?
    } else {
        let bin = find_tansu_sqlite()?;
        std::fs::create_dir_all(dir)?;
        // tansu puts a `sqlite://` file under its working directory.
        let storage = "sqlite://tansu.db";
        let plain = format!("tcp://127.0.0.1:{port}");
        let setup = launch(&bin, port, &plain, storage, false, Some(dir))?;
        for u in users {
            let mechanism = match u.mechanism {
                "SCRAM-SHA-256" => "scram256",
                "SCRAM-SHA-512" => "scram512",
                other => bail!("tansu keeps SCRAM users only, not {other}"),
            };
            let out = Command::new(&bin)
                .args([
                    "user",
                    "create",
                    "--broker",
                    &plain,
                    "--mechanism",
                    mechanism,
                ])
                .args([&u.name, &u.password])
                .env("RUST_LOG", "error")
                .output()
                .context("tansu user create")?;
            if !out.status.success() {
                bail!(
                    "tansu user create {}: {}",
                    u.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        drop(setup);
        launch(&bin, port, &advertised, storage, true, Some(dir))?
    };
    Ok(TlsBroker {
        address: format!("localhost:{tls_port}"),
        proxy,
        _broker: broker,
    })
}

/// Creates `topic` with `partitions` partitions (an existing topic is fine).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(brokers, &[], topic, partitions).await
}

/// As [`create_topic`], with extra librdkafka settings (TLS, SASL).
pub async fn create_topic_with(
    brokers: &str,
    settings: &[(&str, &str)],
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config(brokers, settings).create().context("admin client")?;
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

fn config(brokers: &str, settings: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c
}

/// A synchronous producer of Debezium-shaped events (the tests' and the harness's upstream).
pub struct EventProducer {
    producer: BaseProducer,
}

impl EventProducer {
    /// Connects to `brokers`.
    pub fn new(brokers: &str) -> anyhow::Result<Self> {
        Self::with(brokers, &[])
    }

    /// Connects to `brokers` with extra librdkafka settings (TLS, SASL).
    pub fn with(brokers: &str, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let producer = config(brokers, settings)
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
