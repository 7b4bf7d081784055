#!/usr/bin/env bash
# The load benchmark, one command: builds the release binary, installs oha if it is missing,
# and runs every scenario three times on a fresh SQLite database over loopback (bench/run.py).
#   bench/run.sh [--seconds N] [--concurrency N] [--runs N] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "bench: curl is needed"; exit 1; }
if ! command -v oha >/dev/null; then
    echo "bench: installing oha (cargo install oha --locked), once"
    cargo install oha --locked
fi
cargo build --release -p portcullis-web --bin portcullis
# --pin: the server on CPU 0, the load generators on CPU 1 (docs/BENCHMARKS.md).
exec python3 bench/run.py "${CARGO_TARGET_DIR:-target}/release/portcullis" --pin "$@"
