//! PostgreSQL over TLS against a real server started by the test setup (`ssl = on`, a test
//! CA, a server certificate valid for `localhost` only, TCP only over TLS: user `certuser`
//! by client certificate, `scramuser` by password): every `sslmode`, a wrong CA, a host name
//! the certificate does not list, client-certificate and SCRAM authentication (with channel
//! binding), `require` against a server without TLS; then a pipeline writing over
//! `verify-full` with the password only in the worker's environment, a run with the wrong
//! CA that changes nothing, and the password searched for in the history and the logs.

use crate::harness::{
    CrashingWorkers, history_text, pg_url, queue, run, server_address, tidemark_cli,
};
use tidemark::error::EngineError;
use tidemark::workflows::spec::ConnSpec;
use tidemark_testkit::pg_tls;

async fn connect(url: &str) -> Result<tokio_postgres::Client, EngineError> {
    tidemark::pg::connect(&ConnSpec::Url(url.to_string())).await
}

/// (TLS in use, current user) of a connection.
async fn session(c: &tokio_postgres::Client) -> (bool, String) {
    let row = c
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), current_user::text",
            &[],
        )
        .await
        .expect("query the session");
    (row.get(0), row.get(1))
}

fn verify(mode: &str, ca: &std::path::Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", ca.display())
}

fn refused(r: Result<tokio_postgres::Client, EngineError>, what: &str) -> EngineError {
    match r {
        Ok(_) => panic!("{what}: connected, but should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_follow_libpq_sslmode_against_a_real_tls_server() {
    let t = pg_tls();

    // verify-full with the right CA and a name the certificate lists.
    let c = connect(&t.url("postgres", "localhost", &verify("verify-full", &t.ca)))
        .await
        .expect("verify-full with the right CA connects");
    assert_eq!(session(&c).await, (true, "postgres".into()));

    // verify-full by an address the certificate does not list: refused, naming the host.
    let e = refused(
        connect(&t.url("postgres", "127.0.0.1", &verify("verify-full", &t.ca))).await,
        "verify-full by IP",
    );
    let msg = e.to_string();
    assert!(
        msg.contains("not valid for host \"127.0.0.1\"") && msg.contains("verify-ca"),
        "{msg}"
    );
    assert!(
        !e.is_retryable(),
        "a certificate problem is not retried: {msg}"
    );
    // verify-ca checks the chain only: the same address connects.
    let c = connect(&t.url("postgres", "127.0.0.1", &verify("verify-ca", &t.ca)))
        .await
        .expect("verify-ca ignores the host name");
    assert!(session(&c).await.0);

    // A CA that did not sign the server's certificate.
    let e = refused(
        connect(&t.url("postgres", "localhost", &verify("verify-ca", &t.other_ca))).await,
        "the wrong CA",
    );
    let msg = e.to_string();
    assert!(
        msg.contains("not signed by") && msg.contains(&t.other_ca.display().to_string()),
        "{msg}"
    );
    assert!(!e.is_retryable(), "{msg}");

    // require without a root certificate: TLS, no check; prefer (the default) uses TLS.
    for query in ["sslmode=require", ""] {
        let c = connect(&t.url("postgres", "127.0.0.1", query))
            .await
            .unwrap_or_else(|e| panic!("{query:?}: {e}"));
        assert!(session(&c).await.0, "{query:?} used TLS");
    }
    // disable: the server's hostnossl rule rejects plain text, and says so.
    let e = refused(
        connect(&t.url("postgres", "127.0.0.1", "sslmode=disable")).await,
        "plain text to a TLS-only server",
    );
    assert!(e.to_string().contains("no encryption"), "{e}");

    // Client-certificate authentication (`cert` in pg_hba.conf: the CN is the user).
    let cert = format!(
        "{}&sslcert={}&sslkey={}",
        verify("verify-full", &t.ca),
        t.client.cert.display(),
        t.client.key.display()
    );
    let c = connect(&t.url("certuser", "localhost", &cert))
        .await
        .expect("client-certificate login");
    assert_eq!(session(&c).await, (true, "certuser".into()));
    let e = refused(
        connect(&t.url("certuser", "localhost", &verify("verify-full", &t.ca))).await,
        "certuser without a certificate",
    );
    assert!(e.to_string().contains("certificate"), "{e}");

    // SCRAM with the password in the string, channel binding required (SCRAM-SHA-256-PLUS
    // over our TLS stream); a wrong password is refused and not retried.
    let scram = format!(
        "postgres://scramuser:{}@localhost:{}/postgres?{}&channel_binding=require",
        t.scram_password,
        t.port,
        verify("verify-full", &t.ca)
    );
    let c = connect(&scram).await.expect("SCRAM with channel binding");
    assert_eq!(session(&c).await, (true, "scramuser".into()));
    let e = refused(
        connect(&scram.replace(&t.scram_password, "not-the-password")).await,
        "a wrong password",
    );
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert!(
        !e.to_string().contains("not-the-password"),
        "the password is not in the message: {e}"
    );

    // A password file (0600), read when the string has no password.
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "localhost:{}:postgres:scramuser:{}\n",
            t.port, t.scram_password
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let c = connect(&t.url(
        "scramuser",
        "localhost",
        &format!(
            "{}&passfile={}",
            verify("verify-full", &t.ca),
            passfile.display()
        ),
    ))
    .await
    .expect("the password from the password file");
    assert_eq!(session(&c).await.1, "scramuser");

    // The shared test server has TLS off: require is refused with the reason, prefer
    // falls back to plain text.
    let plain = pg_url();
    let e = refused(
        connect(&format!("{plain}?sslmode=require")).await,
        "require against a server without TLS",
    );
    assert!(
        e.to_string().contains("does not accept TLS") && !e.is_retryable(),
        "{e}"
    );
    let c = connect(&format!("{plain}?sslmode=prefer"))
        .await
        .expect("prefer falls back to plain text");
    assert!(!session(&c).await.0);
}

/// A Parquet → PostgreSQL pipeline over verify-full, the password only in the worker's
/// environment (PGPASSWORD); a second spec with the wrong CA fails clearly and leaves the
/// table and the watermark as they were; the password is in no history and no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_writes_over_verified_tls_with_the_password_from_the_worker_and_a_wrong_ca_changes_nothing()
 {
    use tidemark::demo::{BASE_US, Order, write_orders};
    let t = pg_tls();
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("tls_{}", std::process::id());
    let spec_for = |name: &str, ca: &std::path::Path| {
        let text = format!(
            "name = \"{name}\"\nstate_dir = \"state\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n\
             [target]\nkind = \"postgres\"\nurl = \"{}\"\ntable = \"{schema}.orders\"\nkey = [\"order_id\"]\n",
            t.url("scramuser", "localhost", &verify("verify-full", ca))
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        tidemark::spec::load(&path).unwrap()
    };
    let good = spec_for("pg_tls_orders", &t.ca);
    let orders: Vec<Order> = (0..20)
        .map(|i| Order {
            order_id: i,
            customer_id: i % 3,
            status: "new".into(),
            amount: i as f64,
            updated_at_us: BASE_US + i * 1_000_000,
            order_date_days: 19_000,
        })
        .collect();
    write_orders(&dir.path().join("data/part-00000.parquet"), &orders).unwrap();

    let q = queue("pg-tls");
    let workers = CrashingWorkers::start(
        &q,
        "",
        &[
            ("PGPASSWORD", t.scram_password.clone()),
            ("TIDEMARK_LOG", "debug".into()),
        ],
    );
    let summary = run(&good, &q).await.expect("the run over TLS succeeds");
    assert_eq!(summary.progress.rows_promoted, 20);
    let reader = format!(
        "postgres://scramuser:{}@localhost:{}/postgres?{}",
        t.scram_password,
        t.port,
        verify("verify-full", &t.ca)
    );
    let count_sql = format!("SELECT count(*) FROM {schema}.orders");
    let count = |reader: String| {
        let sql = count_sql.clone();
        async move {
            let c = connect(&reader).await.expect("reader connects");
            c.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0)
        }
    };
    assert_eq!(count(reader.clone()).await, 20);
    let watermark = tidemark::state::open(&good)
        .unwrap()
        .read_watermark()
        .unwrap()
        .expect("a watermark after the run");

    // New rows arrive, but the spec now names a CA that did not sign the server's
    // certificate: the run fails with the cause, nothing moves.
    let more: Vec<Order> = (20..30)
        .map(|i| Order {
            order_id: i,
            customer_id: 1,
            status: "new".into(),
            amount: 1.0,
            updated_at_us: BASE_US + 100_000_000 + i,
            order_date_days: 19_001,
        })
        .collect();
    write_orders(&dir.path().join("data/part-00001.parquet"), &more).unwrap();
    let mut bad = spec_for("pg_tls_orders", &t.other_ca);
    bad.state_dir = good.state_dir.clone();
    let e = run(&bad, &q).await.expect_err("the wrong CA fails the run");
    assert!(e.contains("not signed by"), "{e}");
    assert_eq!(count(reader.clone()).await, 20, "the table is unchanged");
    let after = tidemark::state::open(&good)
        .unwrap()
        .read_watermark()
        .unwrap()
        .expect("the watermark is still there");
    assert_eq!(after.value, watermark.value, "the watermark is unchanged");

    // The password is in no error, workflow history, worker or CLI log (at debug level),
    // `run --json` or `status --json` output, or the ledger.
    assert!(
        !e.contains(&t.scram_password),
        "the password leaked into the error"
    );
    let address = server_address();
    let cli = |args: &[&str]| {
        let mut argv = args.to_vec();
        argv.extend(["--address", &address, &good.spec_path]);
        let out = tidemark_cli(&argv, &[], &["PGPASSWORD"]);
        (out.success, out.text())
    };
    // The spec file names the wrong CA now: the CLI's run fails, then succeeds once the
    // file names the right one again.
    let (ran, failed_text) = cli(&["run", "--json", "--task-queue", &q]);
    assert!(
        !ran && failed_text.contains("not signed by"),
        "{failed_text}"
    );
    assert!(
        !failed_text.contains(&t.scram_password),
        "the password leaked into the CLI's error"
    );
    spec_for("pg_tls_orders", &t.ca);
    let (ran, run_text) = cli(&["run", "--json", "--task-queue", &q]);
    assert!(ran && run_text.contains("\"succeeded\""), "{run_text}");
    assert!(
        !run_text.contains(&t.scram_password),
        "the password leaked into the CLI's output"
    );
    let (_, status_text) = cli(&["status", "--json"]);
    assert!(status_text.contains("pg_tls_orders"), "{status_text}");
    assert!(
        !status_text.contains(&t.scram_password),
        "the password leaked into status"
    );
    let ledger =
        serde_json::to_string(&tidemark::state::open(&good).unwrap().read_ledger().unwrap())
            .unwrap();
    assert!(
        ledger.contains("\"rows_inserted\""),
        "the ledger has the runs: {ledger}"
    );
    assert!(
        !ledger.contains(&t.scram_password),
        "the password leaked into the ledger"
    );
    let history = history_text(&good.name).await;
    assert!(
        history.contains("scramuser@localhost"),
        "the history holds the run's input"
    );
    assert!(
        !history.contains(&t.scram_password),
        "the password leaked into the history"
    );
    let log = workers.log();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "the worker logged at debug level"
    );
    assert!(
        !log.contains(&t.scram_password),
        "the password leaked into the worker log"
    );
    workers.stop();
}
