//! The connection-security keys of a `kafka-debezium` source: `security_protocol`,
//! `sasl_*`, `ssl_*` and the `[source.librdkafka]` pass-through table, validated into a
//! [`KafkaSecurity`] that holds names and paths only (the worker reads the secrets).

use super::SpecError;
use super::raw::RawSource;
use super::resolve::Paths;
use std::collections::BTreeMap;
use std::path::Path;
use tidemark_workflows::spec::{KafkaProtocol, KafkaSecurity, SaslMechanism, SecretSource};

/// librdkafka settings tidemark sets itself, because its guarantees depend on them: what
/// the spec key instead is, or why the setting cannot change.
const OWNED: [(&str, &str); 12] = [
    ("bootstrap.servers", "set `brokers`"),
    ("metadata.broker.list", "set `brokers`"),
    ("group.id", "set `group_id`"),
    (
        "enable.auto.commit",
        "tidemark keeps the offsets in its own watermark, committed with the data; Kafka's are advisory",
    ),
    (
        "enable.auto.offset.store",
        "tidemark keeps the offsets in its own watermark, committed with the data",
    ),
    (
        "enable.partition.eof",
        "a run reads until every partition reports its end",
    ),
    (
        "auto.offset.reset",
        "tidemark assigns each partition its exact next offset and fails when retention deleted it, rather than skip or re-read",
    ),
    (
        "isolation.level",
        "only committed events may be applied (read_committed)",
    ),
    ("security.protocol", "set `security_protocol`"),
    ("sasl.mechanism", "set `sasl_mechanism`"),
    ("sasl.mechanisms", "set `sasl_mechanism`"),
    ("sasl.username", "set `sasl_username`"),
];

/// Pass-through keys that name a file tidemark has its own key for.
const PATH_KEYS: [(&str, &str); 3] = [
    ("ssl.ca.location", "ssl_ca_location"),
    ("ssl.certificate.location", "ssl_certificate_location"),
    ("ssl.key.location", "ssl_key_location"),
];

/// Validates the security keys of `s` (a `kafka-debezium` source read from `file`).
pub(super) fn security_of(file: &Path, s: &RawSource) -> Result<KafkaSecurity, SpecError> {
    let paths = Paths::of(file);
    for (key, set) in [
        ("source.sasl_password", s.sasl_password.is_some()),
        ("source.ssl_key_password", s.ssl_key_password.is_some()),
    ] {
        if set {
            return Err(SpecError::at(
                file,
                key,
                "a secret does not belong in the spec (it would be stored in every run's workflow history)",
                &format!(
                    "write {key}_env = \"VAR\" (an environment variable of the worker) or {key}_file = \"path\" (a file the worker reads)"
                ),
            ));
        }
    }
    let protocol = match s.security_protocol.as_deref().map(str::to_ascii_lowercase) {
        None => KafkaProtocol::Plaintext,
        Some(p) => match p.as_str() {
            "plaintext" => KafkaProtocol::Plaintext,
            "ssl" => KafkaProtocol::Ssl,
            "sasl_plaintext" => KafkaProtocol::SaslPlaintext,
            "sasl_ssl" => KafkaProtocol::SaslSsl,
            other => {
                return Err(SpecError::at(
                    file,
                    "source.security_protocol",
                    format!("unknown protocol {other:?}"),
                    "use \"plaintext\", \"ssl\", \"sasl_plaintext\" or \"sasl_ssl\"",
                ));
            }
        },
    };
    let sasl_password = secret_of(
        file,
        &paths,
        "source.sasl_password",
        &s.sasl_password_env,
        &s.sasl_password_file,
    )?;
    let ssl_key_password = secret_of(
        file,
        &paths,
        "source.ssl_key_password",
        &s.ssl_key_password_env,
        &s.ssl_key_password_file,
    )?;
    let sasl_mechanism = match s.sasl_mechanism.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(m) => Some(match m.replace('_', "-").as_str() {
            "PLAIN" => SaslMechanism::Plain,
            "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
            "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
            other => {
                return Err(SpecError::at(
                    file,
                    "source.sasl_mechanism",
                    format!("unsupported mechanism {other:?}"),
                    "use \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\"",
                ));
            }
        }),
    };
    if protocol.uses_sasl() {
        if sasl_mechanism.is_none() {
            return Err(SpecError::at(
                file,
                "source.sasl_mechanism",
                format!(
                    "is required with security_protocol = \"{}\"",
                    protocol.librdkafka_name()
                ),
                "write sasl_mechanism = \"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\" (as the broker's operator says)",
            ));
        }
        if s.sasl_username.as_deref().is_none_or(|u| u.is_empty()) {
            return Err(SpecError::at(
                file,
                "source.sasl_username",
                "is required with SASL authentication",
                "write sasl_username = \"...\" (for Confluent Cloud: the API key)",
            ));
        }
        if sasl_password.is_none() {
            return Err(SpecError::at(
                file,
                "source.sasl_password_env",
                "SASL authentication needs a password",
                "write sasl_password_env = \"VAR\" (read from the worker's environment) or sasl_password_file = \"path\"",
            ));
        }
    } else {
        for (key, set) in [
            ("source.sasl_mechanism", sasl_mechanism.is_some()),
            ("source.sasl_username", s.sasl_username.is_some()),
            ("source.sasl_password_env", s.sasl_password_env.is_some()),
            ("source.sasl_password_file", s.sasl_password_file.is_some()),
        ] {
            if set {
                return Err(SpecError::at(
                    file,
                    key,
                    format!(
                        "is not used with security_protocol = \"{}\"",
                        protocol.librdkafka_name()
                    ),
                    "set security_protocol = \"sasl_ssl\" (or \"sasl_plaintext\"), or remove it",
                ));
            }
        }
    }
    if !protocol.uses_tls() {
        for (key, set) in [
            ("source.ssl_ca_location", s.ssl_ca_location.is_some()),
            (
                "source.ssl_certificate_location",
                s.ssl_certificate_location.is_some(),
            ),
            ("source.ssl_key_location", s.ssl_key_location.is_some()),
            ("source.ssl_key_password_env", ssl_key_password.is_some()),
        ] {
            if set {
                return Err(SpecError::at(
                    file,
                    key,
                    format!(
                        "is not used with security_protocol = \"{}\" (no TLS)",
                        protocol.librdkafka_name()
                    ),
                    "set security_protocol = \"ssl\" (or \"sasl_ssl\"), or remove it",
                ));
            }
        }
    }
    if s.ssl_certificate_location.is_some() != s.ssl_key_location.is_some() {
        return Err(SpecError::at(
            file,
            if s.ssl_key_location.is_some() {
                "source.ssl_certificate_location"
            } else {
                "source.ssl_key_location"
            },
            "a client certificate needs both its certificate and its key",
            "set both ssl_certificate_location and ssl_key_location (PEM files)",
        ));
    }
    if ssl_key_password.is_some() && s.ssl_key_location.is_none() {
        return Err(SpecError::at(
            file,
            "source.ssl_key_password_env",
            "there is no ssl_key_location to decrypt",
            "remove it, or set ssl_key_location",
        ));
    }
    let librdkafka = pass_through_of(file, s.librdkafka.as_ref())?;
    let resolve = |p: &Option<String>| p.as_deref().map(|p| paths.resolve(p));
    Ok(KafkaSecurity {
        protocol,
        sasl_mechanism,
        sasl_username: s.sasl_username.clone(),
        sasl_password,
        ssl_ca_location: resolve(&s.ssl_ca_location),
        ssl_certificate_location: resolve(&s.ssl_certificate_location),
        ssl_key_location: resolve(&s.ssl_key_location),
        ssl_key_password,
        librdkafka,
    })
}

/// Each Kafka security key and whether `s` sets it, for refusing them in other kinds of
/// source.
pub(super) fn keys_set(s: &RawSource) -> [(&'static str, bool); 13] {
    [
        ("source.security_protocol", s.security_protocol.is_some()),
        ("source.sasl_mechanism", s.sasl_mechanism.is_some()),
        ("source.sasl_username", s.sasl_username.is_some()),
        ("source.sasl_password", s.sasl_password.is_some()),
        ("source.sasl_password_env", s.sasl_password_env.is_some()),
        ("source.sasl_password_file", s.sasl_password_file.is_some()),
        ("source.ssl_ca_location", s.ssl_ca_location.is_some()),
        (
            "source.ssl_certificate_location",
            s.ssl_certificate_location.is_some(),
        ),
        ("source.ssl_key_location", s.ssl_key_location.is_some()),
        ("source.ssl_key_password", s.ssl_key_password.is_some()),
        (
            "source.ssl_key_password_env",
            s.ssl_key_password_env.is_some(),
        ),
        (
            "source.ssl_key_password_file",
            s.ssl_key_password_file.is_some(),
        ),
        ("source.librdkafka", s.librdkafka.is_some()),
    ]
}

/// `<key>_env` / `<key>_file`: at most one of them.
fn secret_of(
    file: &Path,
    paths: &Paths,
    key: &str,
    env: &Option<String>,
    path: &Option<String>,
) -> Result<Option<SecretSource>, SpecError> {
    match (env, path) {
        (Some(_), Some(_)) => Err(SpecError::at(
            file,
            &format!("{key}_env"),
            format!("{key}_env and {key}_file are both set"),
            "keep one of them",
        )),
        (Some(var), None) if var.trim().is_empty() => Err(SpecError::at(
            file,
            &format!("{key}_env"),
            "is empty",
            "name the worker's environment variable that holds the secret",
        )),
        (Some(var), None) => Ok(Some(SecretSource::Env(var.clone()))),
        (None, Some(p)) => Ok(Some(SecretSource::File(paths.resolve(p)))),
        (None, None) => Ok(None),
    }
}

/// `[source.librdkafka]`: values as text; settings tidemark owns, and secrets, refused.
fn pass_through_of(
    file: &Path,
    table: Option<&BTreeMap<String, toml::Value>>,
) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for (name, value) in table.into_iter().flatten() {
        let key = format!("source.librdkafka.\"{name}\"");
        if let Some((_, why)) = OWNED.iter().find(|(k, _)| k == name) {
            return Err(SpecError::at(file, &key, "cannot be passed through", why));
        }
        if let Some((_, ours)) = PATH_KEYS.iter().find(|(k, _)| k == name) {
            return Err(SpecError::at(
                file,
                &key,
                "has a spec key of its own",
                &format!("set source.{ours}"),
            ));
        }
        if is_secret_setting(name) {
            return Err(SpecError::at(
                file,
                &key,
                "is a secret, and a secret does not belong in the spec (it would be stored in every run's workflow history)",
                "use sasl_password_env / sasl_password_file (or ssl_key_password_env / ssl_key_password_file)",
            ));
        }
        let text = match value {
            toml::Value::String(v) => v.clone(),
            toml::Value::Integer(v) => v.to_string(),
            toml::Value::Boolean(v) => v.to_string(),
            toml::Value::Float(v) => v.to_string(),
            _ => {
                return Err(SpecError::at(
                    file,
                    &key,
                    "is not a string, number or boolean",
                    "write the value as librdkafka documents it, e.g. \"30000\"",
                ));
            }
        };
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// Whether a librdkafka setting holds a secret (a password, a client secret, an inline key).
fn is_secret_setting(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password")
        || n.contains("secret")
        || n == "ssl.key.pem"
        || n == "ssl_key"
        || n == "sasl.oauthbearer.config"
}

/// Warnings about a valid but risky security setting.
pub(super) fn warnings(security: &KafkaSecurity) -> Vec<String> {
    let mut out = Vec::new();
    if security.protocol == KafkaProtocol::SaslPlaintext
        && security.sasl_mechanism == Some(SaslMechanism::Plain)
    {
        out.push("[source] security_protocol = \"sasl_plaintext\" with sasl_mechanism = \"PLAIN\" sends the password in clear text over the network; use \"sasl_ssl\"".to_string());
    }
    for (key, off) in [
        ("enable.ssl.certificate.verification", "false"),
        ("ssl.endpoint.identification.algorithm", "none"),
    ] {
        if security
            .librdkafka
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case(off))
        {
            out.push(format!(
                "[source.librdkafka] {key} = \"{off}\" turns off a check of the broker's certificate: anyone on the network path can pose as the broker; give the broker's CA in ssl_ca_location instead"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::spec::parse;
    use std::path::Path;
    use tidemark_workflows::spec::{KafkaProtocol, SaslMechanism, SecretSource};

    fn spec(extra: &str) -> String {
        format!(
            r#"
name = "k"
[source]
kind = "kafka-debezium"
brokers = "broker:9093"
topic = "dbserver1.public.orders"
key = ["id"]
{extra}
[target]
kind = "delta"
path = "out"
mode = "merge"
key = ["id"]
"#
        )
    }

    fn err(extra: &str) -> String {
        parse(&spec(extra), Path::new("/p/k.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sasl_ssl_resolves_names_and_paths_relative_to_the_spec() {
        let s = parse(
            &spec(
                r#"security_protocol = "SASL_SSL"
sasl_mechanism = "scram-sha-512"
sasl_username = "tidemark"
sasl_password_env = "KAFKA_PASSWORD"
ssl_ca_location = "certs/ca.pem"
[source.librdkafka]
"socket.keepalive.enable" = true
"fetch.wait.max.ms" = 200
"#,
            ),
            Path::new("/p/k.toml"),
        )
        .unwrap();
        let sec = s.source.cdc.unwrap().security;
        assert_eq!(sec.protocol, KafkaProtocol::SaslSsl);
        assert_eq!(sec.sasl_mechanism, Some(SaslMechanism::ScramSha512));
        assert_eq!(
            sec.sasl_password,
            Some(SecretSource::Env("KAFKA_PASSWORD".into()))
        );
        assert_eq!(sec.ssl_ca_location.as_deref(), Some("/p/certs/ca.pem"));
        assert_eq!(sec.librdkafka["socket.keepalive.enable"], "true");
        assert_eq!(sec.librdkafka["fetch.wait.max.ms"], "200");
    }

    #[test]
    fn the_file_keys_take_the_names_other_kafka_clients_use() {
        let s = parse(
            &spec(
                "security_protocol = \"ssl\"\nssl_cafile = \"ca.pem\"\nssl_certfile = \"c.pem\"\nssl_keyfile = \"k.pem\"\n[source.kafka_options]\n\"client.id\" = \"t\"",
            ),
            Path::new("/p/k.toml"),
        )
        .unwrap();
        let sec = s.source.cdc.unwrap().security;
        assert_eq!(sec.ssl_ca_location.as_deref(), Some("/p/ca.pem"));
        assert_eq!(sec.ssl_certificate_location.as_deref(), Some("/p/c.pem"));
        assert_eq!(sec.ssl_key_location.as_deref(), Some("/p/k.pem"));
        assert_eq!(sec.librdkafka["client.id"], "t");
    }

    #[test]
    fn a_plaintext_source_keeps_its_payload_unchanged() {
        let s = parse(&spec(""), Path::new("/p/k.toml")).unwrap();
        let json = serde_json::to_string(&s.source.cdc.unwrap()).unwrap();
        assert!(!json.contains("security"), "{json}");
    }

    #[test]
    fn a_password_in_the_spec_is_refused_without_echoing_it() {
        let e = err(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password = \"hunter2-secret\"",
        );
        assert!(e.contains("source.sasl_password"), "{e}");
        assert!(e.contains("sasl_password_env"), "{e}");
        assert!(!e.contains("hunter2-secret"), "{e}");
        let e = err("[source.librdkafka]\n\"sasl.password\" = \"hunter2-secret\"");
        assert!(e.contains("is a secret"), "{e}");
        assert!(!e.contains("hunter2-secret"), "{e}");
    }

    #[test]
    fn settings_the_guarantees_depend_on_cannot_be_passed_through() {
        for key in [
            "enable.auto.commit",
            "auto.offset.reset",
            "isolation.level",
            "group.id",
            "bootstrap.servers",
        ] {
            let e = err(&format!("[source.librdkafka]\n\"{key}\" = \"x\""));
            assert!(
                e.contains(key) && e.contains("cannot be passed through"),
                "{e}"
            );
        }
        let e =
            err("security_protocol = \"ssl\"\n[source.librdkafka]\n\"ssl.ca.location\" = \"x\"");
        assert!(e.contains("set source.ssl_ca_location"), "{e}");
    }

    #[test]
    fn incomplete_or_contradictory_settings_name_the_key() {
        let e = err(
            "security_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\nsasl_password_env = \"P\"",
        );
        assert!(e.contains("`source.sasl_mechanism`: is required"), "{e}");
        let e = err(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_password_env = \"P\"",
        );
        assert!(e.contains("`source.sasl_username`"), "{e}");
        let e = err(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"",
        );
        assert!(e.contains("needs a password"), "{e}");
        let e = err("sasl_mechanism = \"PLAIN\"");
        assert!(
            e.contains("is not used with security_protocol = \"plaintext\""),
            "{e}"
        );
        let e = err("ssl_ca_location = \"ca.pem\"");
        assert!(e.contains("(no TLS)"), "{e}");
        let e = err("security_protocol = \"ssl\"\nssl_certificate_location = \"c.pem\"");
        assert!(e.contains("needs both"), "{e}");
        let e = err("security_protocol = \"tls\"");
        assert!(e.contains("unknown protocol"), "{e}");
        let e = err("security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"GSSAPI\"");
        assert!(e.contains("unsupported mechanism"), "{e}");
        let e = err(
            "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_env = \"P\"\nsasl_password_file = \"p\"",
        );
        assert!(e.contains("both set"), "{e}");
    }

    #[test]
    fn the_security_keys_are_refused_for_other_sources() {
        let text = r#"
name = "p"
[source]
kind = "parquet"
path = "data"
cursor = "updated_at"
security_protocol = "ssl"
[target]
kind = "delta"
path = "out"
key = ["id"]
"#;
        let e = parse(text, Path::new("/p/p.toml")).unwrap_err().to_string();
        assert!(e.contains("`source.security_protocol`"), "{e}");
        let e = parse(
            &text
                .replace("parquet", "debezium-jsonl")
                .replace("cursor = \"updated_at\"", "key = [\"id\"]"),
            Path::new("/p/p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`source.security_protocol`") && e.contains("kafka-debezium"),
            "{e}"
        );
    }

    #[test]
    fn plain_over_plain_text_and_turned_off_checks_are_warned_about() {
        let s = parse(
            &spec(
                "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_env = \"P\"\n[source.librdkafka]\n\"ssl.endpoint.identification.algorithm\" = \"none\"",
            ),
            Path::new("/p/k.toml"),
        )
        .unwrap();
        let w = crate::spec::warnings(&s);
        assert!(w.iter().any(|w| w.contains("clear text")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("pose as the broker")), "{w:?}");
    }
}
