#!/usr/bin/env bash
# The operator on this host against the control-plane-only cluster (local.sh with MT_NODE=0),
# as its ServiceAccount (operator.kubeconfig impersonates it, so the chart's RBAC is what it
# gets), with the Lease identity NAME. Execs, so a caller's `$!` is the operator's PID.
#   e2e/cluster/host-operator.sh BINARY NAME METRICS_PORT   (RUST_LOG default: info)
set -euo pipefail
BIN="$1" NAME="$2" PORT="$3"
DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster}"
KUBECONFIG="$DIR/operator.kubeconfig" POD_NAMESPACE=magictunnel-system POD_NAME="$NAME" \
  RUST_LOG="${RUST_LOG:-info}" exec "$BIN" run \
    --account-id 0123456789abcdef0123456789abcdef \
    --tunnel-image magictunnel/tunnel-pod:e2e \
    --listen "127.0.0.1:$PORT" --log-format text
