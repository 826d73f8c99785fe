#!/usr/bin/env bash
# The e2e suite against a real control plane built here (e2e/cluster/local.sh), with the
# operator running as its ServiceAccount under the chart's RBAC. Cleans up on any exit.
#   e2e/run-local.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster-$$}"
export MT_API_PORT="${MT_API_PORT:-$((20000 + $$ % 20000))}"
export MT_ETCD_PORT="${MT_ETCD_PORT:-$((40000 + $$ % 10000 * 2))}"
METRICS_PORT="${MT_METRICS_PORT:-$((MT_API_PORT + 1))}"
TARGET="${CARGO_TARGET_DIR:-target}"
OPERATOR_PID=""

cleanup() {
  local rc=$?
  [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null || true
  if [ $rc -ne 0 ] && [ -f "$MT_CLUSTER_DIR/operator.log" ]; then
    echo "--- operator log (last 40 lines)" >&2; tail -n 40 "$MT_CLUSTER_DIR/operator.log" >&2
  fi
  e2e/cluster/local.sh down || true
  exit $rc
}
trap cleanup EXIT INT TERM

cargo build -q -p magictunnel-operator -p magictunnel-e2e
export KUBECONFIG
KUBECONFIG="$(e2e/cluster/local.sh up)"
"$TARGET/debug/mt-e2e" setup

KUBECONFIG="$MT_CLUSTER_DIR/operator.kubeconfig" RUST_LOG=info,operator=debug \
  "$TARGET/debug/magictunnel-operator" run \
    --account-id 0123456789abcdef0123456789abcdef \
    --tunnel-image magictunnel/tunnel-pod:e2e \
    --listen "127.0.0.1:$METRICS_PORT" --log-format text \
    >"$MT_CLUSTER_DIR/operator.log" 2>&1 &
OPERATOR_PID=$!

MT_E2E_OPERATOR_METRICS="http://127.0.0.1:$METRICS_PORT/metrics" \
  cargo test -p magictunnel-e2e --test operator -- --ignored --test-threads 4 "$@"
# The operator at scale (issue #9): 300 tunnels, after the rest and alone, since it counts the
# operator's reconciles and reads its peak RSS. MT_E2E_SCALE=0 skips it.
if [ "${MT_E2E_SCALE:-1}" != 0 ]; then
  MT_E2E_OPERATOR_METRICS="http://127.0.0.1:$METRICS_PORT/metrics" MT_E2E_OPERATOR_PID="$OPERATOR_PID" \
    cargo test -p magictunnel-e2e --test scale -- --ignored
fi
# The operator acted only within its RBAC: a Forbidden answer would have failed a reconcile.
if grep -qE 'cannot [a-z]+ resource' "$MT_CLUSTER_DIR/operator.log"; then
  echo "the operator was refused by RBAC:" >&2; grep -E 'cannot [a-z]+ resource' "$MT_CLUSTER_DIR/operator.log" | head -5 >&2
  exit 1
fi
