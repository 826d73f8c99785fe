#!/usr/bin/env bash
# Bring-up demo: a local Kubernetes control plane (etcd + kube-apiserver + controller-manager,
# built here from Go modules), the operator running under the chart's RBAC, and the sample
# tunnels from examples/. Prints what the operator made of them, then keeps everything running
# until Enter or Ctrl-C (KUBECONFIG is printed so you can look around with kubectl).
#
# Until the dataplane lands (GRE #3, ESP #4) there is no kubelet or peer: tunnel pods are created
# and stay Pending, and tunnels report Ready=False with "0/1 endpoint pods ready".
set -euo pipefail
cd "$(dirname "$0")/.."
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-demo}"
export MT_API_PORT="${MT_API_PORT:-64443}" MT_ETCD_PORT="${MT_ETCD_PORT:-23900}"
OPERATOR_PID=""
cleanup() { [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null; e2e/cluster/local.sh down || true; }
trap cleanup EXIT INT TERM

cargo build -q -p magictunnel-operator -p magictunnel-e2e
export KUBECONFIG
KUBECONFIG="$(e2e/cluster/local.sh up)"
target/debug/mt-e2e setup
KUBECONFIG="$MT_CLUSTER_DIR/operator.kubeconfig" POD_NAMESPACE=magictunnel-system POD_NAME=operator-local target/debug/magictunnel-operator run \
  --account-id 0123456789abcdef0123456789abcdef --tunnel-image magictunnel/tunnel-pod:0.1.0 \
  --listen 127.0.0.1:18080 --log-format text >"$MT_CLUSTER_DIR/operator.log" 2>&1 &
OPERATOR_PID=$!

KUBECTL="$(command -v kubectl || echo "$(e2e/cluster/build-k8s.sh kubectl)/kubectl")"
"$KUBECTL" apply -f examples/gre.yaml -f examples/ipsec-generated-psk.yaml -f examples/ipsec-own-psk.yaml
sleep 3
echo; echo "== hq-ipsec waits for its Secret:"; "$KUBECTL" get mt hq-ipsec -o jsonpath='{.status.conditions[0].message}'; echo
"$KUBECTL" create secret generic hq-psk --from-literal=psk="$(head -c 32 /dev/urandom | base64)"
sleep 3
echo; echo "== tunnels"; "$KUBECTL" get mt
echo; echo "== IKE IDs of branch-ipsec"; "$KUBECTL" get mt branch-ipsec -o jsonpath='{.status.ikeIds}'; echo
echo; echo "== objects"; "$KUBECTL" get pods,secrets -o wide
echo; echo "== events"; "$KUBECTL" get events.events.k8s.io
echo; echo "== operator metrics"; curl -s 127.0.0.1:18080/metrics | grep -E '^magictunnel_operator_(reconciles|tunnels_not_deployed)' || true
echo; echo "KUBECONFIG=$KUBECONFIG (operator log: $MT_CLUSTER_DIR/operator.log)"
if [ -t 0 ]; then read -r -p "Press Enter to tear everything down. "; fi
