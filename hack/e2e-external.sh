#!/usr/bin/env bash
# The end-to-end suite as a user with a real cluster runs it (INFERENCE_ACCESS_E2E_KUBECONFIG),
# twice in a row against the same cluster: each scenario works in a namespace of its own with an
# operator kept to it, so scenarios and runs never meet. With no cluster given, a kube-local
# started on its own stands in for one (it then is just "a cluster": no fault injection or
# request accounting, so the scenarios needing those say they are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/e2e-external
mkdir -p "$work"
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

kubeconfig=${INFERENCE_ACCESS_E2E_KUBECONFIG:-}
if [[ -z $kubeconfig ]]; then
  cargo build --quiet -p kube-local
  kubeconfig=$work/cluster.kubeconfig
  rm -f "$kubeconfig"
  # ReferenceGrant: the consent an access across namespaces needs (tests/e2e/cross_namespace.rs).
  "$root/target/debug/kube-local" serve --kubeconfig "$kubeconfig" \
    --crd "$root/tests/mesh-local/tests/fixtures/crds/gateway.networking.k8s.io_referencegrants.yaml" >"$work/kube-local.log" 2>&1 &
  pid=$!
  deadline=$((SECONDS + 60))
  # The kubeconfig is written once the server listens.
  until [[ -s $kubeconfig ]]; do
    ((SECONDS < deadline)) || { echo "kube-local did not start:" >&2; cat "$work/kube-local.log" >&2; exit 1; }
    sleep 0.2
  done
fi
for run in 1 2; do
  echo "--- e2e against $kubeconfig, run $run"
  INFERENCE_ACCESS_E2E_KUBECONFIG=$kubeconfig cargo test --quiet -p inference-access --test e2e
done
