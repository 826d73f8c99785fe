#!/usr/bin/env bash
# `make demo`: the whole product on a real single-node cluster built here (e2e/cluster/local.sh:
# etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, containerd + runc),
# the chart installed with images built from this checkout (e2e/cluster/install-chart.sh), two
# MagicTunnels (examples/node-demo.yaml: GRE and IPsec with a generated PSK), and a branch router
# in a network namespace joined to the node by a veth: a tunnel-pod process for GRE, strongSwan
# negotiating IKEv2 with the PSK read from the Secret for IPsec. Pings and a TCP transfer go
# through both tunnels; then `kubectl get mt` and `kubectl describe mt` are printed. Everything
# stays up until Enter (or Ctrl-C); then the cluster and the branch are torn down.
# Root only. Tools: .ci/install-tools.sh (make demo runs it first).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-netns.sh
. scripts/lib-netns.sh
need_strongswan || exit 1
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-demo}"
export MT_API_PORT="${MT_API_PORT:-64443}" MT_ETCD_PORT="${MT_ETCD_PORT:-23900}"
B=mtdemo-branch HOST_VETH=mtdemo-h DIR="$(mktemp -d /tmp/mtdemo-node.XXXXXX)"
PIDS=() NAMESPACES=("$B") WORK=$DIR
# MT_DEMO_REUSE=1: use the cluster KUBECONFIG names (chart installed) and leave it up.
REUSE="${MT_DEMO_REUSE:-0}"
cleanup() {
  reap_lab
  ip link del "$HOST_VETH" 2>/dev/null || true
  if [ "$REUSE" = 1 ]; then
    "$KUBECTL" delete --ignore-not-found -f examples/node-demo.yaml >/dev/null 2>&1 || true
  else
    e2e/cluster/local.sh down || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KUBECTL="$(e2e/cluster/build-k8s.sh kubectl)/kubectl"
export KUBECONFIG
if [ "$REUSE" = 1 ]; then
  cargo build -q --release -p magictunnel-tunnel-pod
else
  KUBECONFIG="$(e2e/cluster/local.sh up)"
  e2e/cluster/install-chart.sh >/dev/null
fi
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/tunnel-pod" # built by install-chart.sh

echo "== the branch: namespace $B (198.51.100.201, LANs 10.30.1.1 and 10.30.2.1) by a veth to the node"
ip netns add "$B"
ip -n "$B" link set lo up
ip link add "$HOST_VETH" type veth peer name branch0 netns "$B"
ip addr add 203.0.113.201/32 dev "$HOST_VETH"
ip addr add 203.0.113.202/32 dev "$HOST_VETH"
ip link set "$HOST_VETH" up
ip route add 198.51.100.201/32 dev "$HOST_VETH"
ip -n "$B" addr add 198.51.100.201/32 dev branch0
ip -n "$B" link set branch0 up
ip -n "$B" route add 203.0.113.0/24 dev branch0
ip -n "$B" addr add 10.30.1.1/32 dev lo
ip -n "$B" addr add 10.30.2.1/32 dev lo

"$KUBECTL" apply -f examples/node-demo.yaml

echo "== GRE peer: a tunnel-pod in the branch"
cat >"$DIR/branch-gre.yaml" <<YAML
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: branch/gre
type: GRE
localEndpoint: 198.51.100.201
customerEndpoint: 203.0.113.201
interfaceAddress: 10.210.0.1/31
healthCheck: {enabled: true, type: Reply, rate: Mid}
http: {listen: 127.0.0.1:9190}
YAML
ip netns exec "$B" "$BIN" run --config "$DIR/branch-gre.yaml" --interface mt-branch-gre 2>"$DIR/branch-gre.log" &
PIDS+=($!)

echo "== IPsec peer: strongSwan in the branch, with the PSK the operator generated"
for _ in $(seq 60); do
  "$KUBECTL" get secret demo-ipsec-psk >/dev/null 2>&1 && break
  sleep 1
done
FQDN=""
for _ in $(seq 60); do
  FQDN="$("$KUBECTL" get mt demo-ipsec -o jsonpath='{.status.ikeIds.fqdn}')"
  [ -n "$FQDN" ] && break
  sleep 1
done
SWAN="$DIR/charon"
charon_conf "$SWAN"
(umask 077 && cat >"$SWAN/swanctl.conf" <<CONF
connections {
    cluster {
        version = 2
        local_addrs = 198.51.100.201
        remote_addrs = 203.0.113.202
        proposals = aes256gcm16-prfsha384-ecp384
        dpd_delay = 5s
        local {
            auth = psk
            id = $FQDN
        }
        remote {
            auth = psk
            id = 203.0.113.202
        }
        children {
            cluster {
                mode = tunnel
                local_ts = 10.30.2.0/24
                remote_ts = 10.211.0.0/32
                esp_proposals = aes256gcm16
                start_action = none
            }
        }
    }
}
secrets {
    ike-cluster {
        id = $FQDN
        secret = 0s$("$KUBECTL" get secret demo-ipsec-psk -o jsonpath='{.data.psk}')
    }
}
CONF
)
start_charon "$SWAN" "$B"
echo -n "waiting for the tunnel pods to be Running"
for _ in $(seq 120); do
  [ "$("$KUBECTL" get pods -l app.kubernetes.io/managed-by=magictunnel-operator -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Running)" -ge 2 ] && break
  echo -n .; sleep 1
done
echo
for _ in $(seq 30); do
  swan "$SWAN" --initiate --child cluster --timeout 10 >"$SWAN/initiate.out" 2>&1 && break
  sleep 2
done
charon_installed "$SWAN" || { cat "$SWAN/initiate.out" >&2; "$KUBECTL" logs demo-ipsec-0 --tail 20 >&2; exit 1; }

echo "== ping through GRE (branch LAN 10.30.1.1 → the node's tunnel address 10.210.0.0)"
for _ in $(seq 30); do ip netns exec "$B" ping -c 1 -W 1 -I 10.30.1.1 10.210.0.0 >/dev/null 2>&1 && break; sleep 1; done
ip netns exec "$B" ping -c 3 -i 0.2 -I 10.30.1.1 10.210.0.0
echo "== ping through IPsec (branch LAN 10.30.2.1 → 10.211.0.0, the negotiated Child SA)"
for _ in $(seq 30); do
  ip netns exec "$B" ip route get 10.211.0.0 from 10.30.2.1 2>/dev/null | grep -q ipsec && break; sleep 0.2
done
ip netns exec "$B" ping -c 3 -i 0.2 -I 10.30.2.1 10.211.0.0
echo "== TCP through each tunnel: iperf3 for 3 s from the branch to the node"
iperf3 -s -B 10.210.0.0 -p 5201 -D -I "$DIR/iperf-gre.pid"
iperf3 -s -B 10.211.0.0 -p 5202 -D -I "$DIR/iperf-ipsec.pid"
sleep 0.5
PIDS+=("$(cat "$DIR/iperf-gre.pid")" "$(cat "$DIR/iperf-ipsec.pid")")
ip netns exec "$B" iperf3 -c 10.210.0.0 -p 5201 -B 10.30.1.1 -t 3 | tail -n 4
ip netns exec "$B" iperf3 -c 10.211.0.0 -p 5202 -B 10.30.2.1 -t 3 | tail -n 4

echo -n "waiting for Ready and Established"
for _ in $(seq 60); do
  n="$("$KUBECTL" get mt demo-gre demo-ipsec -o jsonpath='{range .items[*]}{range .status.conditions[?(@.status=="True")]}{.type}{"\n"}{end}{end}' | grep -cE '^(Ready|Established)$' || true)"
  [ "$n" -ge 4 ] && break
  echo -n .; sleep 1
done
echo
echo; echo "== kubectl get mt"; "$KUBECTL" get mt -o wide
echo; echo "== kubectl describe mt demo-ipsec"; "$KUBECTL" describe mt demo-ipsec
echo; echo "== operator and tunnel pods"; "$KUBECTL" get pods -A -o wide
echo; echo "== strongSwan: swanctl --list-sas"; swan "$SWAN" --list-sas 2>/dev/null
echo; echo "KUBECONFIG=$KUBECONFIG   (try: kubectl get mt; kubectl logs demo-gre-0)"
echo "rotate the IPsec PSK: kubectl annotate mt demo-ipsec magictunnel.dev/rotate-psk=\"\$(date +%s)\" --overwrite"
echo "tear down: press Enter here (or Ctrl-C); later by hand: MT_CLUSTER_DIR=$MT_CLUSTER_DIR e2e/cluster/local.sh down"
if [ -t 0 ]; then read -r -p "Press Enter to tear everything down. "; fi
