//! The `kafka-debezium` source over TLS and SASL against real brokers (tansu behind the
//! testkit's TLS terminator, which every connection a client makes goes through; the SASL
//! broker on SQLite storage, where tansu keeps SCRAM users): a verified broker, a wrong CA,
//! a host name the certificate does not list, plain text to the TLS port, mutual TLS; then
//! SCRAM-SHA-512 and SCRAM-SHA-256 over TLS, a wrong password that fails the run and leaves
//! the target and the watermark as they were, and the password searched for in the workflow
//! history, the worker and CLI logs at debug level, `status --json` and the ledger.

use crate::cdc::{CdcPipe, drain};
use crate::harness::{CrashingWorkers, history_text, queue, server_address, tidemark_cli};
use tidemark::cdc::sim::{SimTable, random_stream};
use tidemark::error::EngineError;
use tidemark_testkit::kafkaserver::{self, EventProducer, ScramUser, TlsBroker};
use tidemark_testkit::pki;

/// A CA, a second CA that signed nothing of ours, a broker certificate valid for `localhost`
/// only, and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
    server: pki::CertFiles,
    client: pki::CertFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new(dir.path(), "ca").unwrap();
    let other = pki::Ca::new(dir.path(), "other-ca").unwrap();
    let server = ca
        .server("broker", "localhost", &["DNS:localhost"])
        .unwrap();
    let client = ca.client("consumer", "tidemark").unwrap();
    Pki {
        ca: ca.files.cert.clone(),
        other_ca: other.files.cert,
        server,
        client,
        dir,
    }
}

/// librdkafka settings of the tests' producer for `broker`.
fn producer_settings(ca: &std::path::Path, sasl: Option<&ScramUser>) -> Vec<(String, String)> {
    let mut s = vec![
        ("ssl.ca.location".to_string(), ca.display().to_string()),
        ("security.protocol".to_string(), "ssl".to_string()),
    ];
    if let Some(u) = sasl {
        s[1].1 = "sasl_ssl".into();
        s.push(("sasl.mechanism".into(), u.mechanism.into()));
        s.push(("sasl.username".into(), u.name.clone()));
        s.push(("sasl.password".into(), u.password.clone()));
    }
    s
}

/// `settings` as the testkit's producer and admin take them.
fn pairs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Creates `topic` on `broker` and produces a random change stream to it; returns the table
/// the stream describes.
async fn stream_to(
    broker: &TlsBroker,
    settings: &[(String, String)],
    topic: &str,
    events: usize,
) -> SimTable {
    let settings = pairs(settings);
    kafkaserver::create_topic_with(&broker.address, &settings, topic, 1)
        .await
        .expect("create the topic over TLS");
    let p = EventProducer::with(&broker.address, &settings).unwrap();
    let mut sim = SimTable::new(false, false);
    let mut last_key = "0".to_string();
    for line in random_stream(&mut sim, 7, events, 20) {
        let key = if line == "null" {
            last_key.clone()
        } else {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let p = v.get("payload").unwrap_or(&v);
            let row = p.get("after").filter(|a| !a.is_null()).or(p.get("before"));
            row.and_then(|r| r.get("order_id")).unwrap().to_string()
        };
        last_key = key.clone();
        p.send(topic, 0, &key, (line != "null").then_some(line.as_str()))
            .unwrap();
    }
    p.flush().unwrap();
    sim
}

fn source(broker: &str, topic: &str, extra: &str) -> String {
    format!("kind = \"kafka-debezium\"\nbrokers = \"{broker}\"\ntopic = \"{topic}\"\n{extra}")
}

/// The error of one `process` step of a pipeline reading `source`.
async fn process_error(name: &str, source: &str) -> EngineError {
    let p = CdcPipe::with_source(name, "delta", source, "");
    match tidemark::run_steps::process(p.spec.clone()).await {
        Ok(_) => panic!("{name}: connected, but should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_verifies_the_broker_and_refuses_a_wrong_ca_a_wrong_name_and_plain_text() {
    let k = pki();
    let broker = kafkaserver::start_tls(k.dir.path(), &k.server, None, &[]).unwrap();
    let topic = format!("tls.public.orders.{}", std::process::id());
    let sim = stream_to(&broker, &producer_settings(&k.ca, None), &topic, 120).await;
    let ssl = |ca: &std::path::Path| {
        format!(
            "security_protocol = \"ssl\"\nssl_ca_location = \"{}\"",
            ca.display()
        )
    };

    // The right CA and a name the certificate lists: the stream arrives whole.
    let p = CdcPipe::with_source(
        "kafka-tls",
        "delta",
        &source(&broker.address, &topic, &ssl(&k.ca)),
        "",
    );
    drain(&p.spec).await;
    assert_eq!(p.table().await, sim.rows, "target = the captured table");
    let (ok, _) = broker.proxy.handshakes();
    assert!(ok > 0, "the consumer went through TLS");

    // A CA that did not sign the broker's certificate: refused at once, not retried.
    let started = std::time::Instant::now();
    let e = process_error(
        "kafka-tls-wrong-ca",
        &source(&broker.address, &topic, &ssl(&k.other_ca)),
    )
    .await;
    assert!(
        matches!(e, EngineError::Tls(_))
            && !e.is_retryable()
            && e.to_string().contains("certificate verify failed"),
        "{e}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "a certificate failure is reported without waiting for the request timeout ({:?})",
        started.elapsed()
    );

    // The right CA, but an address the certificate does not name.
    let by_ip = broker.address.replace("localhost", "127.0.0.1");
    let e = process_error("kafka-tls-wrong-name", &source(&by_ip, &topic, &ssl(&k.ca))).await;
    assert!(matches!(e, EngineError::Tls(_)) && !e.is_retryable(), "{e}");

    // Plain text to the TLS port: the error says what is likely wrong.
    let e = process_error("kafka-tls-plain", &source(&broker.address, &topic, "")).await;
    assert!(
        e.to_string().contains("`security_protocol`") && e.is_retryable(),
        "{e}"
    );

    // Mutual TLS: a broker that requires a client certificate refuses a consumer without
    // one and accepts ours.
    let mtls = kafkaserver::start_tls(k.dir.path(), &k.server, Some(&k.ca), &[]).unwrap();
    let mut settings = producer_settings(&k.ca, None);
    settings.push((
        "ssl.certificate.location".into(),
        k.client.cert.display().to_string(),
    ));
    settings.push((
        "ssl.key.location".into(),
        k.client.key.display().to_string(),
    ));
    let sim = stream_to(&mtls, &settings, &topic, 60).await;
    let e = process_error(
        "kafka-mtls-no-cert",
        &source(&mtls.address, &topic, &ssl(&k.ca)),
    )
    .await;
    assert!(matches!(e, EngineError::Tls(_)) && !e.is_retryable(), "{e}");
    let p = CdcPipe::with_source(
        "kafka-mtls",
        "delta",
        &source(
            &mtls.address,
            &topic,
            &format!(
                "{}\nssl_certificate_location = \"{}\"\nssl_key_location = \"{}\"",
                ssl(&k.ca),
                k.client.cert.display(),
                k.client.key.display()
            ),
        ),
        "",
    );
    drain(&p.spec).await;
    assert_eq!(p.table().await, sim.rows, "mutual TLS: the stream arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_over_tls_authenticates_and_a_wrong_password_changes_nothing_and_leaks_nowhere()
{
    let k = pki();
    let password = format!("kafka-pw-{}-Zq8", std::process::id());
    let users = [
        ScramUser {
            name: "cdc".into(),
            password: password.clone(),
            mechanism: "SCRAM-SHA-512",
        },
        ScramUser {
            name: "cdc256".into(),
            password: format!("{password}-256"),
            mechanism: "SCRAM-SHA-256",
        },
    ];
    let broker = kafkaserver::start_tls(&k.dir.path().join("sasl"), &k.server, None, &users)
        .expect("a SASL broker behind TLS");
    let topic = format!("sasl.public.orders.{}", std::process::id());
    let sim = stream_to(
        &broker,
        &producer_settings(&k.ca, Some(&users[0])),
        &topic,
        150,
    )
    .await;
    let sasl = |mechanism: &str, user: &str, password_key: &str| {
        format!(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"{mechanism}\"\nsasl_username = \"{user}\"\n{password_key}\nssl_ca_location = \"{}\"\nmax_events = 60",
            k.ca.display()
        )
    };

    // SCRAM-SHA-256 with the password from a file.
    let pw_file = k.dir.path().join("kafka-password");
    std::fs::write(&pw_file, format!("{}\n", users[1].password)).unwrap();
    let p256 = CdcPipe::with_source(
        "kafka-scram256",
        "delta",
        &source(
            &broker.address,
            &topic,
            &sasl(
                "SCRAM-SHA-256",
                "cdc256",
                &format!("sasl_password_file = \"{}\"", pw_file.display()),
            ),
        ),
        "",
    );
    drain(&p256.spec).await;
    assert_eq!(p256.table().await, sim.rows, "SCRAM-SHA-256");

    // SCRAM-SHA-512 through Temporal and the CLI, the password only in the worker's
    // environment; everything logged at debug level.
    let p = CdcPipe::with_source(
        "kafka-scram512",
        "delta",
        &source(
            &broker.address,
            &topic,
            &sasl(
                "SCRAM-SHA-512",
                "cdc",
                "sasl_password_env = \"TIDEMARK_IT_KAFKA_PASSWORD\"",
            ),
        ),
        "",
    );
    let q = queue("kafka-sasl");
    let workers = CrashingWorkers::start(
        &q,
        "",
        &[
            ("TIDEMARK_IT_KAFKA_PASSWORD", password.clone()),
            ("TIDEMARK_LOG", "debug".into()),
        ],
    );
    let address = server_address();
    let cli = |args: &[&str]| {
        let mut argv = args.to_vec();
        argv.extend(["--address", &address, &p.spec.spec_path]);
        tidemark_cli(&argv, &[], &["TIDEMARK_IT_KAFKA_PASSWORD"])
    };
    let mut cli_text = String::new();
    for _ in 0..3 {
        let out = cli(&["run", "--json", "--task-queue", &q]);
        cli_text.push_str(&out.text());
        assert!(out.success, "the SASL run succeeds: {cli_text}");
    }
    assert_eq!(p.table().await, sim.rows, "SCRAM-SHA-512 over TLS");
    let watermark = tidemark::state::open(&p.spec)
        .unwrap()
        .read_watermark()
        .unwrap()
        .expect("a watermark");

    // A new event, but a spec whose password variable holds the wrong password: the run
    // fails, non-retryably, naming authentication; the table and the watermark stay.
    let prod = EventProducer::with(
        &broker.address,
        &pairs(&producer_settings(&k.ca, Some(&users[0]))),
    )
    .unwrap();
    let event = SimTable::new(false, false).upsert(999, "new", 9);
    prod.send(&topic, 0, "999", Some(&event)).unwrap();
    prod.flush().unwrap();
    let wrong = CdcPipe::with_source(
        "kafka-scram512",
        "delta",
        &source(
            &broker.address,
            &topic,
            &sasl("SCRAM-SHA-512", "cdc", "sasl_password_env = \"HOME\""),
        ),
        "",
    );
    let mut wrong_spec = wrong.spec.clone();
    wrong_spec.state_dir = p.spec.state_dir.clone();
    wrong_spec.target = p.spec.target.clone();
    let e = tidemark::run_steps::process(wrong_spec).await.unwrap_err();
    assert!(
        matches!(e, EngineError::Auth(_)) && !e.is_retryable(),
        "a wrong password is an authentication failure: {e}"
    );
    assert!(!e.to_string().contains(&password), "{e}");
    assert_eq!(p.table().await, sim.rows, "the table is unchanged");
    let after = tidemark::state::open(&p.spec)
        .unwrap()
        .read_watermark()
        .unwrap()
        .expect("the watermark is still there");
    assert_eq!(
        after.positions, watermark.positions,
        "the watermark is unchanged"
    );

    // The password is nowhere: history, worker and CLI logs, status --json, the ledger.
    let history = history_text(&p.spec.name).await;
    assert!(
        history.contains("TIDEMARK_IT_KAFKA_PASSWORD"),
        "the history holds the run's input (the variable's name)"
    );
    assert!(
        !history.contains(&password),
        "the password leaked into the history"
    );
    let log = workers.log();
    assert!(
        log.to_lowercase().contains("debug"),
        "the worker logged at debug level"
    );
    assert!(
        !log.contains(&password),
        "the password leaked into the worker log"
    );
    assert!(
        !cli_text.contains(&password),
        "the password leaked into the CLI output"
    );
    let validate = tidemark_cli(&["validate", &p.spec.spec_path], &[], &[]);
    assert!(
        validate.success
            && validate.stdout.contains(
                "sasl_ssl, SCRAM-SHA-512 as cdc (password from $TIDEMARK_IT_KAFKA_PASSWORD on the worker)"
            ),
        "validate says how the source connects: {}",
        validate.text()
    );
    let status_text = cli(&["status", "--json"]).text();
    assert!(status_text.contains("kafka-scram512"), "{status_text}");
    assert!(
        !status_text.contains(&password),
        "the password leaked into status"
    );
    let ledger = serde_json::to_string(
        &tidemark::state::open(&p.spec)
            .unwrap()
            .read_ledger()
            .unwrap(),
    )
    .unwrap();
    assert!(ledger.contains("\"events\""), "the ledger has the runs");
    assert!(
        !ledger.contains(&password),
        "the password leaked into the ledger"
    );
    workers.stop();
}
