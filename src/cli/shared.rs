//! Helpers shared by several subcommands: connection settings, loading a spec to act on,
//! naming a pipeline on the command line (a spec file or a name under a state directory),
//! and the shutdown signal.

use super::ConnectArgs;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use tidemark::client::ConnectSettings;
use tidemark::spec;
use tidemark::state::{self, StateStore};

/// The spec at `path`, for a command that acts on it (`run`, `backfill`, `schedule
/// create`), after printing its warnings (a password in a URL, PLAIN in clear text, ...)
/// to stderr.
pub fn load_spec(path: &Path) -> Result<tidemark::workflows::spec::PipelineSpec> {
    let spec = spec::load(path)?;
    for w in spec::warnings(&spec) {
        eprintln!("warning: {w}");
    }
    Ok(spec)
}

/// The connection settings of the connection flags (`--address`, `--tls-*`, ...).
pub fn settings(c: &ConnectArgs) -> ConnectSettings {
    ConnectSettings {
        address: c.address.clone(),
        namespace: c.namespace.clone(),
        profile: c.profile.clone(),
        config_file: c.config_file.clone(),
        tls: if c.tls {
            Some(true)
        } else if c.no_tls {
            Some(false)
        } else {
            None
        },
        tls_ca: c.tls_ca.clone(),
        tls_cert: c.tls_cert.clone(),
        tls_key: c.tls_key.clone(),
        tls_server_name: c.tls_server_name.clone(),
        api_key_env: c.api_key_env.clone(),
        local: false,
    }
}

/// A pipeline named on the command line: a spec file, or a name under a state directory.
pub struct Named {
    /// The pipeline's name.
    pub name: String,
    /// Its state store.
    pub state: Box<dyn StateStore>,
    /// Its spec, when given as a file.
    pub spec: Option<tidemark::workflows::spec::PipelineSpec>,
}

impl Named {
    /// The pipeline of a loaded spec.
    pub fn of(s: tidemark::workflows::spec::PipelineSpec) -> Result<Self> {
        Ok(Named {
            name: s.name.clone(),
            state: state::open(&s)?,
            spec: Some(s),
        })
    }
}

/// A spec file, or a pipeline name whose state is under `state_dir` (default ./.tidemark).
pub fn resolve_pipeline(target: &str, state_dir: Option<PathBuf>) -> Result<Named> {
    let as_path = Path::new(target);
    if as_path.is_file() {
        return Named::of(spec::load(as_path)?);
    }
    let dir = state_dir.unwrap_or_else(|| PathBuf::from(".tidemark"));
    let dir = dir.to_string_lossy().into_owned();
    // An object-store URL (`s3://bucket/state`) is taken as written; a path made absolute.
    let dir = if tidemark::storage::is_remote(&dir) {
        dir
    } else {
        let p = PathBuf::from(&dir);
        std::path::absolute(&p)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let store = state::open_at(&dir, target)?;
    if !store.exists() {
        bail!("no state for pipeline `{target}` under {dir} (pass the spec file, or --state-dir)");
    }
    Ok(Named {
        name: target.to_string(),
        state: store,
        spec: None,
    })
}

/// The name of a pipeline given as a spec file or a bare name (no state needed).
pub fn pipeline_name(target: &str) -> Result<String> {
    let p = Path::new(target);
    if p.is_file() {
        Ok(spec::load(p)?.name)
    } else {
        Ok(target.to_string())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
