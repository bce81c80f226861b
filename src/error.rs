//! The engine's error type, and the one rule that classifies errors as retryable or not.
//!
//! Activities turn a non-retryable error into a non-retryable Temporal failure, so a bad spec,
//! a missing cursor column, corrupt input or schema drift fail the run on the first attempt
//! with a message that names the cause; I/O hiccups are retried.

use std::path::PathBuf;

/// Errors of the engine (spec, source, transform, target, state).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec file cannot be used as written.
    #[error("{0}")]
    Spec(String),
    /// The source path matches no Parquet file, or does not exist.
    #[error("source not found: {0}")]
    SourceMissing(String),
    /// A source file cannot be decoded.
    #[error("corrupt or unreadable Parquet file {path}: {reason}")]
    CorruptInput {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A column the spec needs is absent, or the schema changed between files / runs.
    #[error("schema error: {0}")]
    Schema(String),
    /// Null cursor values with `on_null_cursor = "error"`.
    #[error(
        "{count} row(s) with a null cursor `{column}` in {file}; fix the source or set `on_null_cursor = \"exclude\"` in [source]"
    )]
    NullCursor {
        /// Cursor column.
        column: String,
        /// Rows with a null cursor.
        count: u64,
        /// First file holding one.
        file: String,
    },
    /// A malformed change event with `on_bad_event = "fail"`.
    #[error(
        "bad change event at {at}: {reason}; nothing was applied: fix the producer, or set on_bad_event = \"dead_letter\" in [source] to set such events aside"
    )]
    BadEvent {
        /// File and line, or topic/partition and offset.
        at: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Kafka could not be reached or read.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The SQL transform failed.
    #[error("transform failed: {0}")]
    Transform(String),
    /// An audit check (`[[checks]]`, `on_fail = "fail"`) refused the staged batch: nothing
    /// was published.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// A staged or batch file does not match its manifest.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A TLS connection could not be set up for a reason retrying cannot cure (a
    /// certificate the check refuses, a server without TLS when TLS is required).
    #[error("TLS: {0}")]
    Tls(String),
    /// A server refused the credentials (a SASL password, a user name): retrying with the
    /// same credentials cannot succeed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The watermark store refused an update (it would move backwards).
    #[error("watermark store: {0}")]
    Watermark(String),
    /// A failure injected by the chaos plan (`fail <point> <count>`): fails the activity
    /// without retry, so the run fails as a whole.
    #[error("injected failure at `{0}` (chaos plan)")]
    Injected(&'static str),
    /// Delta Lake error.
    #[error("delta table {path}: {source}")]
    Delta {
        /// Table path.
        path: String,
        /// The delta-rs error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// PostgreSQL error (source or target).
    #[error("postgres {context}: {}", pg_detail(.source))]
    Postgres {
        /// What was being done (names the server or table).
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Polars error while processing.
    #[error("processing failed: {0}")]
    Polars(#[from] polars::error::PolarsError),
    /// Object-storage error (S3, GCS, Azure): names the URL, never a credential.
    #[error("object store: {context}: {source}")]
    Storage {
        /// What was being done, on which URL.
        context: String,
        /// The object_store error.
        #[source]
        source: object_store::Error,
    },
    /// File-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// Whether retrying the same activity could succeed. Input and spec problems cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Spec(_)
            | EngineError::SourceMissing(_)
            | EngineError::CorruptInput { .. }
            | EngineError::Schema(_)
            | EngineError::NullCursor { .. }
            | EngineError::Transform(_)
            | EngineError::CheckFailed(_)
            | EngineError::BadEvent { .. }
            | EngineError::Watermark(_)
            | EngineError::Tls(_)
            | EngineError::Auth(_)
            | EngineError::Injected(_) => false,
            EngineError::Integrity(_) | EngineError::Io { .. } | EngineError::Kafka(_) => true,
            // Denied or missing credentials, a bad key or an unsupported operation do not
            // heal by retrying; a network error or a 5xx does.
            EngineError::Storage { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            EngineError::Delta { source, .. } => !matches!(
                source,
                deltalake::DeltaTableError::SchemaMismatch { .. }
                    | deltalake::DeltaTableError::InvalidData { .. }
            ),
            EngineError::Postgres { source, .. } => match source.code() {
                // No SQLSTATE: connection refused, reset, closed — worth retrying.
                None => true,
                // Two sessions creating the same schema or table at once (`CREATE ... IF NOT
                // EXISTS` is not atomic against another): the loser sees the catalog's unique
                // index; the retry finds the object there.
                Some(code)
                    if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                        && source
                            .as_db_error()
                            .is_some_and(|d| d.schema() == Some("pg_catalog")) =>
                {
                    true
                }
                // Class 08 connection, 40 transaction rollback (serialization, deadlock),
                // 53 insufficient resources, 55 lock not available, 57 operator intervention.
                Some(code) => matches!(&code.code()[..2], "08" | "40" | "53" | "55" | "57" | "58"),
            },
            EngineError::Polars(e) => !matches!(
                e,
                polars::error::PolarsError::SchemaMismatch(_)
                    | polars::error::PolarsError::ColumnNotFound(_)
                    | polars::error::PolarsError::SchemaFieldNotFound(_)
                    | polars::error::PolarsError::InvalidOperation(_)
                    | polars::error::PolarsError::ComputeError(_)
                    | polars::error::PolarsError::SQLSyntax(_)
                    | polars::error::PolarsError::SQLInterface(_)
            ),
        }
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    /// A PostgreSQL error with context.
    pub fn pg(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        EngineError::Postgres {
            context: context.into(),
            source,
        }
    }

    /// A Delta error on a table.
    pub fn delta(path: impl Into<String>, source: deltalake::DeltaTableError) -> Self {
        EngineError::Delta {
            path: path.into(),
            source,
        }
    }
}

/// The server's message and detail when there is one, else the driver's (which names a
/// connection failure's cause).
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// Result alias of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
