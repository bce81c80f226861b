//! Temporal over TLS: the dev server behind TLS terminators started by the test setup (one
//! TLS-only, one requiring a client certificate, both offering ALPN h2 as gRPC needs), a
//! `tidemark worker` process and `tidemark run` connecting through mutual TLS with an API
//! key, `status` through the TEMPORAL_TLS_* environment; a wrong CA, a missing client
//! certificate, a wrong server name and plain text to a TLS port each refused with the
//! cause; the API key searched for in the history, the logs and every output.

use crate::harness::{history_text, queue, tidemark_cli};
use std::path::Path;
use std::process::Command;
use tidemark::demo::{BASE_US, Order, write_orders};
use tidemark_testkit::{TemporalTls, temporal_tls, tie_to_parent};

/// The API key the test gives the CLI and the worker (the dev server ignores it).
const API_KEY: &str = "tidemark-test-api-key-71c2e9";

fn mtls_flags(t: &TemporalTls) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        t.ca.display().to_string(),
        "--tls-cert".into(),
        t.client.cert.display().to_string(),
        "--tls-key".into(),
        t.client.key.display().to_string(),
    ]
}

fn spec(dir: &Path, name: &str) -> std::path::PathBuf {
    let orders: Vec<Order> = (0..5)
        .map(|i| Order {
            order_id: i,
            customer_id: 1,
            status: "new".into(),
            amount: 1.0,
            updated_at_us: BASE_US + i,
            order_date_days: 19_000,
        })
        .collect();
    write_orders(&dir.join("data/part-00000.parquet"), &orders).unwrap();
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nstate_dir = \"state\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n[target]\nkind = \"delta\"\npath = \"lake/orders\"\nkey = [\"order_id\"]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_the_cli_reach_temporal_through_mutual_tls_and_bad_tls_settings_fail_clearly()
{
    let t = temporal_tls();
    let dir = tempfile::tempdir().unwrap();
    let name = "ttls_orders";
    let spec = spec(dir.path(), name);
    let q = queue("temporal-tls");

    // A worker through mutual TLS, its API key from TEMPORAL_API_KEY.
    let log = dir.path().join("worker.log");
    let mut worker = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        cmd.args(["worker", "--address", &t.mtls_address, "--task-queue", &q])
            .args(mtls_flags(&t))
            .env("TEMPORAL_API_KEY", API_KEY)
            .env("TIDEMARK_LOG", "debug")
            .stdout(std::fs::File::create(dir.path().join("worker.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        tie_to_parent(&mut cmd).spawn().expect("start the worker")
    };

    // `tidemark run` by host name (the certificate lists localhost), the key named by
    // --api-key-env.
    let port = t.mtls_address.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}");
    let mut args: Vec<String> = ["run", "--json", "--address", &by_name, "--task-queue", &q]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(mtls_flags(&t));
    args.extend(["--api-key-env".into(), "TIDEMARK_TEST_KEY".into()]);
    args.push(spec.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tidemark_cli(&argv, &[("TIDEMARK_TEST_KEY", API_KEY)], &[]);
    assert!(out.success, "the run through mTLS: {}", out.text());
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["rows_promoted"], 5, "{summary}");
    let mut outputs = vec![out.text()];

    // `status` through the TLS-only terminator, configured by the environment alone.
    let out = tidemark_cli(
        &["status", "--json", &spec.display().to_string()],
        &[
            ("TEMPORAL_ADDRESS", &t.tls_address),
            (
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                &t.ca.display().to_string(),
            ),
            ("TEMPORAL_API_KEY", API_KEY),
        ],
        &[],
    );
    assert!(
        !out.text().contains("cannot reach Temporal"),
        "status over TLS from TEMPORAL_TLS_*: {}",
        out.text()
    );
    outputs.push(out.text());

    // Each bad setting is refused with its cause.
    let status_with = |extra: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["status", "--json"];
        a.extend_from_slice(extra);
        let s = spec.display().to_string();
        let mut a: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        a.push(s);
        let argv: Vec<&str> = a.iter().map(String::as_str).collect();
        tidemark_cli(&argv, env, &[])
    };
    let other_ca = t.other_ca.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--address", &t.tls_address, "--tls-ca", &other_ca],
            "UnknownIssuer",
        ),
        (
            vec![
                "--address",
                &t.tls_address,
                "--tls-ca",
                t.ca.to_str().unwrap(),
                "--tls-server-name",
                "wrong.example",
            ],
            "wrong.example",
        ),
        (
            vec![
                "--address",
                &t.mtls_address,
                "--tls-ca",
                t.ca.to_str().unwrap(),
            ],
            "over TLS",
        ),
        (
            vec!["--address", &t.tls_address, "--no-tls"],
            "cannot reach Temporal",
        ),
    ];
    for (extra, cause) in cases {
        let out = status_with(&extra, &[("TEMPORAL_API_KEY", API_KEY)]);
        let all = out.text();
        assert!(
            all.contains("cannot reach Temporal") && all.contains(cause),
            "{extra:?}: expected a refusal naming {cause:?}: {all}"
        );
        outputs.push(all);
    }

    // A malformed temporal.toml that holds the key: the error does not quote it.
    let toml = dir.path().join("temporal.toml");
    std::fs::write(
        &toml,
        format!(
            "[profile.default]\naddress = \"localhost:1\"\napi_key = \"{API_KEY}\"\nbroken = \n"
        ),
    )
    .unwrap();
    let out = status_with(&["--config-file", toml.to_str().unwrap()], &[]);
    assert!(
        out.text().contains("Temporal connection settings"),
        "{}",
        out.text()
    );
    outputs.push(out.text());
    // An API key in plain text to a remote host is refused before anything is sent.
    let out = status_with(
        &["--address", "temporal.example:7233", "--no-tls"],
        &[("TEMPORAL_API_KEY", API_KEY)],
    );
    assert!(out.text().contains("plain text"), "{}", out.text());
    outputs.push(out.text());

    // The key is in no history, no log and no output.
    let history = history_text(name).await;
    assert!(history.contains(name), "the history holds the run's input");
    assert!(
        !history.contains(API_KEY),
        "the API key leaked into the history"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    let worker_log = std::fs::read_to_string(&log).unwrap();
    assert!(!worker_log.is_empty(), "the worker logged at debug level");
    assert!(
        !worker_log.contains(API_KEY),
        "the API key leaked into the worker log"
    );
    for o in outputs {
        assert!(
            !o.contains(API_KEY),
            "the API key leaked into an output: {o}"
        );
    }
    let ledger = serde_json::to_string(
        &tidemark::state::open(&tidemark::spec::load(&spec).unwrap())
            .unwrap()
            .read_ledger()
            .unwrap(),
    )
    .unwrap();
    assert!(
        ledger.contains("\"rows_inserted\""),
        "the ledger has the run: {ledger}"
    );
    assert!(
        !ledger.contains(API_KEY),
        "the API key leaked into the ledger"
    );
}
