#!/usr/bin/env bash
# Dataplane demo: two network namespaces ("edge" and "branch") joined by a veth "Internet".
# 1. GRE: a tunnel-pod in each, a site LAN address on each side routed through the tunnel.
# 2. IPsec: a second pair of tunnel-pods with static SAs (ESP AES-256-GCM in UDP 4500).
# Prints the health states, pings through both, shows the metrics, then tears everything down
# (on Enter when run from a terminal).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p magictunnel-tunnel-pod
BIN="$PWD/target/release/tunnel-pod"
A=mtdemo-edge B=mtdemo-branch DIR="$(mktemp -d /tmp/mtdemo.XXXXXX)"
cleanup() {
  pkill -TERM -f "tunnel-pod run --config $DIR/" 2>/dev/null || true
  sleep 0.5
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
cleanup; mkdir -p "$DIR"

ip netns add "$A"; ip netns add "$B"
ip link add mtdemo0 netns "$A" type veth peer name mtdemo1 netns "$B"
ip -n "$A" addr add 192.0.2.1/24 dev mtdemo0; ip -n "$B" addr add 192.0.2.2/24 dev mtdemo1
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set mtdemo0 up; ip -n "$B" link set mtdemo1 up
# Each site's LAN, as an address on its loopback.
ip -n "$A" addr add 10.20.1.1/32 dev lo; ip -n "$B" addr add 10.20.2.1/32 dev lo

config() { # name local customer interface-address remote-lan
  cat <<YAML
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: demo/$1
type: GRE
localEndpoint: $2
customerEndpoint: $3
interfaceAddress: $4
ttl: 64
mssClamp: {mode: Auto}
routes: [{prefix: $5}]
healthCheck: {enabled: true, type: Reply, rate: Mid}
gre: {key: 1001}
http: {listen: 127.0.0.1:9180}
YAML
}
config edge 192.0.2.1 192.0.2.2 10.200.0.0/31 10.20.2.0/24 >"$DIR/edge.yaml"
config branch 192.0.2.2 192.0.2.1 10.200.0.1/31 10.20.1.0/24 >"$DIR/branch.yaml"
"$BIN" check --config "$DIR/edge.yaml"
ip netns exec "$A" "$BIN" run --config "$DIR/edge.yaml" --interface mt-edge 2>"$DIR/edge.log" &
ip netns exec "$B" "$BIN" run --config "$DIR/branch.yaml" --interface mt-branch 2>"$DIR/branch.log" &

printf 'waiting for the tunnel to report ready'
for _ in $(seq 50); do
  if ip netns exec "$A" curl -sf 127.0.0.1:9180/readyz >/dev/null; then break; fi
  printf .; sleep 0.2
done
echo
echo "== edge /readyz: $(ip netns exec "$A" curl -s 127.0.0.1:9180/readyz)"
echo "== branch /readyz: $(ip netns exec "$B" curl -s 127.0.0.1:9180/readyz)"
echo "== edge routes"; ip -n "$A" route show dev mt-edge
echo "== ping branch LAN from edge LAN, through GRE"
ip netns exec "$A" ping -c 3 -i 0.2 -I 10.20.1.1 10.20.2.1
echo "== edge metrics"
ip netns exec "$A" curl -s 127.0.0.1:9180/metrics \
  | grep -E '^magictunnel_(tunnel_packets_total|health_state\{.*\} 1|probes_total|probes_reflected_total)'
echo "== edge log"; cat "$DIR/edge.log"

echo; echo "== IPsec: ESP AES-256-GCM in UDP 4500 with static SAs, beside the GRE tunnel"
K1=$(head -c 36 /dev/urandom | base64 -w0) K2=$(head -c 36 /dev/urandom | base64 -w0)
ipsec() { # name local customer interface-address out-spi out-key in-spi in-key
  cat <<YAML
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: demo/$1
type: IPsec
localEndpoint: $2
customerEndpoint: $3
interfaceAddress: $4
healthCheck: {enabled: true, type: Reply, rate: Mid}
ipsec:
  replayProtection: true
  staticSa:
    outbound: {spi: $5, encryption: AES-GCM-16-256, encryptionKey: "$6"}
    inbound: {spi: $7, encryption: AES-GCM-16-256, encryptionKey: "$8"}
http: {listen: 127.0.0.1:9181}
YAML
}
ipsec edge-ipsec 192.0.2.1 192.0.2.2 10.201.0.0/31 4097 "$K1" 8194 "$K2" >"$DIR/edge-ipsec.yaml"
ipsec branch-ipsec 192.0.2.2 192.0.2.1 10.201.0.1/31 8194 "$K2" 4097 "$K1" >"$DIR/branch-ipsec.yaml"
ip netns exec "$A" "$BIN" run --config "$DIR/edge-ipsec.yaml" --interface mt-edge-esp 2>"$DIR/edge-ipsec.log" &
ip netns exec "$B" "$BIN" run --config "$DIR/branch-ipsec.yaml" --interface mt-branch-esp 2>"$DIR/branch-ipsec.log" &
for _ in $(seq 50); do
  if ip netns exec "$A" curl -sf 127.0.0.1:9181/readyz >/dev/null; then break; fi
  sleep 0.2
done
echo "== edge IPsec /readyz: $(ip netns exec "$A" curl -s 127.0.0.1:9181/readyz)"
ip netns exec "$A" ping -c 3 -i 0.2 10.201.0.1
ip netns exec "$A" curl -s 127.0.0.1:9181/metrics \
  | grep -E '^magictunnel_(tunnel_packets_total|health_state\{.*\} 1|nat_keepalives_sent_total)'
if [ -t 0 ]; then read -r -p "Press Enter to tear the demo down. "; fi
