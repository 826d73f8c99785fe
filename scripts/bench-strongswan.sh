#!/usr/bin/env bash
# strongSwan baseline for the ESP benchmark: iperf3 through two strongSwan peers.
#
#   sudo scripts/bench-strongswan.sh [DURATION_SECONDS]     (default: 10)
#
# Makes two network namespaces joined by a veth (203.0.113.1/24 and 203.0.113.2/24) and runs a
# charon in each (own mount namespace with a private /run, own strongswan.conf and vici socket),
# with kernel-libipsec as the dataplane: ESP in userspace, always UDP-encapsulated (port 4500),
# through a TUN device (the kernel here has no ESP). A initiates IKEv2 (PSK,
# aes256-sha256-modp2048) to B; the CHILD_SA is tunnel mode, ESP AES-256-GCM-16, between
# 10.98.0.1/32 (A's loopback) and 10.98.0.2/32 (B's loopback), routes installed by charon.
# Once it is INSTALLED, one iperf3 TCP stream runs from 10.98.0.1 to 10.98.0.2 for DURATION
# seconds. Prints one Markdown table row on stdout,
#   | strongSwan 5.9 kernel-libipsec, AES-256-GCM | <Gbit/s> | <retransmits> |
# and iperf3's summary numbers on stderr. Everything it creates is removed on exit, also on
# failure and Ctrl-C.
#
# Installs strongswan-charon, strongswan-swanctl and libcharon-extra-plugins with apt-get if
# they are missing. Environment: PYTHON picks the interpreter that parses iperf3's JSON (stdlib
# only; default python3); KEEP_LOGS=1 copies the charon logs to the current directory on failure;
# CHARON_PLUGINS replaces charon's plugin load list.
#
# The default load list has `aesni` before `aes`/`gcm`, as Debian's modular default loads it, so
# ESP uses AES-NI + PCLMULQDQ (stderr names the implementation: "AES_GCM_16[aesni]"). Without
# aesni strongSwan falls back to its portable C `gcm` plugin and one stream drops from ≈ 0.5 to
# ≈ 0.07 Gbit/s (charon CPU-bound); that slower figure is not a fair baseline.
set -euo pipefail

DURATION=${1:-10}
PYTHON=${PYTHON:-python3}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 && $# -le 1 ]] || {
    echo "usage: $0 [DURATION_SECONDS]" >&2
    exit 64
}
[[ $EUID -eq 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

# shellcheck source=scripts/lib-netns.sh
. "$(cd "$(dirname "$0")" && pwd)/lib-netns.sh"
need_strongswan || exit 1
for tool in ip iperf3 ss "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

ID="mtss$$"
NS_A="${ID}a" NS_B="${ID}b" VETH_A="${ID}va" VETH_B="${ID}vb"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$ID.XXXXXX")
chmod 700 "$WORK"
PIDS=()
NAMESPACES=()
OK=0

cleanup() {
    if [[ $OK != 1 && ${KEEP_LOGS:-0} == 1 ]]; then
        cp "$WORK"/*.log . 2>/dev/null || true
    fi
    reap_lab
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "$0: $*" >&2
    local side
    for side in a b; do
        echo "--- charon $side (last 40 lines) ---" >&2
        tail -n 40 "$WORK/$side/charon.log" >&2 2>/dev/null || true
    done
    exit 1
}

make_link
ip -n "$NS_A" addr add 10.98.0.1/32 dev lo
ip -n "$NS_B" addr add 10.98.0.2/32 dev lo

PSK=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

# peer SIDE LOCAL_ADDR REMOTE_ADDR LOCAL_INNER REMOTE_INNER LOCAL_ID REMOTE_ID
peer() {
    local dir="$WORK/$1"
    charon_conf "$dir"
    cat >"$dir/swanctl.conf" <<EOF
connections {
    bench {
        version = 2
        local_addrs = $2
        remote_addrs = $3
        proposals = aes256-sha256-modp2048
        rekey_time = 0
        dpd_delay = 0
        local {
            auth = psk
            id = $6
        }
        remote {
            auth = psk
            id = $7
        }
        children {
            bench {
                mode = tunnel
                local_ts = $4/32
                remote_ts = $5/32
                esp_proposals = aes256gcm16
                rekey_time = 0
                start_action = none
            }
        }
    }
}
secrets {
    ike-bench {
        id-a = a@bench.invalid
        id-b = b@bench.invalid
        secret = 0x$PSK
    }
}
EOF
}
peer a 203.0.113.1 203.0.113.2 10.98.0.1 10.98.0.2 a@bench.invalid b@bench.invalid
peer b 203.0.113.2 203.0.113.1 10.98.0.2 10.98.0.1 b@bench.invalid a@bench.invalid

start_charon "$WORK/a" "$NS_A" || fail "charon a did not start"
start_charon "$WORK/b" "$NS_B" || fail "charon b did not start"

swan "$WORK/a" --initiate --child bench --timeout 20 >"$WORK/a/initiate.out" 2>&1 ||
    { cat "$WORK/a/initiate.out" >&2; fail "swanctl --initiate failed"; }

for _ in $(seq 100); do
    if charon_installed "$WORK/a" && charon_installed "$WORK/b"; then break; fi
    sleep 0.1
done
{ charon_installed "$WORK/a" && charon_installed "$WORK/b"; } || fail "CHILD_SA not INSTALLED on both peers within 10 s"
# On stderr, what was negotiated, e.g. "bench: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256".
swan "$WORK/a" --list-sas 2>/dev/null | grep -E 'ESTABLISHED|INSTALLED' | sed 's/^ */strongSwan A: /' >&2 || true
# The first implementation listed is the one used, e.g. "AES_GCM_16[aesni]".
echo "strongSwan A: AES-GCM by $(swan "$WORK/a" --list-algs 2>/dev/null | grep -o -m1 'AES_GCM_16\[[a-z0-9-]*\]')" >&2

# Routes to the inner addresses go via charon's TUN device (table 220); wait for them.
for _ in $(seq 50); do
    ip netns exec "$NS_A" ip route get 10.98.0.2 from 10.98.0.1 2>/dev/null | grep -q ipsec && break
    sleep 0.1
done
ip netns exec "$NS_A" ping -c 1 -W 2 -I 10.98.0.1 10.98.0.2 >/dev/null ||
    fail "no ping from 10.98.0.1 to 10.98.0.2 through the tunnel"

ip netns exec "$NS_B" iperf3 -s -1 -B 10.98.0.2 >"$WORK/server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 50); do
    [[ -n $(ip netns exec "$NS_B" ss -Hltn 'sport = :5201') ]] && break
    sleep 0.1
done
# In the background: `wait` returns at once on a signal, a foreground command would not.
ip netns exec "$NS_A" iperf3 -c 10.98.0.2 -B 10.98.0.1 -t "$DURATION" -J >"$WORK/iperf.json" &
CLIENT=$!
PIDS+=("$CLIENT")
wait "$CLIENT" || { cat "$WORK/iperf.json" >&2; fail "iperf3 through the tunnel failed"; }
wait "$SERVER" 2>/dev/null || true

"$PYTHON" - "$WORK/iperf.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
end = report.get("end", {})
if "error" in report or "sum_received" not in end:
    sys.exit(f"iperf3: {report.get('error', 'no result')}")
sent, received = end["sum_sent"], end["sum_received"]
retransmits = sent.get("retransmits", "n/a")
cpu = end.get("cpu_utilization_percent", {})
print(f"iperf3: {received['seconds']:.1f} s, sent {sent['bytes']} B at "
      f"{sent['bits_per_second'] / 1e9:.3f} Gbit/s, received {received['bytes']} B at "
      f"{received['bits_per_second'] / 1e9:.3f} Gbit/s, retransmits {retransmits}, "
      f"CPU sender {cpu.get('host_total', 0):.1f} % receiver {cpu.get('remote_total', 0):.1f} %",
      file=sys.stderr)
print(f"| strongSwan 5.9 kernel-libipsec, AES-256-GCM "
      f"| {received['bits_per_second'] / 1e9:.3f} | {retransmits} |")
EOF
OK=1
