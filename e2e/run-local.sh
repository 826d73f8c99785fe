#!/usr/bin/env bash
# The e2e suite on a real single-node cluster built here (e2e/cluster/local.sh): the chart is
# installed with the images built from this checkout (e2e/cluster/install-chart.sh), the
# operator runs in 2 pods under the chart's RBAC, its tunnel pods on the node. Then every test
# file in e2e/tests runs with its ignored (cluster) tests, MT_E2E_REQUIRED=1: a test that finds
# no cluster fails instead of skipping. On a failure: both operator replicas' logs, the pods
# described, the kubelet's and containerd's log tails. Always: `local.sh down`, which fails if
# it leaves anything behind, and so does this script (also for a test's own mto*/mtt* host
# interfaces or namespaces left over).
#   e2e/run-local.sh [extra test-binary args, e.g. a test name filter]
#
# Env: MT_E2E_TEST_THREADS (default 1: the files share one node and its host network; tests
#      in one file that share something take turns anyway), MT_CLUSTER_DIR, MT_API_PORT,
#      MT_ETCD_PORT (default per run, see below).
# MT_NODE=0: the older control-plane-only mode (no kubelet: pods stay Pending), with the operator
# run on this host as its ServiceAccount (impersonated). Most tests need pods that run and a
# Lease held by an operator pod, so only a filter such as `the_api_server` passes there.
set -euo pipefail
cd "$(dirname "$0")/.."
export MT_NODE="${MT_NODE:-1}"
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster-$$}"
export MT_API_PORT="${MT_API_PORT:-$((20000 + $$ % 20000))}"
export MT_ETCD_PORT="${MT_ETCD_PORT:-$((40000 + $$ % 10000 * 2))}"
export MT_E2E_REQUIRED=1
METRICS_PORT="${MT_METRICS_PORT:-$((MT_API_PORT + 1))}"
THREADS="${MT_E2E_TEST_THREADS:-1}"
OPERATOR_PID=""
KUBECTL="$(e2e/cluster/build-k8s.sh kubectl)/kubectl"
NS=magictunnel-system
TARGET="${CARGO_TARGET_DIR:-target}"
SELECTOR=app.kubernetes.io/instance=mt,app.kubernetes.io/name=magictunnel

k() { "$KUBECTL" --request-timeout=20s "$@"; }

# Every operator replica's log (current and, after a restart, previous container), each line
# prefixed with its pod.
operator_log() {
  if [ "$MT_NODE" = 1 ]; then
    local pod
    for pod in $(k -n "$NS" get pods -l "$SELECTOR" -o name 2>/dev/null); do
      k -n "$NS" logs "$pod" --previous --prefix --tail=-1 2>/dev/null || true
      k -n "$NS" logs "$pod" --prefix --tail=-1 2>/dev/null || true
    done
  else
    cat "$MT_CLUSTER_DIR/operator.log" 2>/dev/null || true
  fi
}

diagnostics() {
  echo "=== operator logs, both replicas (last 80 lines each)" >&2
  local pod
  for pod in $(k -n "$NS" get pods -l "$SELECTOR" -o name 2>/dev/null); do
    echo "--- $pod" >&2
    k -n "$NS" logs "$pod" --tail=80 >&2 2>&1 || true
  done
  [ "$MT_NODE" = 1 ] || { operator_log | tail -n 80 >&2; return 0; }
  echo "=== pods" >&2
  k get pods -A -o wide >&2 2>&1 || true
  echo "=== describe: operator pods and test namespaces' pods" >&2
  k -n "$NS" describe pods >&2 2>&1 || true
  local ns
  for ns in $(k get ns -o name 2>/dev/null | sed -n 's|^namespace/\(e2e-.*\)|\1|p'); do
    k -n "$ns" describe pods >&2 2>&1 || true
  done
  local log
  for log in kubelet containerd; do
    echo "=== $log log (last 60 lines)" >&2
    tail -n 60 "$MT_CLUSTER_DIR/$log.log" >&2 2>/dev/null || true
  done
}

# Host interfaces and namespaces the tests create (mto*: ops sites, mtt*: traffic branches, mta*:
# the anycast lab), a tunnel pod's TUN (mt + 13 hex digits) that outlived its pod, the leader
# test's firewall rule.
test_leftovers() {
  { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
      grep -E '^(mt[ota][0-9a-z]|mt[0-9a-f]{13}$)' | sed 's/^/interface /'
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mt[ota][0-9a-z]' | sed 's/^/netns /'
    iptables -S 2>/dev/null | grep -F mto-leader-crash | sed 's/^/iptables /'
  } || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    diagnostics
  fi
  e2e/cluster/local.sh down || { echo "local.sh down left things behind" >&2; rc=1; }
  local left
  left="$(test_leftovers)"
  if [ -n "$left" ]; then
    echo "the tests left behind:" >&2; echo "$left" >&2; rc=1
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

# The debug tunnel-pod is the traffic tests' standalone branch peer (beside the test binaries).
cargo build -q -p magictunnel-e2e -p magictunnel-tunnel-pod
export KUBECONFIG
if [ "$MT_NODE" = 1 ]; then
  KUBECONFIG="$(e2e/cluster/local.sh up)"
  # Release binaries, images imported into containerd, `helm upgrade --install`, rollout waited.
  e2e/cluster/install-chart.sh >/dev/null
else
  cargo build -q -p magictunnel-operator
  KUBECONFIG="$(e2e/cluster/local.sh up)"
  "$TARGET/debug/mt-e2e" setup
  RUST_LOG=info,operator=debug e2e/cluster/host-operator.sh "$TARGET/debug/magictunnel-operator" \
    operator-local "$METRICS_PORT" >"$MT_CLUSTER_DIR/operator.log" 2>&1 &
  OPERATOR_PID=$!
fi

# Every file in e2e/tests (and the crate's own unit tests), cluster tests included; all files
# run even if one fails.
echo "e2e: $(ls e2e/tests/*.rs | xargs -n1 basename | tr '\n' ' ')against $KUBECONFIG" >&2
# The scale test runs after the others and alone: it counts the operator's reconciles.
cargo test -p magictunnel-e2e --tests --no-fail-fast -- --ignored --test-threads "$THREADS" \
  --skip three_hundred_tunnels "$@"
# The operator at scale (issue #9): 300 tunnels (pinned to no node: the control-plane path),
# measured on the leader: its metrics and its process's peak RSS. MT_E2E_SCALE=0 skips it.
if [ "${MT_E2E_SCALE:-1}" != 0 ] && [ $# -eq 0 ]; then
  if [ "$MT_NODE" = 1 ]; then
    leader="$(k -n "$NS" get lease magictunnel-operator -o jsonpath='{.spec.holderIdentity}')"
    leader_ip="$(k -n "$NS" get pod "$leader" -o jsonpath='{.status.podIP}')"
    # The leader pod's process, seen from the host: the one whose POD_NAME is the holder.
    for pid in $(pgrep -f /usr/local/bin/magictunnel-operator); do
      if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "POD_NAME=$leader"; then
        OPERATOR_PID_SCALE=$pid
      fi
    done
    export MT_E2E_OPERATOR_METRICS="http://$leader_ip:8080/metrics"
    export MT_E2E_OPERATOR_PID="${OPERATOR_PID_SCALE:?no host process for the leader pod $leader}"
  else
    export MT_E2E_OPERATOR_METRICS="http://127.0.0.1:$METRICS_PORT/metrics" MT_E2E_OPERATOR_PID="$OPERATOR_PID"
  fi
  cargo test -p magictunnel-e2e --test scale -- --ignored --nocapture
fi
# The operator acted only within its RBAC: a Forbidden answer would have failed a reconcile.
# (Read whole first: `grep -q` closing a pipe early would fail the pipeline under pipefail.)
logs="$(operator_log)"
if grep -qE 'cannot [a-z]+ resource' <<<"$logs"; then
  echo "the operator was refused by RBAC:" >&2; grep -E 'cannot [a-z]+ resource' <<<"$logs" | head -5 >&2
  exit 1
fi
echo "e2e: passed; the operator logs ($(wc -l <<<"$logs") lines) show no RBAC refusal" >&2
