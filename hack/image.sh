#!/usr/bin/env bash
# `make image`: builds the operator image from the Dockerfile with the first container engine that
# answers (docker, podman, nerdctl, buildah), tagged with the chart's image repository and the
# crate's version; IMAGE=<name:tag> overrides the tag. Where no engine runs, it says why and
# fails: `make verify-image` then proves what it can of the image without one.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

version="$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
repository="$(sed -n 's/^  repository: //p' charts/inference-access/values.yaml | head -n1)"
image="${IMAGE:-${repository}:${version}}"

reasons=()
for engine in docker podman nerdctl buildah; do
  if ! command -v "${engine}" >/dev/null; then
    reasons+=("${engine}: not installed")
    continue
  fi
  # An installed client without a running engine (no daemon, no socket) cannot build.
  if ! answer="$("${engine}" info 2>&1 >/dev/null)"; then
    reasons+=("${engine}: installed, but no engine answers ($(echo "${answer}" | grep -v '^$' | tail -n1))")
    continue
  fi
  echo "image: building ${image} with ${engine}"
  case "${engine}" in
    buildah) exec buildah bud --tag "${image}" --file Dockerfile . ;;
    *) exec "${engine}" build --tag "${image}" --file Dockerfile . ;;
  esac
done
{
  echo "image: no container engine can build ${image} here:"
  printf '  %s\n' "${reasons[@]}"
  echo "Start one (e.g. the Docker daemon), or run 'make verify-image' to build the binary the image"
  echo "holds with the Dockerfile's flags and run it as the image's user. Releases build the image"
  echo "in CI (.github/workflows/release.yaml)."
} >&2
exit 1
