//! `tidemark validate`: check a spec file without running it.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use tidemark::spec;
use tidemark::workflows::spec::{ConnSpec, LocalActivities};

// The subcommand's help text is the doc comment of `Command::Validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// Print a JSON object (`valid`, `spec` (passwords masked) and `warnings`, or `error`;
    /// with --against-target, `against_target`).
    #[arg(long)]
    pub json: bool,
    /// Also compare the next run's batch columns (from the source's footers or query
    /// description, through the transform) with the target's, and print the schema change
    /// the `[schema]` contract would apply, or the error the run would fail with (exit 2).
    /// Reads the state store, the source and the target; writes nothing.
    #[arg(long)]
    pub against_target: bool,
}

/// Exit 0 when the spec is valid (and, with --against-target, the contract accepts the next
/// run's columns), 2 when it is not.
pub async fn run(args: ValidateArgs) -> Result<u8> {
    let ValidateArgs {
        spec: path,
        json,
        against_target,
    } = args;
    match spec::load(&path) {
        Ok(s) => {
            let warnings = spec::warnings(&s);
            let preview = if against_target {
                Some(
                    tidemark::schema_preview::preview(&s)
                        .await
                        .context("compare the next run's columns with the target")?,
                )
            } else {
                None
            };
            let refused = preview.as_ref().is_some_and(|p| p.refused.is_some());
            if json {
                let mut v = serde_json::json!({"valid": true, "spec": spec::redacted(&s), "warnings": warnings});
                if let Some(p) = &preview {
                    v["against_target"] = serde_json::to_value(p)?;
                }
                println!("{v}");
            } else {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: valid pipeline `{}`", path.display(), s.name);
                let conn = |c: &Option<ConnSpec>| match c {
                    Some(ConnSpec::Url(u)) => tidemark::pg::redact(u),
                    Some(ConnSpec::UrlEnv(v)) => format!("${v}"),
                    None => String::new(),
                };
                let source = match &s.source.query {
                    Some(q) => format!("{} `{q}`", conn(&s.source.conn)),
                    None => s.source.path.clone(),
                };
                match &s.source.cdc {
                    Some(c) => {
                        let from = match &c.brokers {
                            Some(b) => format!("{b} topics {}", c.topics.join(", ")),
                            None => source,
                        };
                        println!(
                            "  source  {from} ({:?}), key ({}), up to {} events a run, bad events: {:?}",
                            s.source.kind,
                            c.key.join(", "),
                            c.max_events,
                            c.on_bad_event
                        );
                        if c.brokers.is_some() {
                            println!("  kafka   {}", kafka_security(&c.security));
                        }
                    }
                    None => println!(
                        "  source  {source} ({:?}), cursor `{}`",
                        s.source.kind, s.source.cursor
                    ),
                }
                let target = match &s.target.table {
                    Some(t) => format!("{} table {t}", conn(&s.target.conn)),
                    None => s.target.path.clone(),
                };
                println!(
                    "  target  {target} ({:?}, {})",
                    s.target.kind,
                    s.target.mode.as_str()
                );
                if s.target.deletion_vectors {
                    println!(
                        "  deletes merge-on-read with deletion vectors: the table is upgraded to reader 3 / writer 7 (feature deletionVectors); delta-rs, the Python deltalake QueryBuilder, Polars (POLARS_DELTA_READER_FEATURE_DV=1 before 2.x), DuckDB's delta extension and Spark/Databricks 12.2+ read it; pyarrow-dataset readers such as DeltaTable.to_pyarrow_table() refuse it"
                    );
                }
                println!("  state   {}", s.state_dir);
                match s.execution.local_activities {
                    LocalActivities::Auto => println!(
                        "  steps   local activities for batches of up to {} rows",
                        s.execution.local_max_rows
                    ),
                    LocalActivities::Off => println!("  steps   regular activities only"),
                }
                println!(
                    "  schema  new columns: {:?}, type changes: {:?}, missing columns: {:?}",
                    s.schema.new_columns, s.schema.type_changes, s.schema.missing_columns
                );
                for c in &s.checks {
                    println!(
                        "  check   {:?}: expect {}, on_fail {:?}{}",
                        c.name,
                        c.expectation(),
                        c.on_fail,
                        if c.reads_target {
                            " (reads target)"
                        } else {
                            ""
                        }
                    );
                }
                if let Some(p) = &preview {
                    print_preview(p);
                }
            }
            Ok(if refused { 2 } else { 0 })
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "error": e.to_string()})
                );
            } else {
                eprintln!("error: {e}");
            }
            Ok(2)
        }
    }
}

/// The `--against-target` part of the text output.
fn print_preview(p: &tidemark::schema_preview::SchemaPreview) {
    let show = |cols: &[tidemark::workflows::payloads::ColumnType]| {
        cols.iter()
            .map(|c| format!("{} {}", c.name, c.dtype))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("against the target:");
    match &p.target_columns {
        Some(c) => println!("  target  {}: {}", p.target, show(c)),
        None => println!("  target  {}: no table yet", p.target),
    }
    match &p.batch_columns {
        Some(c) => println!("  batch   {}: {}", p.source, show(c)),
        None => println!("  batch   {}: not known before a run", p.source),
    }
    match (&p.refused, &p.change) {
        (Some(e), _) => println!("  REFUSED the next run would fail: {e}"),
        (None, Some(c)) => println!("  change  the next run would apply: {}", c.summary()),
        (None, None) if p.batch_columns.is_some() && p.target_columns.is_some() => {
            println!("  change  none: the batch fits the target as it is")
        }
        (None, None) => {}
    }
    if let Some(n) = &p.note {
        println!("  note    {n}");
    }
}

/// One line on how a Kafka source connects: protocol, SASL user and mechanism, where the
/// password is read, the certificate files (never a secret: the spec holds none).
fn kafka_security(sec: &tidemark::workflows::spec::KafkaSecurity) -> String {
    use tidemark::workflows::spec::SecretSource;
    let mut parts = vec![sec.protocol.librdkafka_name().to_string()];
    if let (Some(m), Some(u)) = (sec.sasl_mechanism, &sec.sasl_username) {
        let from = match &sec.sasl_password {
            Some(SecretSource::Env(v)) => format!("password from ${v} on the worker"),
            Some(SecretSource::File(f)) => format!("password from {f} on the worker"),
            None => "no password".to_string(),
        };
        parts.push(format!("{} as {u} ({from})", m.name()));
    }
    if sec.protocol.uses_tls() {
        parts.push(match &sec.ssl_ca_location {
            Some(ca) => format!("CA {ca}"),
            None => "the system's trusted CAs".to_string(),
        });
    }
    if let Some(cert) = &sec.ssl_certificate_location {
        parts.push(format!("client certificate {cert}"));
    }
    if !sec.librdkafka.is_empty() {
        let keys: Vec<&str> = sec.librdkafka.keys().map(String::as_str).collect();
        parts.push(format!("librdkafka: {}", keys.join(", ")));
    }
    parts.join(", ")
}
