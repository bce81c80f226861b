//! Resolution helpers shared by the sections: paths relative to the spec file, durations,
//! PostgreSQL connections and table names.

use super::SpecError;
use crate::cursor::parse_duration_micros;
use std::path::{Path, PathBuf};
use tidemark_workflows::spec::ConnSpec;

/// Resolves the spec's relative paths against the spec file's directory, so a spec means
/// the same thing from any working directory.
pub(super) struct Paths {
    base: PathBuf,
}

impl Paths {
    /// Paths relative to the directory of `file`.
    pub(super) fn of(file: &Path) -> Self {
        Paths {
            base: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        }
    }

    /// `p` as an absolute, normalized path (as text); an object-store URL as written (without
    /// a trailing `/`), a `file://` URL as its path. A URL of another scheme is kept as written
    /// for [`check_location`] to refuse.
    pub(super) fn resolve(&self, p: &str) -> String {
        let p = match crate::storage::parse(p) {
            Ok(crate::storage::Location::Remote(_)) => return p.trim_end_matches('/').to_string(),
            Ok(crate::storage::Location::Local(path)) => path,
            Err(_) => return p.to_string(),
        };
        let joined = if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        };
        normalize(&joined).to_string_lossy().into_owned()
    }
}

/// Refuses a location (`key` of the spec) whose URL scheme tidemark cannot use.
pub(super) fn check_location(file: &Path, key: &str, value: &str) -> Result<(), SpecError> {
    crate::storage::parse(value).map(|_| ()).map_err(|e| {
        SpecError::at(
            file,
            key,
            e.to_string(),
            "write a local path, or an s3://, gs://, az:// or abfss:// URL",
        )
    })
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A duration key (`"90s"`, `"15m"`, `"2h"`, `"1d"`) in milliseconds; `"0"` or `"off"` is None.
pub(super) fn duration_ms(file: &Path, key: &str, text: &str) -> Result<Option<u64>, SpecError> {
    if matches!(text.trim(), "0" | "off" | "none") {
        return Ok(None);
    }
    match parse_duration_micros(text) {
        Some(us) if us > 0 => Ok(Some((us / 1000) as u64)),
        _ => Err(SpecError::at(
            file,
            key,
            format!("{text:?} is not a duration"),
            "write a number and a unit: ms, s, m, h or d (e.g. \"15m\", \"2h\"), or \"off\"",
        )),
    }
}

/// `url` or `url_env` (exactly one) of a PostgreSQL source or target.
pub(super) fn conn_of(
    file: &Path,
    section: &str,
    url: &Option<String>,
    url_env: &Option<String>,
) -> Result<ConnSpec, SpecError> {
    match (url, url_env) {
        (Some(u), None) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            // The syntax only (sslmode's value, known parameters); the environment and the
            // certificate files are the worker's, read when it connects.
            crate::pg::conninfo::parse(u).map_err(|e| {
                SpecError::at(
                    file,
                    &format!("{section}.url"),
                    format!("{}: {e}", crate::pg::redact(u)),
                    "see docs/security.md for the parameters tidemark reads (sslmode, sslrootcert, sslcert, sslkey, passfile)",
                )
            })?;
            Ok(ConnSpec::Url(u.clone()))
        }
        (Some(u), None) => Err(SpecError::at(
            file,
            &format!("{section}.url"),
            format!(
                "{:?} is not a postgres:// URL",
                crate::pg::redact_in_text(u)
            ),
            "write url = \"postgres://user@host:5432/db\", or url_env = \"VAR\" to read it from the worker's environment",
        )),
        (None, Some(v)) if !v.trim().is_empty() => Ok(ConnSpec::UrlEnv(v.clone())),
        _ => Err(SpecError::at(
            file,
            &format!("{section}.url"),
            "a PostgreSQL connection needs exactly one of `url` and `url_env`",
            "write url_env = \"TIDEMARK_PG_URL\" (read by the worker; keeps passwords out of the workflow history) or url = \"postgres://...\"",
        )),
    }
}

/// `schema.table` or `table`, plain identifiers (letters, digits, `_`, `$`).
pub(super) fn valid_table_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

/// A valid table name as a quoted SQL identifier.
pub(super) fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::GOOD;
    use super::super::parse;
    use std::path::Path;
    use tidemark_workflows::cursor::Lookback;
    use tidemark_workflows::spec::WriteMode;

    #[test]
    fn a_good_spec_resolves_paths_against_its_directory() {
        let s = parse(GOOD, Path::new("/x/y/spec.toml")).unwrap();
        assert_eq!(s.source.path, "/x/y/data/orders");
        assert_eq!(s.target.path, "/x/y/lake/orders");
        assert_eq!(s.state_dir, "/x/y/.tidemark");
        assert_eq!(s.source.lookback, Lookback::Duration(6 * 3_600_000_000));
        assert_eq!(s.target.mode, WriteMode::Merge);
    }
}
