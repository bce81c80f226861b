//! Log output of the binaries (`tidemark`, `tidemark-bench`): `tracing` to stderr, human or
//! JSON, filtered by `TIDEMARK_LOG` (an `EnvFilter` directive) or by the verbosity flag.

/// Installs the global subscriber. Quiet by default (warnings, and the chatty dependencies
/// only on errors); `verbose` shows tidemark's debug lines.
pub fn init(verbose: bool, json: bool) {
    let default = if verbose {
        "info,tidemark=debug"
    } else {
        "warn,tidemark=warn,temporalio_sdk_core=error,buoyant_kernel=off,deltalake_core=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
