//! libpq's password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`): lines of
//! `hostname:port:database:username:password`, `*` matching anything in the first four
//! fields, `\:` and `\\` escapes, `#` comments; the first matching line wins. A file open to
//! the group or others is ignored with a warning, as libpq does.

use super::conninfo::Env;
use std::path::Path;
use tokio_postgres::config::Host;

/// The password for `config`'s first host, port, database and user, if the file has one.
pub fn lookup(file: &Path, config: &tokio_postgres::Config, env: &dyn Env) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            file = %file.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less: ignored"
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config
        .get_user()
        .map(str::to_string)
        .or_else(|| env.var("USER"))
        .unwrap_or_default();
    let db = config
        .get_dbname()
        .map(str::to_string)
        .unwrap_or_else(|| user.clone());
    find(&text, [&host, &port, &db, &user])
}

/// The password of the first line of `text` whose four fields match `want`.
fn find(text: &str, want: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split(line);
        if fields.len() < 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

/// The `:`-separated fields of a line, `\` escaping the next character.
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:*:no\ndb.example:5432:app:alice:first\\:pw\n*:*:*:alice:second\n";
        assert_eq!(
            find(text, ["db.example", "5432", "app", "alice"]).as_deref(),
            Some("first:pw")
        );
        assert_eq!(
            find(text, ["db.example", "6432", "app", "alice"]).as_deref(),
            Some("second")
        );
        assert_eq!(find(text, ["db.example", "5432", "app", "bob"]), None);
    }

    #[test]
    fn a_file_open_to_others_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        struct NoEnv;
        impl Env for NoEnv {
            fn var(&self, _: &str) -> Option<String> {
                None
            }
            fn home(&self) -> Option<std::path::PathBuf> {
                None
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(&f, "*:*:*:*:secret\n").unwrap();
        let config: tokio_postgres::Config = "postgres://u@h/db".parse().unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&f, &config, &NoEnv), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&f, &config, &NoEnv).as_deref(), Some("secret"));
    }
}
