#!/usr/bin/env bash
# The e2e suite on a real single-node cluster built here (e2e/cluster/local.sh): the chart is
# installed with the images built from this checkout (e2e/cluster/install-chart.sh) and the
# operator runs in a pod under the chart's RBAC, its tunnel pods on the node. Cleans up on any exit.
#   e2e/run-local.sh [extra cargo test args]
#
# MT_NODE=0: the older control-plane-only mode (no kubelet: pods stay Pending), with the operator
# run on this host as its ServiceAccount (impersonated).
set -euo pipefail
cd "$(dirname "$0")/.."
export MT_NODE="${MT_NODE:-1}"
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster-$$}"
export MT_API_PORT="${MT_API_PORT:-$((20000 + $$ % 20000))}"
export MT_ETCD_PORT="${MT_ETCD_PORT:-$((40000 + $$ % 10000 * 2))}"
METRICS_PORT="${MT_METRICS_PORT:-$((MT_API_PORT + 1))}"
TARGET="${CARGO_TARGET_DIR:-target}"
OPERATOR_PID=""
KUBECTL="$(e2e/cluster/build-k8s.sh kubectl)/kubectl"
NS=magictunnel-system

operator_log() {
  if [ "$MT_NODE" = 1 ]; then
    "$KUBECTL" -n "$NS" logs deploy/mt-magictunnel --tail=-1 2>/dev/null || true
  else
    cat "$MT_CLUSTER_DIR/operator.log" 2>/dev/null || true
  fi
}

cleanup() {
  local rc=$?
  [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    echo "--- operator log (last 40 lines)" >&2; operator_log | tail -n 40 >&2
  fi
  e2e/cluster/local.sh down || rc=1
  exit $rc
}
trap cleanup EXIT INT TERM

export KUBECONFIG
if [ "$MT_NODE" = 1 ]; then
  cargo build -q -p magictunnel-e2e
  KUBECONFIG="$(e2e/cluster/local.sh up)"
  e2e/cluster/install-chart.sh >/dev/null
  # Pod IPs on the node's bridge are reachable from the host.
  pod_ip="$("$KUBECTL" -n "$NS" get pods -l app.kubernetes.io/instance=mt -o jsonpath='{.items[0].status.podIP}')"
  export MT_E2E_OPERATOR_METRICS="http://$pod_ip:8080/metrics"
else
  cargo build -q -p magictunnel-operator -p magictunnel-e2e
  KUBECONFIG="$(e2e/cluster/local.sh up)"
  target/debug/mt-e2e setup
  KUBECONFIG="$MT_CLUSTER_DIR/operator.kubeconfig" POD_NAMESPACE=magictunnel-system POD_NAME=operator-local RUST_LOG=info,operator=debug \
    target/debug/magictunnel-operator run \
      --account-id 0123456789abcdef0123456789abcdef \
      --tunnel-image magictunnel/tunnel-pod:e2e \
      --listen "127.0.0.1:$METRICS_PORT" --log-format text \
      >"$MT_CLUSTER_DIR/operator.log" 2>&1 &
  OPERATOR_PID=$!
  export MT_E2E_OPERATOR_METRICS="http://127.0.0.1:$METRICS_PORT/metrics"
fi

cargo test -p magictunnel-e2e --test operator -- --ignored --test-threads 4 "$@"
# The operator acted only within its RBAC: a Forbidden answer would have failed a reconcile.
if operator_log | grep -qE 'cannot [a-z]+ resource'; then
  echo "the operator was refused by RBAC:" >&2; operator_log | grep -E 'cannot [a-z]+ resource' | head -5 >&2
  exit 1
fi
