#!/usr/bin/env bash
# Checks of the packaging that need no cluster: helm lint (strict) and helm template for the
# default values and for charts/portcullis/ci/options-values.yaml, the rendered manifests
# validated offline against the Kubernetes 1.33 schemas, a misspelt value refused by
# values.schema.json, and hadolint on the Dockerfile. Tools come from
# scripts/install-test-deps.sh. (tests/tests/chart.rs then runs the rendered chart.)
set -euo pipefail
cd "$(dirname "$0")/.."
helm=target/tools/helm
chart=charts/portcullis
out=target/chart
mkdir -p "$out"
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
hadolint=$(command -v hadolint || echo "$scripts_dir/hadolint")

for values in default options; do
  args=(--namespace portcullis)
  [ "$values" = options ] && args+=(-f "$chart/ci/options-values.yaml")
  echo "== helm lint --strict ($values values)"
  "$helm" lint --strict "${args[@]}" "$chart"
  echo "== helm template ($values values)"
  "$helm" template portcullis "$chart" --include-crds "${args[@]}" > "$out/$values.yaml"
  # ServiceMonitor is prometheus-operator's kind: not in the Kubernetes schemas.
  python3 - "$out/$values.yaml" "$out/$values-core.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["kind"] != "ServiceMonitor"]
for d in docs:
    if d["kind"] == "ServiceMonitor":
        assert d["apiVersion"] == "monitoring.coreos.com/v1" and d["spec"]["endpoints"][0]["port"] == "admin", d
yaml.safe_dump_all(core, open(sys.argv[2], "w"))
print(f"{len(docs)} objects rendered")
PY
  echo "== kubernetes-validate --strict ($values values)"
  python3 -m kubernetes_validate --strict --quiet -k 1.33.0 "$out/$values-core.yaml"
done

echo "== values.schema.json refuses a misspelt key"
if err=$("$helm" template portcullis "$chart" --set controler.replicas=3 2>&1); then
  echo "a misspelt value was accepted"; exit 1
fi
grep -q "additional properties 'controler' not allowed" <<<"$err" || { echo "$err"; exit 1; }

echo "== hadolint Dockerfile"
"$hadolint" Dockerfile
echo "chart checks passed"
