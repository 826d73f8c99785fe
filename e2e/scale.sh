#!/usr/bin/env bash
# The operator at scale (issue #9), against the local control plane (e2e/cluster/local.sh):
# a release-built operator as its ServiceAccount, N GRE tunnels created at once (32 requests in
# flight), then: seconds until all are Configured=True, reconciles, the operator's peak RSS.
# No kubelet: pods stay Pending, this measures the control-plane path.
#   e2e/scale.sh N [--own-endpoints] [mt-scale args]
# MT_OPERATOR_BIN runs another operator binary (e.g. one built before a change).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:?usage: e2e/scale.sh N [--own-endpoints]}"; shift
# The control plane only (MT_NODE=0): no kubelet, so this can run beside a node cluster.
export MT_NODE=0
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/mt-scale}"
export MT_API_PORT="${MT_API_PORT:-6520}"
export MT_ETCD_PORT="${MT_ETCD_PORT:-23850}"
METRICS_PORT="${MT_METRICS_PORT:-$((MT_API_PORT + 1))}"
TARGET="${CARGO_TARGET_DIR:-target}"
OPERATOR_PID=""

cleanup() {
  local rc=$?
  if [ -n "$OPERATOR_PID" ]; then
    # Wait for it to go: the next run needs its port (and the machine its memory).
    kill "$OPERATOR_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$OPERATOR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$OPERATOR_PID" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -f "$MT_CLUSTER_DIR/operator.log" ]; then
    echo "--- operator log (last 20 lines)" >&2; tail -n 20 "$MT_CLUSTER_DIR/operator.log" >&2
  fi
  [ -n "${MT_SCALE_KEEP_LOG:-}" ] && cp "$MT_CLUSTER_DIR/operator.log" "$MT_SCALE_KEEP_LOG" 2>/dev/null
  e2e/cluster/local.sh down || true
  exit $rc
}
trap cleanup EXIT INT TERM

cargo build -q --release -p magictunnel-operator -p magictunnel-e2e
OPERATOR="${MT_OPERATOR_BIN:-$TARGET/release/magictunnel-operator}"
if curl -s "http://127.0.0.1:$METRICS_PORT/" >/dev/null 2>&1; then
  echo "something already listens on 127.0.0.1:$METRICS_PORT (MT_METRICS_PORT)" >&2; exit 1
fi
export KUBECONFIG
KUBECONFIG="$(e2e/cluster/local.sh up)"
"$TARGET/release/mt-e2e" setup

e2e/cluster/host-operator.sh "$OPERATOR" operator-scale "$METRICS_PORT" >"$MT_CLUSTER_DIR/operator.log" 2>&1 &
OPERATOR_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$METRICS_PORT/healthz" >/dev/null && break; sleep 0.1; done
kill -0 "$OPERATOR_PID" || { echo "the operator did not start" >&2; exit 1; }

MT_E2E_OPERATOR_METRICS="http://127.0.0.1:$METRICS_PORT/metrics" MT_E2E_OPERATOR_PID="$OPERATOR_PID" \
  "$TARGET/release/mt-scale" "$N" "$@"
