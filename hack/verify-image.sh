#!/usr/bin/env bash
# `make verify-image`: what can be proven of the image without a container engine or a musl
# target (neither can be installed on every machine the project builds on):
#   1. the binary the Dockerfile copies builds with the Dockerfile's own cargo command (read from
#      it, so the two cannot drift), for this machine's target;
#   2. it is statically linked when that target links statically (musl, as in the Dockerfile's
#      Alpine build stage); on a glibc target the same flags link glibc dynamically, which is said;
#   3. it runs as the user the image declares (the Dockerfile's USER, 65532: distroless
#      `nonroot`) with an empty environment from a root-owned read-only directory:
#      `--version` (the crate's version), `crd` (equal to crds/) and `controller --help`.
# Step 3 switches user, which needs root (setpriv). A release build from scratch takes minutes;
# later runs reuse target/release.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
cargo="${CARGO:-cargo}"

# 1. The Dockerfile's build command, verbatim.
build="$(sed -n 's/^.*\(cargo build [^&\\]*\).*$/\1/p' Dockerfile | head -n1)"
[[ -n "${build}" ]] || { echo "verify-image: no 'cargo build' line in the Dockerfile" >&2; exit 1; }
read -r -a build_args <<<"${build#cargo }"
host="$("${cargo}" -vV | sed -n 's/^host: //p')"
echo "verify-image: ${build% } (host target ${host})"
started=${SECONDS}
"${cargo}" "${build_args[@]}"
echo "verify-image: built in $((SECONDS - started)) s"
binary="${CARGO_TARGET_DIR:-target}/release/inference-access"
[[ -x "${binary}" ]] || { echo "verify-image: ${binary} was not built" >&2; exit 1; }

# 2. Static or not, as the Dockerfile checks it (a program interpreter means dynamic linking).
if readelf --program-headers "${binary}" | grep -q INTERP; then
  if [[ "${host}" == *-musl ]]; then
    echo "verify-image: ${binary} is dynamically linked on a musl target: the Dockerfile's check would fail" >&2
    exit 1
  fi
  echo "verify-image: dynamically linked, as the same flags link on ${host} (glibc: $(ldd "${binary}" | grep -c '=>') libraries);"
  echo "  the image's build stage targets *-linux-musl, where they link statically, and its readelf check enforces that"
else
  echo "verify-image: statically linked"
fi

# 3. As the image runs it.
read -r uid gid < <(sed -n 's/^USER \([0-9]*\):\([0-9]*\).*$/\1 \2/p' Dockerfile)
[[ -n "${uid:-}" && -n "${gid:-}" ]] || { echo "verify-image: the Dockerfile declares no numeric USER uid:gid" >&2; exit 1; }
if [[ "$(id -u)" -ne 0 ]]; then
  echo "verify-image: running as uid ${uid} needs root (setpriv); run as root, e.g. in CI" >&2
  exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "${root}"' EXIT
chmod 0755 "${root}"
install -d -m 0755 "${root}/usr/local/bin"
install -m 0755 "${binary}" "${root}/usr/local/bin/inference-access"
as_image_user() {
  (cd / && setpriv --reuid="${uid}" --regid="${gid}" --clear-groups --inh-caps=-all \
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/nonroot "$@")
}
[[ "$(as_image_user id -u):$(as_image_user id -g)" == "${uid}:${gid}" ]] \
  || { echo "verify-image: setpriv did not switch to ${uid}:${gid}" >&2; exit 1; }
version="$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
printed="$(as_image_user "${root}/usr/local/bin/inference-access" --version)"
[[ "${printed}" == "inference-access ${version}" ]] \
  || { echo "verify-image: --version printed '${printed}', not 'inference-access ${version}'" >&2; exit 1; }
as_image_user "${root}/usr/local/bin/inference-access" crd | diff -u crds/inference-access.io_inferenceaccesses.yaml - \
  || { echo "verify-image: 'crd' as uid ${uid} differs from crds/" >&2; exit 1; }
as_image_user "${root}/usr/local/bin/inference-access" controller --help >/dev/null
echo "verify-image: as uid ${uid}:${gid} with an empty environment: '${printed}', crd equals crds/, controller --help"
