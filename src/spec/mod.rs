//! Pipeline spec files (TOML): parsing, validation with precise errors, and resolution into
//! the [`PipelineSpec`] that runs embed in their workflow input.
//!
//! Every error names the file, the key and the fix. Relative paths are resolved against the
//! spec file's directory, so a spec means the same thing from any working directory.
//!
//! This module owns the public API ([`load`], [`parse`], [`SpecError`]) and the top-level
//! keys; each section is validated in its own module: `source` (`[source]`, CDC keys
//! included), `kafka` (a Kafka source's TLS and SASL keys), `target` (`[target]` and
//! `[late]`), `schedule` (`[monitor]`, `[schedule]` and `[execution]`), `audit` (the
//! `[schema]` contract and `[[checks]]`), with the raw serde structs in `raw`
//! and the shared path/duration helpers in `resolve`.

mod audit;
mod kafka;
mod raw;
mod resolve;
mod schedule;
mod source;
mod target;

use raw::RawSpec;
use resolve::Paths;
use std::path::Path;
use tidemark_workflows::spec::{ExecutionSpec, MonitorSpec, PipelineSpec, TransformSpec};

/// A spec that could not be loaded; the message names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    message: String,
}

impl SpecError {
    fn at(file: &Path, key: &str, problem: impl std::fmt::Display, fix: &str) -> Self {
        SpecError {
            message: format!("{}: `{key}`: {problem}; {fix}", file.display()),
        }
    }
}

/// Reads, validates and resolves a spec file.
pub fn load(path: &Path) -> Result<PipelineSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        message: format!("{}: cannot read spec file: {e}", path.display()),
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse(&text, &abs)
}

/// Validates and resolves spec text that was read from `file` (used for messages and paths).
pub fn parse(text: &str, file: &Path) -> Result<PipelineSpec, SpecError> {
    let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError {
        message: format!(
            "{}: {}",
            file.display(),
            // TOML errors quote the offending line: never a password with it.
            crate::pg::redact_in_text(&e.to_string())
                .trim_end()
                .replace('\n', "\n  ")
        ),
    })?;
    let paths = Paths::of(file);

    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(SpecError::at(
            file,
            "name",
            format!("{:?} is not a valid pipeline name", raw.name),
            "use letters, digits, `_` and `-` only (e.g. name = \"orders\")",
        ));
    }

    let source = source::source_of(file, &raw, &paths)?;
    let target = target::target_of(file, &raw, &source, &paths)?;
    let late = target::late_of(file, &raw, &target.path, &paths)?;

    let monitor = match &raw.monitor {
        None => MonitorSpec::default(),
        Some(m) => schedule::monitor_of(file, m)?,
    };
    let schedule = raw
        .schedule
        .as_ref()
        .map(|s| schedule::schedule_of(file, s))
        .transpose()?;

    let execution = match &raw.execution {
        None => ExecutionSpec::default(),
        Some(e) => schedule::execution_of(file, e)?,
    };

    let schema = match &raw.schema {
        None => Default::default(),
        Some(s) => audit::schema_of(file, s)?,
    };
    let checks = match &raw.checks {
        None => Vec::new(),
        Some(c) => audit::checks_of(file, c)?,
    };
    let maintenance = match &raw.maintenance {
        None => Default::default(),
        Some(m) => schedule::maintenance_of(file, m)?,
    };

    let state_dir = paths.resolve(raw.state_dir.as_deref().unwrap_or(".tidemark"));
    resolve::check_location(file, "state_dir", &state_dir)?;
    Ok(PipelineSpec {
        name: raw.name.clone(),
        spec_path: file.to_string_lossy().into_owned(),
        state_dir,
        source,
        transform: raw
            .transform
            .as_ref()
            .map(|t| TransformSpec { sql: t.sql.clone() }),
        target,
        late,
        monitor,
        schedule,
        execution,
        schema,
        checks,
        maintenance,
    })
}

/// What `validate` and `run` warn about in a valid spec: a connection string that embeds a
/// password (it is then in the spec file, the workflow input and its history).
pub fn warnings(spec: &PipelineSpec) -> Vec<String> {
    use tidemark_workflows::spec::ConnSpec;
    let mut out = Vec::new();
    for (section, conn) in [("source", &spec.source.conn), ("target", &spec.target.conn)] {
        if let Some(ConnSpec::Url(u)) = conn
            && crate::pg::embeds_password(u)
        {
            out.push(format!(
                "[{section}] url embeds a password ({}): it is stored in the spec and in every run's workflow history; use url_env = \"VAR\" (read by the worker), or keep the password out of the URL and give it to the worker as PGPASSWORD or in a password file (~/.pgpass, PGPASSFILE)",
                crate::pg::redact(u)
            ));
        }
    }
    if let Some(cdc) = &spec.source.cdc {
        out.extend(kafka::warnings(&cdc.security));
    }
    out
}

/// `spec` with every connection string's password masked, for printing (`validate --json`).
pub fn redacted(spec: &PipelineSpec) -> PipelineSpec {
    use tidemark_workflows::spec::ConnSpec;
    let mut s = spec.clone();
    for conn in [&mut s.source.conn, &mut s.target.conn] {
        if let Some(ConnSpec::Url(u)) = conn {
            *u = crate::pg::redact(u);
        }
    }
    s
}

/// Specs and helpers shared by the sections' unit tests.
#[cfg(test)]
mod fixtures {
    use super::parse;
    use std::path::Path;

    pub const GOOD: &str = r#"
name = "orders"
[source]
kind = "parquet"
path = "data/orders"
cursor = "updated_at"
lookback = "6h"
[target]
kind = "delta"
path = "lake/orders"
key = ["order_id"]
"#;

    pub fn err(text: &str) -> String {
        parse(text, Path::new("/x/spec.toml"))
            .unwrap_err()
            .to_string()
    }

    pub const CDC: &str = r#"
name = "orders_cdc"
[source]
kind = "kafka-debezium"
brokers = "127.0.0.1:9092"
topic = "dbserver1.public.orders"
group_id = "tidemark-orders"
key = ["order_id"]
max_events = 5000
[target]
kind = "delta"
path = "lake/orders"
"#;
}

#[cfg(test)]
mod tests {
    use super::fixtures::{GOOD, err};

    #[test]
    fn a_url_with_a_password_is_warned_about_and_masked_when_printed() {
        let text = "name = \"p\"\n[source]\nkind = \"parquet\"\npath = \"data\"\ncursor = \"updated_at\"\n[target]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@db/app?sslmode=verify-full&sslrootcert=/ca.pem\"\ntable = \"t\"\nkey = [\"id\"]\n";
        let spec = super::parse(text, std::path::Path::new("/x/p.toml")).unwrap();
        let w = super::warnings(&spec);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("[target]") && w[0].contains("u:***@db") && !w[0].contains("hunter2")
        );
        let shown = serde_json::to_string(&super::redacted(&spec)).unwrap();
        assert!(
            !shown.contains("hunter2") && shown.contains("sslmode=verify-full"),
            "{shown}"
        );
        let bad = text.replace("verify-full", "verify");
        let e = super::parse(&bad, std::path::Path::new("/x/p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("target.url") && e.contains("sslmode") && !e.contains("hunter2"),
            "{e}"
        );
        let plain = text.replace("u:hunter2@", "u@");
        let spec = super::parse(&plain, std::path::Path::new("/x/p.toml")).unwrap();
        assert!(super::warnings(&spec).is_empty());
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let e = err(&GOOD.replace("cursor = ", "cursr = \"x\"\ncursor = "));
        assert!(e.contains("/x/spec.toml") && e.contains("cursr"), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_are_named() {
        assert!(err(&GOOD.replace("\"6h\"", "\"6 hours\"")).contains("source.lookback"));
        assert!(err(&GOOD.replace("name = \"orders\"", "name = \"or ders\"")).contains("`name`"));
        assert!(err(&GOOD.replace("kind = \"delta\"", "kind = \"mysql\"")).contains("target.kind"));
        let e = err(&GOOD.replace("key = [\"order_id\"]", "key = \"order_id\""));
        assert!(e.contains("key"), "{e}");
        let e = err(&GOOD.replace(
            "lookback = \"6h\"",
            "lookback = \"6h\"\ncursor_type = \"integer\"",
        ));
        assert!(e.contains("source.lookback"), "{e}");
    }
}
