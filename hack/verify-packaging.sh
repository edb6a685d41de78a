#!/usr/bin/env bash
# The packaging part of `make verify`: copies in sync, chart lint + template (Helm 4, and Helm 3
# when `helm3` is installed), every kustomize tree renders, the alert rules parse (promtool).
# Quick (a few seconds) and offline;
# the deeper checks of what is rendered live in tests/packaging (`cargo test -p packaging-tests`).
# Tools: $HELM / $KUBECTL / $HELM3 / $PROMTOOL, else .tools/bin (`make tools`), else PATH.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

find_tool() {
  local name="$1" from_env="$2"
  if [[ -n "${from_env}" ]]; then
    [[ -x "${from_env}" ]] || { echo "verify-packaging: ${from_env} (from the environment) is not executable: run 'make tools'" >&2; return 1; }
    echo "${from_env}"
  elif [[ -x ".tools/bin/${name}" ]]; then
    echo "${repo_root}/.tools/bin/${name}"
  elif command -v "${name}" >/dev/null; then
    command -v "${name}"
  else
    echo "verify-packaging: ${name} not found: run 'make tools' (hack/install-tools.sh), put it on PATH or set its variable" >&2
    return 1
  fi
}

helm="$(find_tool helm "${HELM:-}")"
kubectl="$(find_tool kubectl "${KUBECTL:-}")"
helm3="$(find_tool helm3 "${HELM3:-}" 2>/dev/null || true)"
promtool="$(find_tool promtool "${PROMTOOL:-}")"

hack/verify-sync.sh

chart=charts/inference-access
value_sets=(
  ""
  "--set replicaCount=2 --set metrics.serviceMonitor.enabled=true --set controller.watchNamespaces={a,b}
   --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true"
)
for helm_bin in "${helm}" ${helm3:+"${helm3}"}; do
  version="$("${helm_bin}" version --short)"
  for values in "${value_sets[@]}"; do
    # shellcheck disable=SC2086 # the value set is several arguments on purpose
    "${helm_bin}" lint --strict "${chart}" ${values} >/dev/null
    # shellcheck disable=SC2086
    "${helm_bin}" template verify "${chart}" --namespace verify --include-crds ${values} >/dev/null
  done
  echo "verify-packaging: helm ${version}: lint and template clean"
done
if [[ -z "${helm3}" ]]; then
  echo "verify-packaging: helm3 not installed, Helm 3 check skipped (make tools installs it)"
fi

for tree in config/default config/overlays/kubeflow config/samples; do
  "${kubectl}" kustomize "${tree}" >/dev/null
done
echo "verify-packaging: kubectl kustomize renders config/default, config/overlays/kubeflow, config/samples"

"${promtool}" check rules config/prometheus/rules.yaml >/dev/null
echo "verify-packaging: promtool check rules config/prometheus/rules.yaml clean (tests/prometheus: cargo test -p packaging-tests)"
