#!/usr/bin/env bash
# Throughput of the userspace dataplane against the raw veth it runs on, in one invocation.
#
#   sudo scripts/bench-dataplane.sh [DURATION_SECONDS] [PARALLEL_STREAMS]     (defaults: 10 1)
#
# Builds tunnel-pod (release), makes two network namespaces joined by a veth pair, and measures
# an iperf3 TCP transfer from A to B over the veth itself (baseline), then through two
# tunnel-pods for each of MODES (default "gre esp"): GRE (MTU 1476) and ESP AES-256-GCM in UDP
# 4500 with static SAs (MTU 1400); MSS clamp Auto, health checks at the default rate. Prints a
# Markdown table. Everything it creates is removed on exit, also on Ctrl-C.
#
# Environment: TUNNEL_POD=path skips the build and uses that binary; TUNNEL_POD_ARGS adds flags
# to `tunnel-pod run` (e.g. --no-offload for the one-packet-per-syscall path); PYTHON picks the
# interpreter that parses iperf3's JSON (stdlib only; default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
PARALLEL=${2:-1}
MODES=${MODES:-gre esp}
PYTHON=${PYTHON:-python3}
[[ $DURATION =~ ^[0-9]+$ && $PARALLEL =~ ^[0-9]+$ ]] || {
    echo "usage: $0 [DURATION_SECONDS] [PARALLEL_STREAMS]" >&2
    exit 64
}
[[ $EUID -eq 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
for tool in ip iperf3 curl ss "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

if [[ -z ${TUNNEL_POD:-} ]]; then
    cargo build --release -q -p magictunnel-tunnel-pod
    TUNNEL_POD="${CARGO_TARGET_DIR:-target}/release/tunnel-pod"
fi
[[ -x $TUNNEL_POD ]] || { echo "$0: $TUNNEL_POD is not executable" >&2; exit 1; }

ID="mtb$$"
NS_A="${ID}a" NS_B="${ID}b" VETH_A="${ID}va" VETH_B="${ID}vb"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$ID.XXXXXX")
PIDS=()
NAMESPACES=()

# shellcheck source=scripts/lib-netns.sh
. "$PWD/scripts/lib-netns.sh"
cleanup() { reap_lab; }
trap cleanup EXIT
trap 'exit 130' INT TERM

make_link

# ESP static SAs: A sends with SPI 4097, B with 8194; random AES-256-GCM keys + salts.
KEY_AB=$(head -c 36 /dev/urandom | base64 -w0)
KEY_BA=$(head -c 36 /dev/urandom | base64 -w0)
sa() { echo "{spi: $1, encryption: AES-GCM-16-256, encryptionKey: \"$2\"}"; }

# config MODE SIDE LOCAL CUSTOMER INTERFACE_ADDRESS OUT_SA IN_SA
config() {
    {
        printf 'apiVersion: magictunnel.dev/v1alpha1\nkind: TunnelConfig\nname: bench/%s\n' "$2"
        printf 'localEndpoint: %s\ncustomerEndpoint: %s\ninterfaceAddress: %s\n' "$3" "$4" "$5"
        printf 'mssClamp: {mode: Auto}\nhttp: {listen: 127.0.0.1:9180}\n'
        printf 'healthCheck: {enabled: true, type: Reply, direction: Bidirectional, rate: Mid}\n'
        if [[ $1 == gre ]]; then
            printf 'type: GRE\nmtu: 1476\n'
        else
            printf 'type: IPsec\nipsec:\n  staticSa:\n    outbound: %s\n    inbound: %s\n' "$6" "$7"
        fi
    } >"$WORK/$1-$2.yaml"
}

# start_pods MODE: a tunnel-pod in each namespace, waited for until both are ready.
start_pods() {
    config "$1" a 203.0.113.1 203.0.113.2 10.99.0.0/31 "$(sa 4097 "$KEY_AB")" "$(sa 8194 "$KEY_BA")"
    config "$1" b 203.0.113.2 203.0.113.1 10.99.0.1/31 "$(sa 8194 "$KEY_BA")" "$(sa 4097 "$KEY_AB")"
    ip netns exec "$NS_A" "$TUNNEL_POD" run --config "$WORK/$1-a.yaml" --interface "${ID}ta" \
        ${TUNNEL_POD_ARGS:-} >"$WORK/$1-a.log" 2>&1 &
    POD_A=$!
    PIDS+=("$POD_A")
    ip netns exec "$NS_B" "$TUNNEL_POD" run --config "$WORK/$1-b.yaml" --interface "${ID}tb" \
        ${TUNNEL_POD_ARGS:-} >"$WORK/$1-b.log" 2>&1 &
    POD_B=$!
    PIDS+=("$POD_B")
    for _ in $(seq 100); do
        if ready "$NS_A" && ready "$NS_B"; then return; fi
        sleep 0.2
    done
    echo "$0: $1 tunnel-pods not ready within 20 s" >&2
    echo "--- A ---" >&2; cat "$WORK/$1-a.log" >&2
    echo "--- B ---" >&2; cat "$WORK/$1-b.log" >&2
    exit 1
}

stop_pods() {
    kill -TERM "$POD_A" "$POD_B" 2>/dev/null || true
    wait "$POD_A" "$POD_B" 2>/dev/null || true
    forget "$POD_A" "$POD_B"
}

ready() { [[ $(ip netns exec "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
    http://127.0.0.1:9180/readyz) == 200 ]]; }
# iperf3 LABEL SERVER_ADDRESS: TCP from A to SERVER_ADDRESS in B; writes $WORK/LABEL.json.
measure() {
    ip netns exec "$NS_B" iperf3 -s -1 -B "$2" >"$WORK/$1-server.log" 2>&1 &
    local server=$!
    PIDS+=("$server")
    for _ in $(seq 50); do
        [[ -n $(ip netns exec "$NS_B" ss -Hltn 'sport = :5201') ]] && break
        sleep 0.1
    done
    # In the background: `wait` returns at once on a signal, a foreground command would not.
    ip netns exec "$NS_A" iperf3 -c "$2" -t "$DURATION" -P "$PARALLEL" -J \
        >"$WORK/$1.json" &
    local client=$!
    PIDS+=("$client")
    wait "$client" || {
        echo "$0: iperf3 to $2 failed:" >&2
        cat "$WORK/$1.json" >&2
        exit 1
    }
    wait "$server" 2>/dev/null || true
    forget "$client" "$server"
}

# forget PID…: drop finished processes from the cleanup list (their ids may be reused).
forget() {
    local kept=() pid
    for pid in "${PIDS[@]}"; do [[ " $* " == *" $pid "* ]] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}
measure veth 203.0.113.2
for mode in $MODES; do
    start_pods "$mode"
    measure "$mode" 10.99.0.1
    stop_pods
done

"$PYTHON" - "$WORK" "$DURATION" "$PARALLEL" veth $MODES <<'EOF'
import json, sys
work, duration, parallel, *names = sys.argv[1:]
ends = {}
for name in names:
    report = json.load(open(f"{work}/{name}.json"))
    if "error" in report or "sum_received" not in report.get("end", {}):
        sys.exit(f"iperf3 over {name}: {report.get('error', 'no result')}")
    ends[name] = report["end"]
gbps = lambda end: end["sum_received"]["bits_per_second"] / 1e9
label = {"veth": "raw veth", "gre": "GRE (tunnel-pod)",
         "esp": "ESP AES-256-GCM in UDP (tunnel-pod)"}
print("| streams | duration | path | Gbit/s | / veth | retransmits |")
print("|---|---|---|---|---|---|")
for name in names:
    end = ends[name]
    print(f"| {parallel} | {duration} s | {label.get(name, name)} | {gbps(end):.2f} "
          f"| {gbps(end) / gbps(ends['veth']):.1%} | {end['sum_sent'].get('retransmits', 'n/a')} |")
EOF
