#!/usr/bin/env bash
# The test command: formatting, lints, chart checks, then every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== chart and Dockerfile checks"
bash scripts/check-chart.sh
echo "== build binaries (the end-to-end tests start them)"
cargo build --workspace --bins --locked
echo "== fuzz: every target for ${FUZZ_SECONDS:-10} s (docs/reliability.md)"
bash scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-10}"
# The instrumented build takes 2.6 GB that a CI machine's small disk needs for the test build;
# a failed run exits above and keeps it, with the crashing input.
if [ "${CI:-}" = true ]; then rm -rf target/fuzz; fi
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test
# binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f; if (p == 0 || f > 0) exit 1 }' "$log"
