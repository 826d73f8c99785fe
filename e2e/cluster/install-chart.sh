#!/usr/bin/env bash
# The operator's images and the Helm chart on the local node (e2e/cluster/local.sh up first):
# builds the release binaries, assembles and imports the images (e2e/images/build.sh), then
# `helm upgrade --install mt charts/magictunnel -n magictunnel-system` with e2e/cluster/values.yaml
# (the values e2e/kind.sh uses too) and waits for the operator to be Ready. Prints the kubeconfig path.
#
#   e2e/cluster/install-chart.sh [extra helm args, e.g. --set replicas=2]
#
# Env: MT_CLUSTER_DIR (as local.sh), KUBECONFIG (default: that cluster's admin.kubeconfig),
#      MT_SKIP_IMAGES=1 (images already imported), MT_RELEASE (default mt), MT_NAMESPACE
#      (default magictunnel-system), MAGICTUNNEL_CACHE (helm at $MAGICTUNNEL_CACHE/bin/helm).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster}"
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
export KUBECONFIG="${KUBECONFIG:-$DIR/admin.kubeconfig}"
RELEASE="${MT_RELEASE:-mt}"
NS="${MT_NAMESPACE:-magictunnel-system}"
HELM="$(command -v helm || echo "$CACHE/bin/helm")"
KUBECTL="$("$ROOT/e2e/cluster/build-k8s.sh" kubectl)/kubectl"

[ -f "$KUBECONFIG" ] || { echo "no kubeconfig at $KUBECONFIG (e2e/cluster/local.sh up)" >&2; exit 1; }
if [ "${MT_SKIP_IMAGES:-0}" != 1 ]; then
  MT_IMAGE_TAGS="$(awk -F'"' '/^appVersion:/ {print $2}' "$ROOT/charts/magictunnel/Chart.yaml") e2e" \
    "$ROOT/e2e/images/build.sh" operator tunnel-pod >&2
fi
"$HELM" upgrade --install "$RELEASE" "$ROOT/charts/magictunnel" -n "$NS" --create-namespace \
  -f "$ROOT/e2e/cluster/values.yaml" --wait --timeout 180s "$@" >&2 || {
  echo "helm install failed; operator pods:" >&2
  "$KUBECTL" -n "$NS" get pods -o wide >&2 || true
  "$KUBECTL" -n "$NS" describe pods >&2 || true
  exit 1
}
"$KUBECTL" -n "$NS" rollout status deploy --timeout 120s >&2
"$KUBECTL" wait --for condition=Established crd/magictunnels.magictunnel.dev --timeout 60s >&2
echo "$KUBECONFIG"
