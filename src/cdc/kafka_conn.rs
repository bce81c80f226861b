//! How the Kafka reader connects: librdkafka settings from the spec's security keys, the
//! secrets read from the worker's environment or files when the activity runs (never from
//! the spec, so never from a workflow input), and a client context that turns librdkafka's
//! TLS and SASL failures into prompt, clear, non-retryable errors instead of a metadata
//! timeout.

use crate::error::{EngineError, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tidemark_workflows::spec::{CdcSpec, KafkaSecurity, SecretSource};

/// The consumer type of the reader.
pub type KafkaConsumer = BaseConsumer<Diagnosis>;

/// Time limit of a metadata request, in steps short enough to notice a TLS or SASL failure
/// (which librdkafka reports as an error event, while the request itself just times out).
const METADATA_STEP: Duration = Duration::from_millis(500);

/// Records what librdkafka reports about the connection, for the error message.
#[derive(Default)]
pub struct Diagnosis {
    /// The first TLS or authentication failure: retrying cannot cure it.
    fatal: Mutex<Option<EngineError>>,
    /// librdkafka's last error report.
    last: Mutex<Option<String>>,
}

impl ClientContext for Diagnosis {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::warn!(target: "librdkafka", fac, "{message}");
                self.note(message);
            }
            RDKafkaLogLevel::Warning => {
                tracing::info!(target: "librdkafka", fac, "{message}");
                self.note(message);
            }
            RDKafkaLogLevel::Notice => tracing::info!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, "{reason}");
        let fatal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::SSL) => Some(EngineError::Tls(format!(
                "{reason}; check ssl_ca_location (the CA that signed the broker's certificate), that the broker's certificate names the host in `brokers`, and that the port speaks TLS"
            ))),
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => Some(EngineError::Auth(format!(
                "kafka: {reason}; check sasl_mechanism, sasl_username and the password the worker reads (sasl_password_env / sasl_password_file)"
            ))),
            // TLS 1.3 reports a refused client certificate after the handshake, as a
            // receive failure carrying OpenSSL's alert.
            _ if reason.contains("SSL routines") && reason.contains("certificate") => {
                Some(EngineError::Tls(format!(
                    "{reason}; the broker refused the client certificate: check ssl_certificate_location and ssl_key_location (a certificate the broker's CA signed)"
                )))
            }
            _ => None,
        };
        let mut slot = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = fatal;
        }
        // "n/n brokers are down" follows every connection failure: keep the cause instead.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            self.note(reason);
        }
    }
}

impl ConsumerContext for Diagnosis {}

impl Diagnosis {
    fn note(&self, report: &str) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.to_string());
    }

    /// The TLS or authentication failure reported so far, if any.
    fn take_fatal(&self) -> Option<EngineError> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// librdkafka's last error report, as a suffix for a message.
    fn last_report(&self) -> String {
        match &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(r) => format!(" (librdkafka: {r})"),
            None => String::new(),
        }
    }
}

/// A consumer of `cdc`'s brokers with tidemark's fixed settings, the pass-through table and
/// the security settings, secrets read now.
pub fn consumer(cdc: &CdcSpec) -> Result<KafkaConsumer> {
    let brokers = cdc.brokers.as_deref().unwrap_or_default();
    // Defaults first, so the pass-through table can change them; then the settings the
    // guarantees depend on (the table cannot name those: the spec refuses them).
    let mut config = ClientConfig::new();
    config
        .set("socket.timeout.ms", "10000")
        .set("socket.connection.setup.timeout.ms", "10000");
    for (key, value) in &cdc.security.librdkafka {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", cdc.group_id.as_deref().unwrap_or("tidemark"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("log_level", "4");
    apply_security(&mut config, &cdc.security)?;
    config
        .create_with_context(Diagnosis::default())
        .map_err(|e| match e {
            // librdkafka's message quotes the value: name the setting only.
            KafkaError::ClientConfig(_, _, key, _) => EngineError::Spec(format!(
                "kafka: librdkafka refused the value of `{key}` (from [source] or [source.librdkafka]) for {brokers}"
            )),
            e => EngineError::Kafka(format!("cannot create a consumer for {brokers}: {e}")),
        })
}

/// `security.protocol` and what goes with it.
fn apply_security(config: &mut ClientConfig, sec: &KafkaSecurity) -> Result<()> {
    config.set("security.protocol", sec.protocol.librdkafka_name());
    if let Some(mechanism) = sec.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.name());
    }
    if let Some(user) = &sec.sasl_username {
        config.set("sasl.username", user);
    }
    if let Some(source) = &sec.sasl_password {
        config.set(
            "sasl.password",
            read_secret(source, "source.sasl_password")?,
        );
    }
    for (key, spec_key, path) in [
        (
            "ssl.ca.location",
            "source.ssl_ca_location",
            &sec.ssl_ca_location,
        ),
        (
            "ssl.certificate.location",
            "source.ssl_certificate_location",
            &sec.ssl_certificate_location,
        ),
        (
            "ssl.key.location",
            "source.ssl_key_location",
            &sec.ssl_key_location,
        ),
    ] {
        if let Some(path) = path {
            std::fs::metadata(path).map_err(|e| {
                EngineError::Tls(format!(
                    "`{spec_key}` = {path:?} cannot be read on this worker: {e}"
                ))
            })?;
            config.set(key, path);
        }
    }
    if let Some(source) = &sec.ssl_key_password {
        config.set(
            "ssl.key.password",
            read_secret(source, "source.ssl_key_password")?,
        );
    }
    Ok(())
}

/// A secret from the worker's environment or a file (without its trailing newline). The
/// error names the variable or the file, never the content.
pub fn read_secret(source: &SecretSource, key: &str) -> Result<String> {
    let value = match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            EngineError::Spec(format!(
                "`{key}_env` names the environment variable {var}, which is not set (or not UTF-8) in the worker's environment; set it where the worker runs"
            ))
        })?,
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                EngineError::Spec(format!(
                    "`{key}_file` = {path:?} cannot be read on this worker: {e}"
                ))
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
    };
    if value.is_empty() {
        let from = match source {
            SecretSource::Env(var) => format!("the environment variable {var}"),
            SecretSource::File(path) => format!("the file {path:?}"),
        };
        return Err(EngineError::Spec(format!("`{key}`: {from} is empty")));
    }
    Ok(value)
}

/// The metadata of `topic`, failing at once (non-retryably) when librdkafka reports a TLS
/// or authentication failure, else after `timeout` with librdkafka's last report.
pub fn metadata(
    c: &KafkaConsumer,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Metadata> {
    let deadline = Instant::now() + timeout;
    loop {
        let step = METADATA_STEP.min(deadline.saturating_duration_since(Instant::now()));
        let result = c.fetch_metadata(Some(topic), step);
        // Nothing is assigned yet, so no message can be consumed here.
        drain_events(c);
        if let Some(fatal) = c.context().take_fatal() {
            return Err(fatal);
        }
        match result {
            Ok(md) => return Ok(md),
            Err(e) if Instant::now() >= deadline => {
                return Err(EngineError::Kafka(format!(
                    "cannot reach brokers {brokers}: {e}{}; check `brokers`, and `security_protocol` if the brokers expect TLS or SASL (a plain-text client at a TLS port is disconnected without a reason)",
                    c.context().last_report()
                )));
            }
            Err(_) => {}
        }
    }
}

/// Hands the queued error and log events to the context, which sees them only when the
/// consumer is polled. A poll that consumed a log event returns nothing, just as an empty
/// queue does, so it polls a fixed number of times rather than until "nothing".
fn drain_events(c: &KafkaConsumer) {
    for _ in 0..64 {
        let _ = c.poll(Duration::ZERO);
    }
}

/// A consume error, with a TLS or authentication failure the context saw made non-retryable.
pub fn consume_error(c: &KafkaConsumer, e: KafkaError) -> EngineError {
    drain_events(c);
    c.context()
        .take_fatal()
        .unwrap_or_else(|| EngineError::Kafka(format!("consume: {e}{}", c.context().last_report())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_or_a_file_and_errors_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cr3t-value\n").unwrap();
        let got = read_secret(
            &SecretSource::File(f.to_string_lossy().into_owned()),
            "source.sasl_password",
        )
        .unwrap();
        assert_eq!(got, "s3cr3t-value");
        std::fs::write(&f, "\n").unwrap();
        let e = read_secret(
            &SecretSource::File(f.to_string_lossy().into_owned()),
            "source.sasl_password",
        )
        .unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = read_secret(
            &SecretSource::Env("TIDEMARK_TEST_SURELY_UNSET_VAR".into()),
            "source.sasl_password",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`source.sasl_password_env` names the environment variable TIDEMARK_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn tls_and_authentication_reports_become_non_retryable_errors() {
        let d = Diagnosis::default();
        d.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "connection refused",
        );
        assert!(d.take_fatal().is_none());
        assert!(d.last_report().contains("connection refused"));
        d.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "ssl://localhost:9093/bootstrap: SSL handshake failed: certificate verify failed",
        );
        let e = d.take_fatal().unwrap();
        assert!(matches!(e, EngineError::Tls(_)) && !e.is_retryable(), "{e}");
        assert!(e.to_string().contains("certificate verify failed"), "{e}");
        d.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed",
        );
        let e = d.take_fatal().unwrap();
        assert!(
            matches!(e, EngineError::Auth(_)) && !e.is_retryable(),
            "{e}"
        );
        d.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://localhost:9093/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required",
        );
        let e = d.take_fatal().unwrap();
        assert!(e.to_string().contains("client certificate"), "{e}");
    }

    #[test]
    fn a_missing_certificate_file_names_the_key() {
        let sec = KafkaSecurity {
            protocol: tidemark_workflows::spec::KafkaProtocol::Ssl,
            ssl_ca_location: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = apply_security(&mut ClientConfig::new(), &sec).unwrap_err();
        assert!(e.to_string().contains("`source.ssl_ca_location`"), "{e}");
        assert!(!e.is_retryable());
    }
}
