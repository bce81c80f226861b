//! The spec file as written: the serde structs TOML is read into, before validation.
//! Unknown keys are refused here (`deny_unknown_fields`), naming the key.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    pub(super) name: String,
    pub(super) state_dir: Option<String>,
    pub(super) source: RawSource,
    pub(super) transform: Option<RawTransform>,
    pub(super) target: RawTarget,
    pub(super) late: Option<RawLate>,
    pub(super) monitor: Option<RawMonitor>,
    pub(super) schedule: Option<RawSchedule>,
    pub(super) execution: Option<RawExecution>,
    pub(super) schema: Option<RawSchema>,
    pub(super) checks: Option<Vec<RawCheck>>,
    pub(super) maintenance: Option<RawMaintenance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    pub(super) cron: Option<String>,
    pub(super) every: Option<String>,
    pub(super) paused: Option<bool>,
    pub(super) timezone: Option<String>,
    pub(super) jitter: Option<String>,
    pub(super) deleted_fraction: Option<toml::Value>,
    pub(super) small_file_mb: Option<i64>,
    pub(super) target_file_mb: Option<i64>,
    pub(super) vacuum_retention: Option<String>,
    pub(super) checkpoint: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchema {
    pub(super) new_columns: Option<String>,
    pub(super) type_changes: Option<String>,
    pub(super) missing_columns: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) name: Option<String>,
    pub(super) sql: Option<String>,
    pub(super) expect: Option<toml::Value>,
    pub(super) expect_min: Option<toml::Value>,
    pub(super) expect_max: Option<toml::Value>,
    pub(super) on_fail: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExecution {
    pub(super) local_activities: Option<String>,
    pub(super) local_max_rows: Option<i64>,
    pub(super) max_batches: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    pub(super) max_lag: Option<String>,
    pub(super) empty_runs_alert: Option<u32>,
    pub(super) spike_factor: Option<toml::Value>,
    pub(super) sla: Option<String>,
    pub(super) schema_change: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) cron: Option<String>,
    pub(super) every: Option<String>,
    pub(super) paused: Option<bool>,
    pub(super) catchup_window: Option<String>,
    pub(super) overlap: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) jitter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) kind: String,
    pub(super) path: Option<String>,
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) query: Option<String>,
    pub(super) table: Option<String>,
    pub(super) cursor: Option<String>,
    pub(super) cursor_type: Option<String>,
    pub(super) lookback: Option<toml::Value>,
    pub(super) initial: Option<toml::Value>,
    pub(super) on_null_cursor: Option<String>,
    pub(super) event_time: Option<String>,
    // The batch budget (every source).
    pub(super) max_batch_rows: Option<i64>,
    pub(super) max_batch_bytes: Option<toml::Value>,
    // CDC sources.
    pub(super) key: Option<Vec<String>>,
    pub(super) max_events: Option<i64>,
    pub(super) on_bad_event: Option<String>,
    pub(super) brokers: Option<String>,
    pub(super) topic: Option<String>,
    pub(super) topics: Option<Vec<String>>,
    pub(super) group_id: Option<String>,
    pub(super) types: Option<std::collections::BTreeMap<String, String>>,
    // Kafka connection security (see `super::kafka`).
    pub(super) security_protocol: Option<String>,
    pub(super) sasl_mechanism: Option<String>,
    #[serde(alias = "sasl_user")]
    pub(super) sasl_username: Option<String>,
    /// Refused: a secret does not belong in the spec.
    pub(super) sasl_password: Option<toml::Value>,
    pub(super) sasl_password_env: Option<String>,
    pub(super) sasl_password_file: Option<String>,
    #[serde(alias = "ssl_ca", alias = "ssl_cafile", alias = "ssl_ca_file")]
    pub(super) ssl_ca_location: Option<String>,
    #[serde(
        alias = "ssl_cert",
        alias = "ssl_certificate",
        alias = "ssl_certfile",
        alias = "ssl_cert_file"
    )]
    pub(super) ssl_certificate_location: Option<String>,
    #[serde(alias = "ssl_key", alias = "ssl_keyfile", alias = "ssl_key_file")]
    pub(super) ssl_key_location: Option<String>,
    /// Refused: a secret does not belong in the spec.
    pub(super) ssl_key_password: Option<toml::Value>,
    pub(super) ssl_key_password_env: Option<String>,
    pub(super) ssl_key_password_file: Option<String>,
    #[serde(alias = "kafka_options", alias = "librdkafka_options")]
    pub(super) librdkafka: Option<std::collections::BTreeMap<String, toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransform {
    pub(super) sql: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) kind: String,
    pub(super) path: Option<String>,
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) table: Option<String>,
    pub(super) range_column: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) key: Option<Vec<String>>,
    pub(super) partition_by: Option<Vec<String>>,
    pub(super) partition_stable: Option<bool>,
    pub(super) soft_delete: Option<bool>,
    pub(super) storage_options: Option<std::collections::BTreeMap<String, String>>,
    pub(super) deletion_vectors: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLate {
    pub(super) policy: Option<String>,
    pub(super) quarantine_path: Option<String>,
}
