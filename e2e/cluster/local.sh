#!/usr/bin/env bash
# A real single-node Kubernetes on this machine (root, no Docker, no registry, no systemd):
#   etcd (Debian) + kube-apiserver + kube-controller-manager + kube-scheduler + kube-proxy +
#   kubelet (built from Go modules by build-k8s.sh) + containerd/runc/CNI plugins (Debian), with
#   a containerd of its own (config, root, state and socket under the cluster directory).
#
#   e2e/cluster/local.sh up     # prints the admin kubeconfig path
#   e2e/cluster/local.sh down   # stops everything and fails loudly if anything is left behind
#   e2e/cluster/local.sh check  # only the leftover check of `down`
#
# Env: MT_CLUSTER_DIR (default /tmp/magictunnel-cluster), MT_API_PORT (64430), MT_ETCD_PORT (23790),
#      MT_NODE (1; 0 = the control plane alone on loopback, no node: pods stay Pending),
#      MT_NODE_IP (10.99.0.1), MT_POD_CIDR (10.244.0.0/24), MAGICTUNNEL_CACHE, K8S_VERSION.
#
# Networking. The node's address (MT_NODE_IP) lives on `mt-node0` (a bridge without ports: this
# kernel has no dummy module) that `up`
# creates, so nothing listens on the VM's real interfaces and the address does not depend on the
# VM's network. The apiserver binds it and advertises it: the `kubernetes` Service (10.96.0.1:443)
# has it as its endpoint, and kube-proxy (iptables mode) DNATs pods' traffic to it. Pods on the
# bridge (cni0, MT_POD_CIDR) reach the node address through their gateway, so in-cluster config
# (KUBERNETES_SERVICE_HOST=10.96.0.1) works. hostNetwork pods (tunnel pods) have the node's
# network namespace; their pod IP is the node address.
#
# Identities: one CA; the apiserver serving cert (SANs: node IP, 10.96.0.1, 127.0.0.1, kubernetes,
# kubernetes.default(.svc(.cluster.local))); client certs for the kubelet (system:node:<name> in
# system:nodes, checked by the Node authorizer and NodeRestriction), controller-manager (with
# per-controller ServiceAccount credentials), scheduler, kube-proxy (system:node-proxier) and the
# apiserver's kubelet client (bound to system:kubelet-api-admin). The kubelet serves a cert from
# the same CA and authorizes by webhook. The admin uses a static token (system:masters).
#
# Only one node-mode cluster runs at a time on a machine (cni0, mt-node0, kube-proxy's chains and
# the kubelet's cgroups are host-wide); MT_NODE=0 clusters can run beside it on other ports.
set -euo pipefail

DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster}"
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
K8S_VERSION="${K8S_VERSION:-v1.34.3}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
ETCD_PORT="${MT_ETCD_PORT:-23790}"
API_PORT="${MT_API_PORT:-64430}"
NODE="${MT_NODE:-1}"
NODE_IP="${MT_NODE_IP:-10.99.0.1}"
POD_CIDR="${MT_POD_CIDR:-10.244.0.0/24}"
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
NODE_IF=mt-node0
BRIDGE=cni0
CNI_NET=mt-local
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { echo "local-cluster: $*" >&2; }

# stop_pidfile FILE [TENTHS]: SIGTERM, then SIGKILL after TENTHS/10 s (default 10 s).
stop_pidfile() {
  local f="$1" tenths="${2:-100}"
  if [ -f "$f" ]; then
    local pid; pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    local t0=$SECONDS
    for _ in $(seq "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
    if [ "${MT_DEBUG:-0}" = 1 ]; then log "stopped $(basename "$f" .pid) in $((SECONDS - t0))s"; fi
  fi
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

# ---------------------------------------------------------------- certificates

pki() { echo "$DIR/pki/$1"; }

# sign NAME CN O EXTENDED_KEY_USAGE [SAN]
sign() {
  local name="$1" cn="$2" o="$3" eku="$4" san="${5:-}" subj="/CN=$2"
  [ -n "$o" ] && subj="$subj/O=$o"
  openssl ecparam -name prime256v1 -genkey -noout -out "$(pki "$name.key")" 2>/dev/null
  openssl req -new -key "$(pki "$name.key")" -subj "$subj" -out "$(pki "$name.csr")" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } > "$(pki "$name.ext")"
  openssl x509 -req -in "$(pki "$name.csr")" -CA "$(pki ca.crt)" -CAkey "$(pki ca.key)" -CAcreateserial \
    -days 30 -sha256 -extfile "$(pki "$name.ext")" -out "$(pki "$name.crt")" 2>/dev/null
  rm -f "$(pki "$name.csr")" "$(pki "$name.ext")"
  chmod 600 "$(pki "$name.key")"
}

make_pki() {
  mkdir -p "$DIR/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out "$(pki ca.key)" 2>/dev/null
  openssl req -x509 -new -key "$(pki ca.key)" -subj "/CN=magictunnel-local-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$(pki ca.crt)" 2>/dev/null
  chmod 600 "$(pki ca.key)"
  sign apiserver kube-apiserver "" serverAuth \
    "IP:$NODE_IP,IP:$SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  sign apiserver-kubelet-client kube-apiserver-kubelet-client "" clientAuth
  sign controller-manager system:kube-controller-manager "" clientAuth
  sign scheduler system:kube-scheduler "" clientAuth
  sign kube-proxy system:kube-proxy "" clientAuth
  sign kubelet-client "system:node:$NODE_NAME" system:nodes clientAuth
  sign kubelet-serving "system:node:$NODE_NAME" system:nodes serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  # Service-account token signing key.
  openssl genrsa -out "$(pki sa.key)" 2048 2>/dev/null
  openssl rsa -in "$(pki sa.key)" -pubout -out "$(pki sa.pub)" 2>/dev/null
  chmod 600 "$(pki sa.key)"
}

# kubeconfig FILE SERVER USER_YAML
kubeconfig() {
  cat > "$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: local
    cluster:
      server: $2
      certificate-authority: $(pki ca.crt)
users:
  - name: user
    user:
$3
contexts:
  - name: local
    context: {cluster: local, user: user}
current-context: local
KUBECONFIG
  chmod 600 "$1"
}

cert_user() { printf '      client-certificate: %s\n      client-key: %s' "$(pki "$1.crt")" "$(pki "$1.key")"; }

# ---------------------------------------------------------------- iptables

# Remove every chain named KUBE-* or CNI-* (kube-proxy, kubelet canaries, CNI bridge/portmap) and
# every rule jumping to one, in each table, leaving other rules as they are.
strip_iptables() {
  local fam tmp
  for fam in iptables ip6tables; do
    command -v "$fam-save" >/dev/null || continue
    tmp="$(mktemp)"
    "$fam-save" > "$tmp" 2>/dev/null || true
    if grep -qE 'KUBE-|CNI-' "$tmp"; then
      /usr/bin/python3 -c '
import re, sys
for line in open(sys.argv[1]):
    s = line.rstrip("\n")
    if re.match(r"^:(KUBE-|CNI-)", s):
        continue
    if s.startswith("-A ") and re.search(r"(^-A (KUBE-|CNI-))|(-[jg] (KUBE-|CNI-))", s):
        continue
    print(s)
' "$tmp" | "$fam-restore" || log "$fam-restore failed"
    fi
    rm -f "$tmp"
  done
}

# ---------------------------------------------------------------- leftovers

# cni-* network namespaces that appeared after `up` (containerd's pod sandboxes).
our_netns() {
  [ -f "$DIR/netns-before" ] || return 0
  ls /var/run/netns 2>/dev/null | grep '^cni-' | grep -vxF -f "$DIR/netns-before" || true
}

leftovers() {
  local left=()
  for c in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    [ -f "$DIR/$c.pid" ] && kill -0 "$(cat "$DIR/$c.pid")" 2>/dev/null && left+=("process $c ($(cat "$DIR/$c.pid"))")
  done
  # Shims and containers started by our containerd carry our socket or state directory.
  local p
  for p in $(pgrep -f "containerd-shim.*$DIR/containerd" 2>/dev/null || true); do left+=("process containerd-shim $p"); done
  for p in $(pgrep -f -- "$DIR/containerd/containerd.sock" 2>/dev/null || true); do
    [ "$p" = "$$" ] || left+=("process $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-80) ($p)")
  done
  while read -r m; do [ -n "$m" ] && left+=("mount $m"); done < <(awk -v d="$DIR" 'index($2, d) == 1 {print $2}' /proc/self/mounts)
  # Host-wide things exist only for a node-mode cluster (a control-plane-only one may run beside one).
  if [ -f "$DIR/node" ]; then
  local ns
  for ns in $(our_netns); do left+=("netns $ns"); done
  for i in "$BRIDGE" "$NODE_IF"; do ip link show "$i" >/dev/null 2>&1 && left+=("interface $i"); done
  for fam in iptables ip6tables; do
    command -v "$fam-save" >/dev/null || continue
    local n; n="$("$fam-save" 2>/dev/null | grep -cE 'KUBE-|CNI-' || true)"
    [ "$n" -gt 0 ] && left+=("$n $fam lines with KUBE-/CNI- chains")
  done
  fi
  if [ ${#left[@]} -gt 0 ]; then
    log "LEFT BEHIND:"; printf '  %s\n' "${left[@]}" >&2
    return 1
  fi
}

down() {
  local rc=0
  if [ -f "$DIR/node" ]; then
    # No new pods: the scheduler and the controllers (ReplicaSets, DaemonSets) stop first; then the
    # kubelet tears every pod down through the CRI (CNI DEL removes veths and IPs).
    stop_pidfile "$DIR/kube-scheduler.pid"
    stop_pidfile "$DIR/kube-controller-manager.pid"
    if [ -f "$DIR/kubelet.pid" ] && kill -0 "$(cat "$DIR/kubelet.pid")" 2>/dev/null; then
      "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" delete pods --all -A --grace-period=1 --wait=false \
        --request-timeout=10s >/dev/null 2>&1 || true
      for _ in $(seq 60); do
        [ -z "$(ip -o link show master "$BRIDGE" 2>/dev/null)" ] &&
          [ -z "$(ctr -a "$DIR/containerd/containerd.sock" -n k8s.io tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"')" ] && break
        sleep 0.5
      done
    fi
    log "down: pods gone after ${SECONDS}s"
    stop_pidfile "$DIR/kubelet.pid"
    # Whatever the kubelet did not finish: kill the tasks and remove containers and sandboxes.
    local sock="$DIR/containerd/containerd.sock"
    if [ -S "$sock" ]; then
      local t
      for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
        ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
      done
      sleep 0.5
      for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
        ctr -a "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
      done
      for t in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
        ctr -a "$sock" -n k8s.io containers delete "$t" >/dev/null 2>&1 || true
      done
    fi
    stop_pidfile "$DIR/containerd.pid"
    log "down: kubelet and containerd stopped after ${SECONDS}s"
    local p
    for p in $(pgrep -f "containerd-shim.*$DIR/containerd" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
    stop_pidfile "$DIR/kube-proxy.pid"
    [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >"$DIR/kube-proxy-cleanup.log" 2>&1 || true
    strip_iptables
    # Sandbox network namespaces the CRI created and did not delete (containerd 1.6 puts them in
    # /var/run/netns/cni-*; those that were not there before `up` are ours).
    local ns
    for ns in $(our_netns); do ip netns delete "$ns" 2>/dev/null || true; done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
    ip link show "$NODE_IF" >/dev/null 2>&1 && ip link delete "$NODE_IF"
    # Mounts below the cluster directory (secret tmpfs volumes, container rootfs, shm), deepest first.
    local m
    for m in $(awk -v d="$DIR" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    # The kubelet's cgroups (cgroupfs driver, rooted at /kubepods).
    local c
    for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
      [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
    # The bridge plugin turns on forwarding; put back what `up` found.
    [ -f "$DIR/ip_forward" ] && cat "$DIR/ip_forward" > /proc/sys/net/ipv4/ip_forward
  fi
  for c in kube-proxy kube-scheduler kube-controller-manager; do stop_pidfile "$DIR/$c.pid"; done
  # The apiserver drains its watches for a long while on SIGTERM; nothing here needs that.
  stop_pidfile "$DIR/kube-apiserver.pid" 20
  stop_pidfile "$DIR/etcd.pid"
  if ! leftovers; then
    log "down did not clean up (cluster directory kept: $DIR)"
    rc=1
  else
    rm -rf "$DIR"
  fi
  return $rc
}

# ---------------------------------------------------------------- node

write_containerd_config() {
  local c="$DIR/containerd"
  mkdir -p "$c/root" "$c/state" "$c/opt" "$DIR/cni/net.d" "$DIR/cni/ipam"
  cat > "$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "magictunnel.local/pause:3.10"
  # This VM denies negative oom_score_adj (no CAP_SYS_RESOURCE): without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$c/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
TOML
  local gw; gw="$(echo "$POD_CIDR" | cut -d/ -f1 | awk -F. '{print $1"."$2"."$3"."$4+1}')"
  cat > "$DIR/cni/net.d/10-$CNI_NET.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$gw"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

write_kubelet_config() {
  mkdir -p "$DIR/kubelet" "$DIR/pod-logs" "$DIR/volume-plugins"
  cat > "$DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $(pki kubelet-serving.crt)
tlsPrivateKeyFile: $(pki kubelet-serving.key)
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $(pki ca.crt)}
authorization:
  mode: Webhook
# cgroup v1 and no systemd as PID 1.
cgroupDriver: cgroupfs
failSwapOn: false
# Mounted Secrets (the PSK) are refreshed on each pod sync: a rotated key reaches the pod in
# seconds rather than the default minute.
syncFrequency: 10s
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
podLogsDir: $DIR/pod-logs
volumePluginDir: $DIR/volume-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
staticPodPath: ""
maxPods: 110
serializeImagePulls: false
# Locally imported images are never pulled again: never garbage-collect them, and evict only
# when the disk is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
YAML
}

write_kube_proxy_config() {
  cat > "$DIR/kube-proxy-config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's sysctls alone: no conntrack table resizing or timeout changes, and no
# route_localnet (NodePorts on 127.0.0.1 are not needed).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
YAML
}

# ---------------------------------------------------------------- up

up() {
  local components=(kube-apiserver kube-controller-manager kubectl)
  [ "$NODE" = 1 ] && components+=(kube-scheduler kubelet kube-proxy)
  "$HERE/build-k8s.sh" "${components[@]}" >/dev/null
  command -v etcd >/dev/null || { log "etcd not found (.ci/install-tools.sh, or apt-get install etcd-server)"; exit 1; }
  if [ "$NODE" = 1 ]; then
    for t in containerd ctr runc iptables conntrack; do
      command -v "$t" >/dev/null || { log "$t not found (run .ci/install-tools.sh)"; exit 1; }
    done
    [ -x /usr/lib/cni/bridge ] || { log "CNI plugins not found in /usr/lib/cni (run .ci/install-tools.sh)"; exit 1; }
    if ip link show "$NODE_IF" >/dev/null 2>&1 && [ ! -f "$DIR/node" ]; then
      log "$NODE_IF exists: another node-mode cluster runs here (its MT_CLUSTER_DIR's local.sh down stops it)"
      exit 1
    fi
  fi
  down >/dev/null || { log "a previous cluster in $DIR could not be cleaned up"; exit 1; }
  mkdir -p "$DIR/etcd"
  chmod 700 "$DIR"
  make_pki
  local bind=127.0.0.1 server="https://127.0.0.1:$API_PORT"
  if [ "$NODE" = 1 ]; then
    touch "$DIR/node"
    { ls /var/run/netns 2>/dev/null | grep '^cni-' || true; echo mt-none; } > "$DIR/netns-before"
    cat /proc/sys/net/ipv4/ip_forward > "$DIR/ip_forward"
    # No dummy module in this kernel: a bridge without ports serves as one.
    ip link add "$NODE_IF" type bridge
    ip addr add "$NODE_IP/32" dev "$NODE_IF"
    ip link set "$NODE_IF" up
    bind="$NODE_IP"; server="https://$NODE_IP:$API_PORT"
  fi

  # A static admin token (system:masters).
  local token; token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  echo "$token,admin,admin,system:masters" > "$DIR/tokens.csv"
  chmod 600 "$DIR/tokens.csv"

  etcd --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --unsafe-no-fsync >"$DIR/etcd.log" 2>&1 &
  echo $! > "$DIR/etcd.pid"
  wait_for etcd "curl -sf http://127.0.0.1:$ETCD_PORT/health"

  local admission=()
  [ "$NODE" = 1 ] && admission=(--enable-admission-plugins NodeRestriction)
  "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$bind" --advertise-address "$bind" --secure-port "$API_PORT" \
    --tls-cert-file "$(pki apiserver.crt)" --tls-private-key-file "$(pki apiserver.key)" \
    --client-ca-file "$(pki ca.crt)" \
    --token-auth-file "$DIR/tokens.csv" \
    --kubelet-client-certificate "$(pki apiserver-kubelet-client.crt)" --kubelet-client-key "$(pki apiserver-kubelet-client.key)" \
    --kubelet-certificate-authority "$(pki ca.crt)" --kubelet-preferred-address-types InternalIP \
    --authorization-mode Node,RBAC "${admission[@]}" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$(pki sa.pub)" --service-account-signing-key-file "$(pki sa.key)" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true \
    >"$DIR/kube-apiserver.log" 2>&1 &
  echo $! > "$DIR/kube-apiserver.pid"

  kubeconfig "$DIR/admin.kubeconfig" "$server" "      token: $token"
  # The operator acts as its ServiceAccount, so the chart's RBAC is what it really gets.
  kubeconfig "$DIR/operator.kubeconfig" "$server" "      token: $token
      as: system:serviceaccount:magictunnel-system:mt-magictunnel
      as-groups: [system:serviceaccounts, system:serviceaccounts:magictunnel-system, system:authenticated]"
  kubeconfig "$DIR/controller-manager.kubeconfig" "$server" "$(cert_user controller-manager)"
  kubeconfig "$DIR/scheduler.kubeconfig" "$server" "$(cert_user scheduler)"
  kubeconfig "$DIR/kube-proxy.kubeconfig" "$server" "$(cert_user kube-proxy)"
  kubeconfig "$DIR/kubelet.kubeconfig" "$server" "$(cert_user kubelet-client)"
  local kc=("$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig")
  wait_for kube-apiserver "${kc[*]} get --raw /readyz"

  if [ "$NODE" = 1 ]; then
    # The apiserver's client identity towards kubelets (logs, exec, port-forward).
    "${kc[@]}" create clusterrolebinding mt-apiserver-kubelet-client --clusterrole system:kubelet-api-admin \
      --user kube-apiserver-kubelet-client >/dev/null
    "$BIN/kube-controller-manager" \
      --kubeconfig "$DIR/controller-manager.kubeconfig" \
      --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
      --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
      --use-service-account-credentials \
      --controllers '*' \
      --service-account-private-key-file "$(pki sa.key)" --root-ca-file "$(pki ca.crt)" \
      --cluster-signing-cert-file "$(pki ca.crt)" --cluster-signing-key-file "$(pki ca.key)" \
      --cluster-cidr "$POD_CIDR" --service-cluster-ip-range "$SERVICE_CIDR" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
      >"$DIR/kube-controller-manager.log" 2>&1 &
  else
    "$BIN/kube-controller-manager" \
      --kubeconfig "$DIR/controller-manager.kubeconfig" \
      --controllers serviceaccount,garbagecollector,namespace \
      --service-account-private-key-file "$(pki sa.key)" --root-ca-file "$(pki ca.crt)" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
      >"$DIR/kube-controller-manager.log" 2>&1 &
  fi
  echo $! > "$DIR/kube-controller-manager.pid"
  wait_for kube-controller-manager "${kc[*]} -n default get serviceaccount default"

  if [ "$NODE" = 1 ]; then
    "$BIN/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
      --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
      >"$DIR/kube-scheduler.log" 2>&1 &
    echo $! > "$DIR/kube-scheduler.pid"

    write_kube_proxy_config
    "$BIN/kube-proxy" --config "$DIR/kube-proxy-config.yaml" >"$DIR/kube-proxy.log" 2>&1 &
    echo $! > "$DIR/kube-proxy.pid"

    write_containerd_config
    containerd --config "$DIR/containerd/config.toml" >"$DIR/containerd.log" 2>&1 &
    echo $! > "$DIR/containerd.pid"
    wait_for containerd "ctr -a $DIR/containerd/containerd.sock version"
    # The sandbox image the CRI needs for every pod.
    "$HERE/../images/build.sh" pause >/dev/null

    write_kubelet_config
    "$BIN/kubelet" --config "$DIR/kubelet-config.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
      --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
      --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
      >"$DIR/kubelet.log" 2>&1 &
    echo $! > "$DIR/kubelet.pid"
    wait_for kubelet "${kc[*]} get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" 240
    # The node-lifecycle controller removes node.kubernetes.io/not-ready once the node is Ready.
    wait_for kube-controller-manager "[ -z \"\$(${kc[*]} get node $NODE_NAME -o jsonpath='{.spec.taints}')\" ]" 120
    wait_for kube-proxy "iptables -t nat -S KUBE-SERVICES | grep -q $SERVICE_IP"
    wait_for kube-controller-manager "${kc[*]} -n default get configmap kube-root-ca.crt"
  fi

  if [ "$NODE" = 1 ]; then
    log "up: $("$BIN/kube-apiserver" --version) on $server; node $NODE_NAME Ready at $NODE_IP, pods on $BRIDGE $POD_CIDR"
  else
    log "up: $("$BIN/kube-apiserver" --version) on $server (control plane only, no node)"
  fi
  echo "$DIR/admin.kubeconfig"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check) leftovers ;;
  *) echo "usage: $0 up|down|check" >&2; exit 2 ;;
esac
