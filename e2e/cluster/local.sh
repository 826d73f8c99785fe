#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, without Docker: etcd + kube-apiserver +
# kube-controller-manager (garbage collector, namespaces, service accounts), all on loopback.
# No scheduler and no kubelet: pods are stored but never run, which is all the operator's e2e
# suite needs (tests mark pods Ready through the status subresource, as a kubelet would).
#
#   e2e/cluster/local.sh up     # prints the admin kubeconfig path
#   e2e/cluster/local.sh down
set -euo pipefail

DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster}"
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
K8S_VERSION="${K8S_VERSION:-v1.34.3}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
ETCD_PORT="${MT_ETCD_PORT:-23790}"
API_PORT="${MT_API_PORT:-64430}"
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { echo "local-cluster: $*" >&2; }

stop_pidfile() {
  local f="$1"
  if [ -f "$f" ]; then
    local pid; pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  fi
}

down() {
  for c in kube-controller-manager kube-apiserver etcd; do stop_pidfile "$DIR/$c.pid"; done
  rm -rf "$DIR"
}

wait_for() {
  local what="$1" cmd="$2" tries="${3:-120}"
  for _ in $(seq "$tries"); do
    if eval "$cmd" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not come up; last log lines:"
  tail -n 30 "$DIR/$what.log" >&2 || true
  return 1
}

up() {
  "$HERE/build-k8s.sh" kube-apiserver kube-controller-manager >/dev/null
  command -v etcd >/dev/null || { log "etcd not found (apt-get install etcd-server)"; exit 1; }
  down
  mkdir -p "$DIR/etcd" "$DIR/certs"
  chmod 700 "$DIR"

  # Service-account signing key and a static admin token (system:masters), loopback only.
  openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
  local token; token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "$token,admin,admin,system:masters" > "$DIR/tokens.csv"

  etcd --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --unsafe-no-fsync >"$DIR/etcd.log" 2>&1 &
  echo $! > "$DIR/etcd.pid"
  wait_for etcd "curl -sf http://127.0.0.1:$ETCD_PORT/health"

  "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --cert-dir "$DIR/certs" \
    --token-auth-file "$DIR/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$DIR/sa.pub" --service-account-signing-key-file "$DIR/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    >"$DIR/kube-apiserver.log" 2>&1 &
  echo $! > "$DIR/kube-apiserver.pid"

  cat > "$DIR/admin.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: https://127.0.0.1:$API_PORT
      insecure-skip-tls-verify: true
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: local
    context: {cluster: local, user: admin}
current-context: local
KUBECONFIG
  chmod 600 "$DIR/admin.kubeconfig"
  # The operator acts as its ServiceAccount, so the chart's RBAC is what it really gets.
  sed -e 's/^      token: .*/&\n      as: system:serviceaccount:magictunnel-system:mt-magictunnel\n      as-groups: [system:serviceaccounts, system:serviceaccounts:magictunnel-system, system:authenticated]/' \
    "$DIR/admin.kubeconfig" > "$DIR/operator.kubeconfig"
  chmod 600 "$DIR/operator.kubeconfig"
  wait_for kube-apiserver "curl -sfk -H 'Authorization: Bearer $token' https://127.0.0.1:$API_PORT/readyz"

  "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/admin.kubeconfig" \
    --controllers serviceaccount,garbagecollector,namespace \
    --service-account-private-key-file "$DIR/sa.key" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    >"$DIR/kube-controller-manager.log" 2>&1 &
  echo $! > "$DIR/kube-controller-manager.pid"
  wait_for kube-controller-manager "curl -sfk -H 'Authorization: Bearer $token' https://127.0.0.1:$API_PORT/api/v1/namespaces/default/serviceaccounts/default"

  log "up: $("$BIN/kube-apiserver" --version) on https://127.0.0.1:$API_PORT"
  echo "$DIR/admin.kubeconfig"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
