#!/usr/bin/env bash
# Installs what the standalone demo needs besides Rust: curl and Python `websockets` (the real
# clients it connects with). Idempotent: skips what is there. The test command installs more
# (scripts/install-test-deps.sh).
set -euo pipefail

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install Rust first (https://rustup.rs), then run this again" >&2
  exit 1
fi
need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "please install: ${need_apt[*]} (no apt-get on this machine)" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
if ! python3 -c 'import websockets, sys; sys.exit(0 if int(websockets.__version__.split(".")[0]) >= 14 else 1)' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'websockets==17.4' \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages 'websockets==17.4'
fi
