#!/usr/bin/env bash
# The test command: formatting, lints, then every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build binaries (the end-to-end tests start them)"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked
