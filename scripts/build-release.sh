#!/usr/bin/env bash
# Builds the release binaries, the same way in CI and in the Dockerfile: both binaries,
# `--locked`, release profile. With an argument, copies them into that directory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p portcullis-controller -p portcullis-dataplane --bins
if [ $# -gt 0 ]; then
  mkdir -p "$1"
  cp target/release/portcullis-controller target/release/portcullis-dataplane "$1/"
fi
