#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: curl and Python `websockets` (real
# third-party clients), `ip` and `unshare` (the Kubernetes tests run in a network namespace of
# their own). `kubectl` is preinstalled on these machines. Idempotent: skips what is there.
set -euo pipefail

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi
if ! python3 -c 'import websockets, sys; sys.exit(0 if int(websockets.__version__.split(".")[0]) >= 14 else 1)' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'websockets==17.4' \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages 'websockets==17.4'
fi
