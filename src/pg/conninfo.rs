//! PostgreSQL connection strings the way libpq reads them: the `sslmode`, `sslrootcert`,
//! `sslcert`, `sslkey` and `passfile` parameters (which tokio-postgres does not know) taken
//! out of a URL's query or a `key=value` string, their `PGSSLMODE` / `PGSSLROOTCERT` /
//! `PGSSLCERT` / `PGSSLKEY` / `PGPASSFILE` / `PGPASSWORD` environment defaults, and libpq's
//! default files under `~/.postgresql/`.
//!
//! [`parse`] is pure (what `validate` checks); [`ConnInfo::resolve`] reads the worker's
//! environment and files, when the activity connects.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Plain text first; TLS if the server refuses plain text.
    Allow,
    /// TLS if the server offers it, else plain text (libpq's default).
    Prefer,
    /// TLS; the certificate is checked only against a root certificate when one is given.
    Require,
    /// TLS, the certificate chain checked against the root certificate; not the host name.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The spelling in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// Where the server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// The system's trusted roots (`sslrootcert=system`).
    System,
}

/// A connection string split into what tokio-postgres parses and what tidemark handles.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The string without the parameters below, for `tokio_postgres::Config`.
    pub config: tokio_postgres::Config,
    /// `sslmode`, when given.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`, when given.
    pub sslrootcert: Option<String>,
    /// `sslcert`, when given.
    pub sslcert: Option<String>,
    /// `sslkey`, when given.
    pub sslkey: Option<String>,
    /// `passfile`, when given.
    pub passfile: Option<String>,
}

/// The parameters tidemark takes out before tokio-postgres parses the rest.
const OURS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];

/// Parameters libpq knows that tidemark does not support: refused with a reason.
const UNSUPPORTED: [(&str, &str); 3] = [
    (
        "sslpassword",
        "encrypted client keys are not supported; decrypt the key (openssl pkey -in k -out k2) and keep it mode 0600",
    ),
    ("sslcrl", "certificate revocation lists are not supported"),
    (
        "sslcrldir",
        "certificate revocation lists are not supported",
    ),
];

/// Splits `conn` (a `postgres://` URL or libpq's `key=value` form) without reading the
/// environment or any file. The error names the parameter, never a password.
pub fn parse(conn: &str) -> Result<Parsed, String> {
    let (rest, pairs) = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn)?
    } else {
        split_key_values(conn)?
    };
    let mut parsed_pairs = Vec::new();
    for (k, v) in pairs {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(u, _)| *u == k) {
            return Err(format!("parameter `{k}`: {why}"));
        }
        parsed_pairs.push((k, v));
    }
    let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        // tokio-postgres names the option in the cause, never its value.
        match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    })?;
    let get = |name: &str| {
        parsed_pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let sslmode = get("sslmode").map(|m| m.parse::<SslMode>()).transpose()?;
    Ok(Parsed {
        config,
        sslmode,
        sslrootcert: get("sslrootcert"),
        sslcert: get("sslcert"),
        sslkey: get("sslkey"),
        passfile: get("passfile"),
    })
}

/// A URL without our parameters, and our parameters (percent-decoded). Other pairs stay
/// byte for byte as written (tokio-postgres decodes them itself).
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Vec::new()));
    };
    let (mut kept, mut ours) = (Vec::new(), Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)?;
        if OURS.contains(&key.as_str()) || UNSUPPORTED.iter().any(|(u, _)| *u == key) {
            ours.push((key, decode(v)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, ours))
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "a connection-string parameter is not valid UTF-8 once decoded".to_string())
}

/// libpq's `key=value key='quoted \' value'` form: our pairs out, the rest re-joined.
fn split_key_values(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (mut kept, mut ours) = (Vec::new(), Vec::new());
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "connection string: `{key}` is not followed by `=` (expected key=value pairs or a postgres:// URL)"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "connection string: the quoted value of `{key}` is not closed"
                        ));
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                } else {
                    value.push(c);
                    chars.next();
                }
            }
        }
        if OURS.contains(&key.as_str()) || UNSUPPORTED.iter().any(|(u, _)| *u == key) {
            ours.push((key, value));
        } else {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), ours))
}

/// Everything a connection needs, with the worker's environment and files applied.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// tokio-postgres's settings (the password filled in from the environment or the
    /// password file when the string has none).
    pub config: tokio_postgres::Config,
    /// The effective mode.
    pub mode: SslMode,
    /// The CA certificates to check the server against, if any.
    pub root: Option<RootCert>,
    /// The client certificate and key, if any.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The environment and home directory [`ConnInfo::resolve`] reads (a seam for tests).
pub trait Env {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// The home directory.
    fn home(&self) -> Option<PathBuf>;
}

/// The process's own environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}

impl ConnInfo {
    /// Applies libpq's precedence: a parameter in the string, else its environment
    /// variable, else the default file under `~/.postgresql/` when it exists.
    pub fn resolve(p: Parsed, env: &dyn Env) -> Result<ConnInfo, String> {
        let home_file = |name: &str| env.home().map(|h| h.join(".postgresql").join(name));
        let root_given = p.sslrootcert.clone().or_else(|| env.var("PGSSLROOTCERT"));
        let root = match root_given.as_deref() {
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None => home_file("root.crt")
                .filter(|f| f.is_file())
                .map(RootCert::File),
        };
        let mode = match p.sslmode {
            Some(m) => m,
            None => match env.var("PGSSLMODE") {
                Some(m) => m
                    .parse::<SslMode>()
                    .map_err(|e| format!("PGSSLMODE: {e}"))?,
                None if root == Some(RootCert::System) => SslMode::VerifyFull,
                None => SslMode::Prefer,
            },
        };
        if root == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(format!(
                "weak sslmode `{}` may not be used with sslrootcert=system (use verify-full)",
                mode.as_str()
            ));
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            match &root {
                None => {
                    return Err(format!(
                        "sslmode={} needs the CA certificate to check the server against, and none was given: set sslrootcert=PATH (or PGSSLROOTCERT, or put it in ~/.postgresql/root.crt), use sslrootcert=system for the system's trusted roots, or choose sslmode=require to skip the check",
                        mode.as_str()
                    ));
                }
                Some(RootCert::File(f)) if !f.is_file() => {
                    return Err(format!(
                        "root certificate file \"{}\" does not exist: provide the file, use sslrootcert=system for the system's trusted roots, or change sslmode to skip the server certificate check",
                        f.display()
                    ));
                }
                _ => {}
            }
        }
        let cert_given = p.sslcert.clone().or_else(|| env.var("PGSSLCERT"));
        let key_given = p.sslkey.clone().or_else(|| env.var("PGSSLKEY"));
        let cert = match &cert_given {
            Some(c) => {
                let c = PathBuf::from(c);
                if !c.is_file() {
                    return Err(format!(
                        "client certificate file \"{}\" (sslcert) does not exist",
                        c.display()
                    ));
                }
                Some(c)
            }
            None => home_file("postgresql.crt").filter(|f| f.is_file()),
        };
        let client = match cert {
            None => None,
            Some(cert) => {
                let key = key_given
                    .map(PathBuf::from)
                    .or_else(|| home_file("postgresql.key"))
                    .ok_or("a client certificate is set but no key (sslkey)")?;
                check_key_file(&key)?;
                Some((cert, key))
            }
        };
        let mut config = p.config;
        if config.get_password().is_none() {
            if let Some(pw) = env.var("PGPASSWORD") {
                config.password(pw);
            } else {
                let file = p
                    .passfile
                    .map(PathBuf::from)
                    .or_else(|| env.var("PGPASSFILE").map(PathBuf::from))
                    .or_else(|| env.home().map(|h| h.join(".pgpass")));
                if let Some(file) = file
                    && let Some(pw) = super::passfile::lookup(&file, &config, env)
                {
                    config.password(pw);
                }
            }
        }
        Ok(ConnInfo {
            config,
            mode,
            root,
            client,
        })
    }

    /// Every host is a Unix socket directory (libpq never tries TLS there).
    pub fn only_sockets(&self) -> bool {
        let hosts = self.config.get_hosts();
        !hosts.is_empty()
            && hosts
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)))
    }
}

/// libpq's rule for a client key: a regular file, mode 0600 or less when owned by the
/// current user, 0640 or less when owned by root.
fn check_key_file(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(key).map_err(|e| {
        format!(
            "client key file \"{}\" (sslkey) cannot be read: {e}",
            key.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "client key file \"{}\" (sslkey) is not a regular file",
            key.display()
        ));
    }
    let mode = meta.mode() & 0o777;
    let too_open = if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(format!(
            "client key file \"{}\" has group or world access (mode {mode:o}); it must be mode 0600 or less if owned by the current user, or 0640 or less if owned by root",
            key.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, String>, Option<PathBuf>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
    }

    fn env(vars: &[(&'static str, &str)]) -> FakeEnv {
        FakeEnv(
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            Some(PathBuf::from("/nonexistent-home")),
        )
    }

    #[test]
    fn our_parameters_come_out_of_a_url_and_the_rest_reaches_tokio_postgres() {
        let p = parse("postgres://u:p%40ss@db.example:5433/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x%20y").unwrap();
        assert_eq!(p.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(p.config.get_application_name(), Some("x y"));
        assert_eq!(p.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(p.config.get_ports(), &[5433]);
    }

    #[test]
    fn key_value_strings_are_split_too() {
        let p = parse(
            "host=db.example user=u password='it''s' sslmode=require sslcert=/c.pem dbname=app",
        )
        .unwrap_err();
        assert!(p.contains("not followed by"), "{p}");
        let p = parse(
            "host=db.example user=u password='it\\'s' sslmode=require sslcert=/c.pem dbname=app",
        )
        .unwrap();
        assert_eq!(p.sslmode, Some(SslMode::Require));
        assert_eq!(p.sslcert.as_deref(), Some("/c.pem"));
        assert_eq!(p.config.get_password(), Some(&b"it's"[..]));
        assert_eq!(p.config.get_dbname(), Some("app"));
    }

    #[test]
    fn a_bad_mode_or_an_unsupported_parameter_is_refused_by_name() {
        let e = parse("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("sslmode `verify`"), "{e}");
        let e = parse("postgres://h/db?sslpassword=hunter2").unwrap_err();
        assert!(e.contains("sslpassword") && !e.contains("hunter2"), "{e}");
        let e = parse("postgres://h/db?nonsense=1").unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
    }

    #[test]
    fn the_environment_fills_what_the_string_leaves_out_and_the_string_wins() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let ca_s = ca.to_string_lossy().into_owned();
        let e = env(&[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", &ca_s),
            ("PGPASSWORD", "from-env"),
        ]);
        let c = ConnInfo::resolve(parse("postgres://u@h/db").unwrap(), &e).unwrap();
        assert_eq!(c.mode, SslMode::VerifyCa);
        assert_eq!(c.root, Some(RootCert::File(ca.clone())));
        assert_eq!(c.config.get_password(), Some(&b"from-env"[..]));
        let c = ConnInfo::resolve(
            parse("postgres://u:given@h/db?sslmode=disable").unwrap(),
            &e,
        )
        .unwrap();
        assert_eq!(c.mode, SslMode::Disable);
        assert_eq!(c.config.get_password(), Some(&b"given"[..]));
        let c = ConnInfo::resolve(parse("postgres://u@h/db").unwrap(), &env(&[])).unwrap();
        assert_eq!((c.mode, c.root, c.client), (SslMode::Prefer, None, None));
    }

    #[test]
    fn verification_without_a_ca_and_system_roots_with_a_weak_mode_are_refused() {
        let e = ConnInfo::resolve(
            parse("postgres://h/db?sslmode=verify-full").unwrap(),
            &env(&[]),
        )
        .unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = ConnInfo::resolve(
            parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/no/such.pem").unwrap(),
            &env(&[]),
        )
        .unwrap_err();
        assert!(
            e.contains("/no/such.pem") && e.contains("does not exist"),
            "{e}"
        );
        let e = ConnInfo::resolve(
            parse("postgres://h/db?sslmode=require&sslrootcert=system").unwrap(),
            &env(&[]),
        )
        .unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        let c = ConnInfo::resolve(
            parse("postgres://h/db?sslrootcert=system").unwrap(),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.mode, SslMode::VerifyFull);
    }

    #[test]
    fn a_client_key_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "c").unwrap();
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!(
            "postgres://h/db?sslcert={}&sslkey={}",
            cert.display(),
            key.display()
        );
        let e = ConnInfo::resolve(parse(&url).unwrap(), &env(&[])).unwrap_err();
        assert!(e.contains("group or world access"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = ConnInfo::resolve(parse(&url).unwrap(), &env(&[])).unwrap();
        assert_eq!(c.client, Some((cert, key)));
    }
}
