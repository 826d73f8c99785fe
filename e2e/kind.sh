#!/usr/bin/env bash
# The e2e cluster on kind, for machines with Docker and kind. It CANNOT RUN on this project's CI VM
# (no Docker engine, no registry: ../shared/ENVIRONMENT.md), where e2e/cluster/local.sh +
# e2e/cluster/install-chart.sh do the same on a node built here. Keep the two in step: the same
# chart values (e2e/cluster/values.yaml), the same image names and tags, the same suite.
#
#   e2e/kind.sh up      # kind cluster, both images built with e2e/images/*.Dockerfile and loaded,
#                       # the chart installed; prints the kubeconfig path
#   e2e/kind.sh test    # the e2e suite against it, run inside the node container (see below)
#   e2e/kind.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER:-magictunnel}"
KUBECONFIG_FILE="${MT_KIND_KUBECONFIG:-$HOME/.kube/kind-$CLUSTER}"
NS=magictunnel-system

up() {
  mkdir -p "$(dirname "$KUBECONFIG_FILE")"
  kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2
  kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
  local version; version="$(awk -F'"' '/^appVersion:/ {print $2}' charts/magictunnel/Chart.yaml)"
  for image in operator tunnel-pod; do
    docker build -q -f "e2e/images/$image.Dockerfile" -t "magictunnel/$image:e2e" -t "magictunnel/$image:$version" . >&2
    kind load docker-image --name "$CLUSTER" "magictunnel/$image:e2e" "magictunnel/$image:$version" >&2
  done
  KUBECONFIG="$KUBECONFIG_FILE" helm upgrade --install mt charts/magictunnel -n "$NS" --create-namespace \
    -f e2e/cluster/values.yaml --wait --timeout 180s >&2
  echo "$KUBECONFIG_FILE"
}

case "${1:-}" in
  up) up ;;
  test)
    # The suite puts branch routers on the node's host network (veths, network namespaces,
    # strongSwan) beside the hostNetwork tunnel pods, so on kind it runs where that network is:
    # inside the node container, with the test binaries copied in. Not exercised here (no Docker).
    shift
    node="$CLUSTER-control-plane"
    docker exec "$node" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      iproute2 iptables iputils-ping procps python3 strongswan-charon strongswan-swanctl libcharon-extra-plugins >/dev/null'
    cargo build -q -p magictunnel-tunnel-pod
    mapfile -t bins < <(cargo test -q -p magictunnel-e2e --tests --no-run --message-format=json |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and "test" in m["target"]["kind"]: print(m["executable"])')
    docker exec "$node" mkdir -p /mt-e2e
    for b in "${bins[@]}" "${CARGO_TARGET_DIR:-target}/debug/tunnel-pod"; do docker cp "$b" "$node:/mt-e2e/"; done
    rc=0
    for b in "${bins[@]}"; do
      docker exec -e KUBECONFIG=/etc/kubernetes/admin.conf -e MT_E2E_REQUIRED=1 \
        -e MT_TUNNEL_POD_BIN=/mt-e2e/tunnel-pod "$node" "/mt-e2e/$(basename "$b")" \
        --ignored --test-threads 1 --skip three_hundred_tunnels "$@" || rc=1
    done
    exit $rc ;;
  down) kind delete cluster --name "$CLUSTER"; rm -f "$KUBECONFIG_FILE" ;;
  *) echo "usage: $0 up|test|down" >&2; exit 2 ;;
esac
