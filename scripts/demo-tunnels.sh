#!/usr/bin/env bash
# Dataplane demo: two network namespaces ("edge" and "branch") joined by a veth "Internet".
# 1. GRE: a tunnel-pod in each, a site LAN address on each side routed through the tunnel.
# 2. IPsec: a second pair of tunnel-pods with static SAs (ESP AES-256-GCM in UDP 4500).
# 3. IKEv2: strongSwan's charon in "branch" plays the customer's router and initiates IKEv2
#    (PSK) to a tunnel-pod responder in "edge"; the negotiated Child SA carries the pings.
# 4. IKEv2 between two tunnel-pods: the one in "branch" dials (`ipsec.initiate: true`), the one
#    in "edge" answers; health checks and pings run through the negotiated Child SA.
# Prints the health states, pings through all three, shows the metrics, strongSwan's SAs and
# the responder's /status, then tears everything down (on Enter when run from a terminal; also
# on failure and Ctrl-C). Root only. Needs strongSwan (strongswan-charon, strongswan-swanctl,
# libcharon-extra-plugins: installed with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-netns.sh
. scripts/lib-netns.sh
need_strongswan || exit 1
cargo build -q --release -p magictunnel-tunnel-pod
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/tunnel-pod"
A=mtdemo-edge B=mtdemo-branch DIR="$(mktemp -d /tmp/mtdemo.XXXXXX)"
C=mtdemo-pair-edge D=mtdemo-pair-branch # the IKE pair (4.)
# For reap_lab: every process started below, the namespaces (and what still runs in them, e.g.
# from an earlier run that was killed), the work directory.
PIDS=() NAMESPACES=("$A" "$B" "$C" "$D") WORK=$DIR
trap reap_lab EXIT
trap 'exit 130' INT TERM
reap_lab; mkdir -p "$DIR"

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
# `ip netns exec` execs tunnel-pod in place: $! is tunnel-pod's PID.
ip netns exec "$A" "$BIN" run --config "$DIR/edge.yaml" --interface mt-edge 2>"$DIR/edge.log" &
PIDS+=($!)
ip netns exec "$B" "$BIN" run --config "$DIR/branch.yaml" --interface mt-branch 2>"$DIR/branch.log" &
PIDS+=($!)

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
PIDS+=($!)
ip netns exec "$B" "$BIN" run --config "$DIR/branch-ipsec.yaml" --interface mt-branch-esp 2>"$DIR/branch-ipsec.log" &
PIDS+=($!)
for _ in $(seq 50); do
  if ip netns exec "$A" curl -sf 127.0.0.1:9181/readyz >/dev/null; then break; fi
  sleep 0.2
done
echo "== edge IPsec /readyz: $(ip netns exec "$A" curl -s 127.0.0.1:9181/readyz)"
ip netns exec "$A" ping -c 3 -i 0.2 10.201.0.1
ip netns exec "$A" curl -s 127.0.0.1:9181/metrics \
  | grep -E '^magictunnel_(tunnel_packets_total|health_state\{.*\} 1|nat_keepalives_sent_total)'

echo; echo "== IKEv2: strongSwan (the branch router) initiates to a tunnel-pod responder, PSK"
# The static-SA tunnel-pod already has 192.0.2.1:4500, so the IKE tunnel gets its own endpoint
# address. In the branch it is the other way round: 192.0.2.2:4500 is taken, so charon's NAT-T
# port is 4501, as a router behind a NAT would use some port other than 4500; the responder
# answers wherever the IKE messages came from.
ip -n "$A" addr add 192.0.2.11/24 dev mtdemo0
ip -n "$B" addr add 10.22.2.1/32 dev lo # the LAN behind strongSwan
PSK=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$PSK" >"$DIR/ike.psk")
BRANCH_ID=branch.demo.example
cat >"$DIR/edge-ike.yaml" <<YAML
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: demo/edge-ike
type: IPsec
localEndpoint: 192.0.2.11
customerEndpoint: 192.0.2.2
interfaceAddress: 10.202.0.0/31
routes: [{prefix: 10.22.2.0/24}]
healthCheck: {enabled: false}
ipsec:
  pskFile: $DIR/ike.psk
  acceptedIds: [{type: FQDN, value: $BRANCH_ID}]
  replayProtection: true
http: {listen: 127.0.0.1:9182}
YAML
"$BIN" check --config "$DIR/edge-ike.yaml"
ip netns exec "$A" "$BIN" run --config "$DIR/edge-ike.yaml" --interface mt-edge-ike 2>"$DIR/edge-ike.log" &
PIDS+=($!)
for _ in $(seq 50); do
  [ "$(ip netns exec "$A" ss -Hlun 'src 192.0.2.11 and ( sport = :500 or sport = :4500 )' | wc -l)" -ge 2 ] && break
  sleep 0.2
done
SWAN="$DIR/charon"
charon_conf "$SWAN" 4501
cat >"$SWAN/swanctl.conf" <<CONF
connections {
    edge {
        version = 2
        local_addrs = 192.0.2.2
        remote_addrs = 192.0.2.11
        proposals = aes256gcm16-prfsha384-ecp384
        local {
            auth = psk
            id = @$BRANCH_ID
        }
        remote {
            auth = psk
            id = 192.0.2.11
        }
        children {
            edge {
                mode = tunnel
                local_ts = 10.22.2.0/24
                remote_ts = 10.202.0.0/32
                esp_proposals = aes256gcm16
                start_action = none
            }
        }
    }
}
secrets {
    ike-edge {
        id-branch = @$BRANCH_ID
        id-edge = 192.0.2.11
        secret = "$PSK"
    }
}
CONF
start_charon "$SWAN" "$B"
swan "$SWAN" --initiate --child edge --timeout 20 >"$SWAN/initiate.out" 2>&1 || {
  cat "$SWAN/initiate.out" "$DIR/edge-ike.log" >&2; tail -n 40 "$SWAN/charon.log" >&2; exit 1
}
for _ in $(seq 50); do charon_installed "$SWAN" && break; sleep 0.1; done
# charon routes the responder's side via its TUN device (table 220); wait for the route.
for _ in $(seq 50); do
  ip netns exec "$B" ip route get 10.202.0.0 from 10.22.2.1 2>/dev/null | grep -q ipsec && break
  sleep 0.1
done
echo "== ping the tunnel-pod from the branch LAN, through the negotiated Child SA"
ip netns exec "$B" ping -c 3 -i 0.2 -I 10.22.2.1 10.202.0.0
echo "== strongSwan: swanctl --list-sas (the pings show in the Child SA counters)"
swan "$SWAN" --list-sas 2>/dev/null # swanctl itself warns of plugins it lacks
echo "== edge IKE /status"
STATUS=$(ip netns exec "$A" curl -s 127.0.0.1:9182/status)
if command -v jq >/dev/null; then jq . <<<"$STATUS"; else echo "$STATUS"; fi
echo "== edge IKE metrics"
ip netns exec "$A" curl -s 127.0.0.1:9182/metrics \
  | grep -E '^magictunnel_(ike_sas|child_sas|ike_[a-z_]*total|tunnel_packets_total)'
echo "== edge IKE log"; cat "$DIR/edge-ike.log"

echo; echo "== IKEv2 pair: a tunnel-pod in the branch dials (ipsec.initiate: true) a tunnel-pod responder"
# A namespace pair of its own (charon in the branch holds UDP 500 on every address there):
# 203.0.113.1 in the edge, 203.0.113.2 in the branch.
NS_A=$C NS_B=$D VETH_A=mtdemo2 VETH_B=mtdemo3 make_link
ike_pair() { # name local customer interface-address accepted-peer-id initiate
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
  pskFile: $DIR/ike.psk
  acceptedIds: [{type: IPv4Addr, value: "$5"}]
  initiate: $6
http: {listen: 127.0.0.1:9183}
YAML
}
ike_pair edge-pair 203.0.113.1 203.0.113.2 10.203.0.0/31 203.0.113.2 false >"$DIR/edge-pair.yaml"
ike_pair branch-pair 203.0.113.2 203.0.113.1 10.203.0.1/31 203.0.113.1 true >"$DIR/branch-pair.yaml"
"$BIN" check --config "$DIR/branch-pair.yaml"
ip netns exec "$C" "$BIN" run --config "$DIR/edge-pair.yaml" --interface mt-edge-pair 2>"$DIR/edge-pair.log" &
PIDS+=($!)
ip netns exec "$D" "$BIN" run --config "$DIR/branch-pair.yaml" --interface mt-branch-pair 2>"$DIR/branch-pair.log" &
PIDS+=($!)
for _ in $(seq 100); do
  ip netns exec "$C" curl -sf 127.0.0.1:9183/readyz >/dev/null \
    && ip netns exec "$D" curl -sf 127.0.0.1:9183/readyz >/dev/null && break
  sleep 0.2
done
echo "== edge pair /readyz: $(ip netns exec "$C" curl -s 127.0.0.1:9183/readyz)"
echo "== branch pair /readyz: $(ip netns exec "$D" curl -s 127.0.0.1:9183/readyz)"
ip netns exec "$D" ping -c 3 -i 0.2 10.203.0.0
for side in "edge:$C" "branch:$D"; do
  echo "== ${side%%:*} pair /status"
  STATUS=$(ip netns exec "${side#*:}" curl -s 127.0.0.1:9183/status)
  if command -v jq >/dev/null; then jq . <<<"$STATUS"; else echo "$STATUS"; fi
done
echo "== branch pair dial metrics"
ip netns exec "$D" curl -s 127.0.0.1:9183/metrics | grep -E '^magictunnel_ike_dials_total'
echo "== branch pair log"; cat "$DIR/branch-pair.log"
if [ -t 0 ]; then read -r -p "Press Enter to tear the demo down. "; fi
