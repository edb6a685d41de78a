#!/usr/bin/env bash
# The no-cluster demo, end to end, on this machine. `hack/demo.sh [sample|standard]`:
#
# sample (default, `make demo`): the KServe Istio-Dex sample. Starts kube-local (a local
#   Kubernetes API server, test substrate), the operator, the real KServe model server and the
#   gateway double, applies examples/sklearn-iris.yaml with the real kubectl, waits for Ready,
#   shows what a user looks at, and ends with a prediction through the gateway.
# standard (`make demo-standard`): KServe's Standard mode with Gateway API, in an Istio ambient
#   namespace. The admin's Gateway kserve/kserve-ingress-gateway (hack/demo-standard/
#   platform.yaml), an InferenceAccess in mesh.mode Auto (access.yaml): the operator finds the
#   HTTPRoute KServe made, writes its policy at the Gateway, and the prediction goes through
#   the Gateway; another ServiceAccount's token is refused there.
# Everything listens on 127.0.0.1 and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-sample}
case $scenario in
  sample | standard) ;;
  *) echo "usage: $0 [sample|standard]" >&2; exit 2 ;;
esac
root=$PWD
work=$root/target/demo-$scenario
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
  local deadline=$((SECONDS + 120)) url=""
  # The line that was checked is the one recorded.
  until url=$(head -1 "$work/$name.out") && [[ $url == http* ]]; do
    if ((SECONDS > deadline)); then
      echo "timed out waiting for $name; its log:" >&2
      cat "$work/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "$url" >"$work/$name.url"
}

step "build"
cargo build --quiet -p inference-access -p kube-local -p mesh-local --bins
[[ -x $kubectl ]] || hack/install-tools.sh kubectl
start=$SECONDS

step "start the local control plane (kube-local: a test substrate, not a product)"
crds=tests/mesh-local/tests/fixtures/crds
plane_args=()
if [[ $scenario == standard ]]; then
  # Gateway API served, and the KServe stand-in with enableGatewayApi.
  plane_args=(--kserve-gateway-api)
  for kind in gatewayclasses gateways httproutes referencegrants; do
    plane_args+=(--crd "$crds/gateway.networking.k8s.io_$kind.yaml")
  done
fi
"$bin/kube-local" serve --port 0 --kubeconfig "$work/admin.kubeconfig" "${plane_args[@]}" >"$work/kube-local.log" 2>&1 &
pids+=($!)
wait_file "$work/admin.kubeconfig" "kube-local"
export KUBECONFIG=$work/admin.kubeconfig
grep server: "$KUBECONFIG"

step "start the real KServe model server and the Istio gateway double"
tests/model-server/setup.sh >/dev/null
start_url_server model-server "$bin/mesh-local" model-server
gateway_args=(--kubeconfig "$KUBECONFIG" --upstream "$(cat "$work/model-server.url")")
if [[ $scenario == standard ]]; then
  # A KServe install, not Kubeflow: no mesh-wide deny-all (in ambient, ztunnel would enforce it).
  gateway_args+=(--gateway-api kserve/kserve-ingress-gateway --no-global-deny-all)
fi
start_url_server gateway "$bin/mesh-local" gateway "${gateway_args[@]}"
gateway=$(cat "$work/gateway.url")
if [[ $scenario == standard ]]; then
  gateway=$(awk '$1 == "kserve/kserve-ingress-gateway" {print $2}' "$work/gateway.out")
fi
echo "model server $(cat "$work/model-server.url"), gateway $gateway"

step "start the operator"
# The cluster admin lets credentials go to this gateway (the default is the in-cluster one).
"$bin/inference-access" controller --metrics-addr 127.0.0.1:0 --allowed-gateways "$gateway" >"$work/operator.log" 2>&1 &
pids+=($!)

if [[ $scenario == sample ]]; then
  step "kubectl apply -f crds/ -f examples/sklearn-iris.yaml"
  "$kubectl" apply -f crds/
  "$kubectl" wait --for=condition=Established crd/inferenceaccesses.inference-access.io --timeout=60s
  "$kubectl" apply -f examples/sklearn-iris.yaml
else
  step "the admin's platform: Gateway API, KServe's Gateway, an ambient namespace (hack/demo-standard/platform.yaml)"
  "$kubectl" apply -f crds/
  "$kubectl" wait --for=condition=Established crd/inferenceaccesses.inference-access.io --timeout=60s
  "$kubectl" apply -f hack/demo-standard/platform.yaml
  step "kubectl apply -f hack/demo-standard/access.yaml (Standard mode, mesh.mode Auto)"
  "$kubectl" apply -f hack/demo-standard/access.yaml
fi
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

if [[ $scenario == sample ]]; then
  step "the AuthorizationPolicy the operator applied"
  "$kubectl" get authorizationpolicy "$access" -n "$ns" -o yaml | sed -n '/^spec:/,$p'
else
  step "what KServe's Standard mode made (the stand-in): Deployment, Service, HTTPRoute"
  "$kubectl" get deployment,service -n "$ns"
  "$kubectl" get httproute sklearn-iris -n "$ns" -o yaml | sed -n '/^spec:/,/^status:/p'
  step "the path the operator found, and the policy it wrote at the Gateway (namespace kserve)"
  "$kubectl" get inferenceaccess "$access" -n "$ns" -o jsonpath='{.status.meshPath}: {.status.conditions[?(@.type=="AccessPolicyReady")].message}{"\n"}'
  "$kubectl" get authorizationpolicy "inference-access.$ns.sklearn-iris" -n kserve -o yaml | sed -n '/^spec:/,$p'
  step "another ServiceAccount's token is refused at the Gateway"
  "$kubectl" create serviceaccount stranger -n "$ns"
  stranger=$("$kubectl" create token stranger -n "$ns" --audience=istio-ingressgateway.istio-system.svc.cluster.local)
  host=$("$kubectl" get inferenceaccess "$access" -n "$ns" -o jsonpath='{.status.host}')
  code=$(curl -s -o "$work/stranger.out" -w '%{http_code}' -H "Host: $host" -H "Authorization: Bearer $stranger" \
    -H 'Content-Type: application/json' -d @tests/model-server/iris-input.json \
    "$gateway/v1/models/sklearn-iris:predict")
  echo "HTTP $code $(cat "$work/stranger.out")"
  [[ $code == 403 ]] || { echo "expected 403 for another ServiceAccount" >&2; exit 1; }
fi

step "predict through the gateway (the sample's iris-input.json)"
"$bin/inference-access" predict "$access" -n "$ns" -f tests/model-server/iris-input.json

echo
echo "demo finished in $((SECONDS - start)) s after the build; logs in $work"
