#!/usr/bin/env bash
# Prints the krew manifest of a release: plugins/inference-access.yaml with ${VERSION} and the
# sha256 of each archive hack/release-archive.sh packed (${SHA256_<os>_<arch>}) filled in. Fails
# when an archive is missing or a placeholder is left.
# Usage: hack/krew-manifest.sh <version, e.g. v0.1.0> <dir with the archives>
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 <version> <archive dir>" >&2; exit 2; }
version="$1" dir="$2"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ "${version}" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] \
  || { echo "krew-manifest: version ${version} is not v<semver>" >&2; exit 1; }

# The manifest without the template's comment header.
manifest="$(sed -n '/^apiVersion:/,$p' "${repo_root}/plugins/inference-access.yaml")"
manifest="${manifest//\$\{VERSION\}/${version}}"
for platform in linux_amd64 linux_arm64 darwin_amd64 darwin_arm64; do
  archive="${dir}/inference-access_${version}_${platform}.tar.gz"
  [[ -f "${archive}" ]] || { echo "krew-manifest: ${archive} is missing" >&2; exit 1; }
  sum="$(sha256sum "${archive}" | cut -d' ' -f1)"
  manifest="${manifest//\$\{SHA256_${platform}\}/${sum}}"
done
if grep -q '\${' <<<"${manifest}"; then
  echo "krew-manifest: placeholders left: $(grep -o '\${[A-Za-z0-9_]*}' <<<"${manifest}" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
echo "${manifest}"
