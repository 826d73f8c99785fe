#!/usr/bin/env bash
# The e2e cluster on kind, for machines with Docker and kind. It CANNOT RUN on this project's CI VM
# (no Docker engine, no registry: ../shared/ENVIRONMENT.md), where e2e/cluster/local.sh +
# e2e/cluster/install-chart.sh do the same on a node built here. Keep the two in step: the same
# chart values (e2e/cluster/values.yaml), the same image names and tags, the same suite.
#
#   e2e/kind.sh up      # kind cluster, both images built with e2e/images/*.Dockerfile and loaded,
#                       # the chart installed; prints the kubeconfig path
#   e2e/kind.sh test    # the e2e suite against it (cargo test -p magictunnel-e2e)
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
    shift
    export KUBECONFIG="$KUBECONFIG_FILE"
    kubectl -n "$NS" port-forward deploy/mt-magictunnel 18080:8080 >/dev/null 2>&1 &
    trap 'kill $!' EXIT
    MT_E2E_OPERATOR_METRICS=http://127.0.0.1:18080/metrics \
      cargo test -p magictunnel-e2e -- --ignored --test-threads 4 "$@" ;;
  down) kind delete cluster --name "$CLUSTER"; rm -f "$KUBECONFIG_FILE" ;;
  *) echo "usage: $0 up|test|down" >&2; exit 2 ;;
esac
