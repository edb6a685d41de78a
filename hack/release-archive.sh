#!/usr/bin/env bash
# Packs one release archive, inference-access_<version>_<os>_<arch>.tar.gz, holding the binary as
# `inference-access` and the LICENSE: the layout plugins/inference-access.yaml (krew) installs
# from. Reproducible: fixed owner, mode and modification time.
# Usage: hack/release-archive.sh <binary> <version, e.g. v0.1.0> <os> <arch> <output dir>
set -euo pipefail

[[ $# -eq 5 ]] || { echo "usage: $0 <binary> <version> <os> <arch> <output dir>" >&2; exit 2; }
binary="$1" version="$2" os="$3" arch="$4" out="$5"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

stage="$(mktemp -d)"
trap 'rm -rf "${stage}"' EXIT
install -m 0755 "${binary}" "${stage}/inference-access"
install -m 0644 "${repo_root}/LICENSE" "${stage}/LICENSE"
mkdir -p "${out}"
archive="${out}/inference-access_${version}_${os}_${arch}.tar.gz"
tar --create --gzip --file "${archive}" --directory "${stage}" \
  --owner=0 --group=0 --numeric-owner --mtime=@"${SOURCE_DATE_EPOCH:-0}" --sort=name \
  inference-access LICENSE
echo "${archive}"
