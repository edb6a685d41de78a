#!/usr/bin/env bash
# The no-cluster demo: the KServe Istio-Dex sample, end to end, on this machine.
#
# Starts kube-local (a local Kubernetes API server, test substrate), the operator, the real KServe
# model server and the gateway double, applies examples/sklearn-iris.yaml with the real kubectl,
# waits for Ready, shows what a user looks at, and ends with a prediction through the gateway.
# Everything listens on 127.0.0.1 and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/demo
mkdir -p "$work"
rm -f "$work"/*.kubeconfig "$work"/*.log "$work"/*.url
kubectl=${KUBECTL:-$root/.tools/bin/kubectl}
bin=$root/target/debug
ns=kubeflow-user-example-com
access=sklearn-iris-client

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Waits for a file to appear (a server writing its address), with a deadline.
wait_file() {
  local file=$1 what=$2 deadline=$((SECONDS + 60))
  until [[ -s $file ]]; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for $what; its log:" >&2
      cat "${file%.*}.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

# Starts a server that prints its URL as the first stdout line; records the URL.
start_url_server() {
  local name=$1
  shift
  "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  local deadline=$((SECONDS + 120))
  until [[ -s $work/$name.out ]] && head -1 "$work/$name.out" | grep -q '^http'; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for $name; its log:" >&2
      cat "$work/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  head -1 "$work/$name.out" >"$work/$name.url"
}

step "build"
cargo build --quiet -p inference-access -p kube-local -p mesh-local --bins
[[ -x $kubectl ]] || hack/install-tools.sh kubectl
start=$SECONDS

step "start the local control plane (kube-local: a test substrate, not a product)"
"$bin/kube-local" serve --port 0 --kubeconfig "$work/admin.kubeconfig" >"$work/kube-local.log" 2>&1 &
pids+=($!)
wait_file "$work/admin.kubeconfig" "kube-local"
export KUBECONFIG=$work/admin.kubeconfig
grep server: "$KUBECONFIG"

step "start the real KServe model server and the Istio gateway double"
tests/model-server/setup.sh >/dev/null
start_url_server model-server "$bin/mesh-local" model-server
start_url_server gateway "$bin/mesh-local" gateway --kubeconfig "$KUBECONFIG" --upstream "$(cat "$work/model-server.url")"
gateway=$(cat "$work/gateway.url")
echo "model server $(cat "$work/model-server.url"), gateway $gateway"

step "start the operator"
"$bin/inference-access" controller --metrics-addr 127.0.0.1:0 >"$work/operator.log" 2>&1 &
pids+=($!)

step "kubectl apply -f crds/ -f examples/sklearn-iris.yaml"
"$kubectl" apply -f crds/
"$kubectl" wait --for=condition=Established crd/inferenceaccesses.inference-access.io --timeout=60s
"$kubectl" apply -f examples/sklearn-iris.yaml
# The demo's gateway listens on loopback, not at the in-cluster default address.
"$kubectl" patch inferenceaccess "$access" -n "$ns" --type merge -p "{\"spec\":{\"gateway\":{\"url\":\"$gateway\"}}}"

step "kubectl wait --for=condition=Ready inferenceaccess/$access"
"$kubectl" wait --for=condition=Ready "inferenceaccess/$access" -n "$ns" --timeout=60s
"$kubectl" get inferenceaccess -n "$ns" -o wide

step "status"
"$bin/inference-access" status "$access" -n "$ns"

step "the Secret a workload mounts (values of token and authorization redacted)"
"$kubectl" get secret "$access-credential" -n "$ns" -o json | python3 -c '
import base64, json, sys
data = json.load(sys.stdin)["data"]
for key in sorted(data):
    value = base64.b64decode(data[key]).decode()
    if key in ("token", "authorization"):
        value = value[:12] + "... (%d bytes, redacted)" % len(value)
    print(f"  {key:12} {value}")'

step "the AuthorizationPolicy the operator applied"
"$kubectl" get authorizationpolicy "$access" -n "$ns" -o yaml | sed -n '/^spec:/,$p'

step "predict through the gateway (the sample's iris-input.json)"
"$bin/inference-access" predict "$access" -n "$ns" -f tests/model-server/iris-input.json

echo
echo "demo finished in $((SECONDS - start)) s after the build; logs in $work"
