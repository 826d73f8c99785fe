#!/usr/bin/env bash
# The same e2e suite on kind, for machines with Docker (this project's CI VM has none, so this
# script is not exercised there: see README). Builds both images, loads them, installs the chart
# and runs the suite against the in-cluster operator.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER:-magictunnel}"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
cargo build --release -p magictunnel-operator -p magictunnel-tunnel-pod -p magictunnel-e2e
for bin in magictunnel-operator tunnel-pod; do
  dir="$(mktemp -d)"; cp "target/release/$bin" "$dir/"
  printf 'FROM gcr.io/distroless/cc-debian12\nCOPY %s /usr/local/bin/%s\nENTRYPOINT ["/usr/local/bin/%s"]\n' "$bin" "$bin" "$bin" > "$dir/Dockerfile"
  image="magictunnel/${bin#magictunnel-}:e2e"
  docker build -q -t "$image" "$dir"; kind load docker-image --name "$CLUSTER" "$image"
done
helm upgrade --install mt charts/magictunnel -n magictunnel-system --create-namespace \
  --set-string accountId=0123456789abcdef0123456789abcdef \
  --set image.tag=e2e --set tunnelImage.tag=e2e --set image.pullPolicy=Never --set tunnelImage.pullPolicy=Never --wait
kubectl -n magictunnel-system port-forward deploy/mt-magictunnel 18080:8080 >/dev/null 2>&1 &
trap 'kill $!' EXIT
MT_E2E_OPERATOR_METRICS=http://127.0.0.1:18080/metrics \
  cargo test -p magictunnel-e2e --test operator -- --ignored --test-threads 4 "$@"
