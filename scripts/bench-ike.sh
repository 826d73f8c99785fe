#!/usr/bin/env bash
# IKE at scale (issue #10): tunnel-pod as an IKEv2 responder beside strongSwan's charon, driven
# by the same load generator (`ike-load`, the project's own IKE core as initiator).
#
#   sudo scripts/bench-ike.sh
#
# Three namespaces: R runs `tunnel-pod run` (IPsec, no customerEndpoint, 10.201.0.1) with raised
# IKE limits, S runs charon (10.202.0.1), L runs the load; L's loopback carries the initiators'
# addresses (10.210.0.0/16 towards R, 10.220.0.0/16 towards S, routed over the veths), one
# address (UDP 500 + 4500) per initiator. Both responders: PSK, IKE AES-GCM-16-256 /
# PRF-HMAC-SHA2-384 / GROUP, ESP AES-GCM-16-256, tunnel mode 0.0.0.0/0, NAT-T (ESP in UDP).
#
# (a) SAS IKE SAs (IKE_SA_INIT + IKE_AUTH + one Child SA each) from SAS distinct addresses,
#     started at RATE per second: time from the first start to the last SA up, the SAs the
#     responder holds at the end, and its peak RSS (VmHWM).
# (b) Handshakes/s, closed loop: CONC initiators, each opening PER SAs one after the other, as
#     fast as the responder answers, against R and then S (ROUNDS times, alternating).
#
# Each run also reports the responder's CPU time (user + system, all threads, from
# /proc/PID/stat): on a VM shared with other work, CPU per handshake is the steadier figure.
# PIN=1 gives each responder exactly one core (CPU 1, all its threads) and the load the other
# (CPU 0): the same CPU budget for both responders, so handshakes/s compare their work per core
# rather than how much of a shared machine each grabs (charon spreads over both cores, and the
# load generator, which does the other half of every DH, competes with it there).
# Prints JSON lines (one per run) on stdout and a summary on stderr. Environment: SAS (1000),
# RATE (200), CONC (32), PER (20), ROUNDS (2), GROUP (ecp384), LOAD_THREADS (1), PIN (0), NO_BUILD=1
# to use the binaries in CARGO_TARGET_DIR/release as they are, KEEP_LOGS=1 to keep the work
# directory's logs on failure (copied to a new directory under TMPDIR, named on stderr). Everything
# else it creates is removed on exit.
set -euo pipefail

SAS=${SAS:-1000}
RATE=${RATE:-200}
CONC=${CONC:-32}
PER=${PER:-20}
ROUNDS=${ROUNDS:-2}
GROUP=${GROUP:-ecp384}
LOAD_THREADS=${LOAD_THREADS:-1}
PIN=${PIN:-0}
[[ $EUID -eq 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lib-netns.sh
. "$HERE/lib-netns.sh"
need_strongswan || exit 1
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -q -p magictunnel-tunnel-pod --bin tunnel-pod --bin ike-load) >&2
fi
for b in tunnel-pod ike-load; do [[ -x $BIN/$b ]] || { echo "$0: $BIN/$b missing" >&2; exit 1; }; done

ID="mtik$$"
NS_R="${ID}r" NS_S="${ID}s" NS_L="${ID}l"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$ID.XXXXXX")
chmod 700 "$WORK"
PIDS=()
NAMESPACES=()
OK=0
cleanup() {
    if [[ $OK != 1 && ${KEEP_LOGS:-0} == 1 ]]; then
        # Outside the checkout: copied into the current directory, two such logs got committed.
        # Never fatal here: reap_lab below must run.
        local keep
        if keep=$(mktemp -d "${TMPDIR:-/tmp}/bench-ike-logs.XXXXXX"); then
            cp "$WORK"/*.log "$WORK"/*/charon.log "$keep" 2>/dev/null || true
            echo "$0: logs kept in $keep" >&2
        fi
    fi
    reap_lab
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$NS_R" "$NS_S" "$NS_L"; do
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
done
ip link add "${ID}lr" netns "$NS_L" type veth peer name "${ID}rl" netns "$NS_R"
ip link add "${ID}ls" netns "$NS_L" type veth peer name "${ID}sl" netns "$NS_S"
ip -n "$NS_L" addr add 10.201.0.2/24 dev "${ID}lr"
ip -n "$NS_R" addr add 10.201.0.1/24 dev "${ID}rl"
ip -n "$NS_L" addr add 10.202.0.2/24 dev "${ID}ls"
ip -n "$NS_S" addr add 10.202.0.1/24 dev "${ID}sl"
for l in "$NS_L ${ID}lr" "$NS_L ${ID}ls" "$NS_R ${ID}rl" "$NS_S ${ID}sl"; do
    set -- $l
    ip -n "$1" link set "$2" up
done
ip -n "$NS_R" route add 10.210.0.0/16 via 10.201.0.2
ip -n "$NS_S" route add 10.220.0.0/16 via 10.202.0.2
# Initiator addresses, contiguous as ike-load counts them: (a) from .0.1 on, (b) from .128.1 on,
# in both /16s, on L's loopback.
ip4() { echo "$(($1 >> 24 & 255)).$(($1 >> 16 & 255)).$(($1 >> 8 & 255)).$(($1 & 255))"; }
for p in 210 220; do
    a0=$(((10 << 24) + (p << 16) + 1)) b0=$(((10 << 24) + (p << 16) + (128 << 8) + 1))
    for i in $(seq 0 $((SAS - 1))); do echo "addr add $(ip4 $((a0 + i)))/32 dev lo"; done
    for i in $(seq 0 $((CONC - 1))); do echo "addr add $(ip4 $((b0 + i)))/32 dev lo"; done
done >"$WORK/addrs"
ip -n "$NS_L" -batch "$WORK/addrs"

# A PSK in a file, never on a command line.
head -c 24 /dev/urandom | base64 | tr -d '=+/' >"$WORK/psk"
chmod 600 "$WORK/psk"
PSK=$(cat "$WORK/psk")

# tunnel-pod responder.
HTTP=9464
cat >"$WORK/tunnel.yaml" <<YAML
apiVersion: magictunnel.dev/v1alpha1
kind: TunnelConfig
name: bench-ike
type: IPsec
localEndpoint: 10.201.0.1
interfaceAddress: 10.99.0.1/31
healthCheck: {enabled: false}
ipsec:
  pskFile: $WORK/psk
  acceptedIds:
    - {type: FQDN, value: "load.ipsec.example"}
  proposals:
    ike: {dhGroups: [$(case $GROUP in ecp384) echo ECP-384;; modp2048) echo MODP-2048;; modp1536) echo MODP-1536;; esac)]}
http: {listen: 127.0.0.1:$HTTP}
YAML
LIMITS=(--ike-max-sas $((SAS + CONC * PER * ROUNDS + 100)) --ike-max-half-open 4096 --ike-cookie-threshold 4096)
ip netns exec "$NS_R" "$BIN/tunnel-pod" run --config "$WORK/tunnel.yaml" --interface mtbench "${LIMITS[@]}" \
    >"$WORK/tunnel-pod.log" 2>&1 &
TP=$!
PIDS+=("$TP")

# strongSwan responder: the same suite, no uniqueness check (all initiators share one ID), the
# cookie threshold raised like tunnel-pod's, no routes (the bench carries no traffic).
mkdir -p "$WORK/s"
cat >"$WORK/s/strongswan.conf" <<CONF
charon {
    load = $CHARON_PLUGINS
    install_routes = no
    install_virtual_ip = no
    cookie_threshold = 4096
    block_threshold = 4096
    filelog {
        charon {
            path = $WORK/s/charon.log
            default = ${CHARON_LOG:-0}
        }
    }
    plugins {
        vici {
            socket = unix://$WORK/s/charon.vici
        }
    }
}
CONF
SWAN_GROUP=$GROUP
cat >"$WORK/s/swanctl.conf" <<CONF
connections {
    load {
        version = 2
        local_addrs = 10.202.0.1
        proposals = aes256gcm16-prfsha384-$SWAN_GROUP
        unique = never
        local {
            auth = psk
            id = 10.202.0.1
        }
        remote {
            auth = psk
            id = @load.ipsec.example
        }
        children {
            load {
                local_ts = 0.0.0.0/0
                remote_ts = 0.0.0.0/0
                esp_proposals = aes256gcm16
            }
        }
    }
}
secrets {
    ike-load {
        id-a = load.ipsec.example
        id-b = 10.202.0.1
        secret = "$PSK"
    }
}
CONF
chmod 600 "$WORK/s/swanctl.conf"
start_charon "$WORK/s" "$NS_S"
CH=${PIDS[-1]}
if [[ $PIN == 1 ]]; then
    # Every thread of both responders onto CPU 1 (charon's pool exists once it has started).
    taskset -apc 1 "$TP" >/dev/null
    taskset -apc 1 "$CH" >/dev/null
fi

for _ in $(seq 100); do
    ip netns exec "$NS_R" curl -sf "http://127.0.0.1:$HTTP/metrics" >/dev/null 2>&1 && break
    sleep 0.1
done
ip netns exec "$NS_R" curl -sf "http://127.0.0.1:$HTTP/metrics" >/dev/null || {
    cat "$WORK/tunnel-pod.log" >&2
    echo "$0: tunnel-pod did not start" >&2
    exit 1
}

# load TARGET_ADDR BASE SOURCES COUNT RATE HOLD: one ike-load run in L; its JSON on stdout.
# The initiators' traffic selector is 172.16.0.0/12, not 0.0.0.0/0: charon (kernel-libipsec)
# would tunnel its IKE answers to the other initiators into the first Child SA otherwise.
load() {
    ulimit -n "$(ulimit -Hn)"
    local pin=()
    [[ $PIN == 1 ]] && pin=(taskset -c 0)
    ip netns exec "$NS_L" "${pin[@]}" "$BIN/ike-load" --target "$1" --source-base "$2" --sources "$3" \
        --count "$4" --rate "$5" --hold "$6" --group "$GROUP" --psk-file "$WORK/psk" \
        --peer-id "$1" --threads "$LOAD_THREADS" --timeout 20 --local-ts 172.16.0.0/12
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) of a process and its threads, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
tp_sas() {
    ip netns exec "$NS_R" curl -sf "http://127.0.0.1:$HTTP/metrics" | awk '$1 == "magictunnel_ike_sas" {print $2}'
}
swan_sas() { { swan "$WORK/s" --list-sas --raw 2>/dev/null || true; } | { grep -o 'state=ESTABLISHED' || true; } | wc -l; }

if [[ ${SETUP_ONLY:-0} == 1 ]]; then
    echo "WORK=$WORK NS_L=$NS_L NS_R=$NS_R NS_S=$NS_S" >&2
    sleep "${SETUP_SECONDS:-300}"
    exit 0
fi
summary=()
# (a) SAS IKE SAs at RATE/s, held 5 s (counted at the responder meanwhile), then deleted.
for who in tunnel-pod strongswan; do
    if [[ $who == tunnel-pod ]]; then target=10.201.0.1 base=10.210.0.1 pid=$TP; else target=10.202.0.1 base=10.220.0.1 pid=$CH; fi
    rss0=$(rss "$pid") cpu0=$(cpu "$pid")
    load "$target" "$base" "$SAS" "$SAS" "$RATE" 6 >"$WORK/a-$who.json" &
    lp=$!
    sleep 0.5
    held=0
    while kill -0 "$lp" 2>/dev/null; do
        n=$([[ $who == tunnel-pod ]] && tp_sas || swan_sas)
        [[ ${n%.*} -gt $held ]] && held=${n%.*}
        sleep 1
    done
    wait "$lp"
    peak=$(hwm "$pid") cpu1=$(cpu "$pid")
    line=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(bench="a", responder=sys.argv[2], held_at_responder=int(sys.argv[3]), rss_before_kib=int(sys.argv[4]), vmhwm_kib=int(sys.argv[5]), responder_cpu_s=float(sys.argv[6])); print(json.dumps(d))' \
        "$WORK/a-$who.json" "$who" "$held" "$rss0" "$peak" "$(echo "scale=2; ($cpu1 - $cpu0) / $TICKS" | bc)")
    echo "$line"
    summary+=("$line")
    sleep 3
done

# (b) closed-loop handshakes/s, alternating responders.
for r in $(seq "$ROUNDS"); do
    for who in tunnel-pod strongswan; do
        if [[ $who == tunnel-pod ]]; then target=10.201.0.1 base=10.210.128.1; else target=10.202.0.1 base=10.220.128.1; fi
        if [[ $who == tunnel-pod ]]; then pid=$TP; else pid=$CH; fi
        cpu0=$(cpu "$pid")
        load "$target" "$base" "$CONC" $((CONC * PER)) 0 0 >"$WORK/b.json"
        cpu1=$(cpu "$pid")
        line=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=(int(sys.argv[4])-int(sys.argv[3]))/int(sys.argv[5]); d.update(bench="b", responder=sys.argv[2], round=int(sys.argv[6]), responder_cpu_s=round(c, 2), responder_cpu_ms_per_handshake=round(c*1000/max(d["established"],1), 3)); print(json.dumps(d))' \
            "$WORK/b.json" "$who" "$cpu0" "$cpu1" "$TICKS" "$r")
        echo "$line"
        summary+=("$line")
        sleep 2
    done
done

cat >"$WORK/summary.py" <<'PY'
import json, sys
rows = [json.loads(l) for l in sys.stdin]
b = {}
for d in rows:
    lat = d["latency_ms"]
    if d["bench"] == "a":
        print("(a) %-10s %d/%d SAs in %s s (held %d at the responder), failed %s, p50 %s ms, p99 %s ms, VmHWM %.1f MiB, responder CPU %s s"
              % (d["responder"], d["established"], d["requested"], d["elapsed_s"], d["held_at_responder"],
                 d["failed"], lat["p50"], lat["p99"], d["vmhwm_kib"] / 1024, d["responder_cpu_s"]))
    else:
        b.setdefault(d["responder"], []).append(d["handshakes_per_s"])
        print("(b) %-10s round %d: %s handshakes/s (%d/%d, failed %s, p50 %s ms, p99 %s ms), responder CPU %s ms per handshake"
              % (d["responder"], d["round"], d["handshakes_per_s"], d["established"], d["requested"],
                 d["failed"], lat["p50"], lat["p99"], d["responder_cpu_ms_per_handshake"]))
if b.get("tunnel-pod") and b.get("strongswan"):
    t, s = max(b["tunnel-pod"]), max(b["strongswan"])
    print("(b) best of each: tunnel-pod %s/s, strongSwan %s/s, ratio %.2fx" % (t, s, t / s if s else float("inf")))
PY
printf '%s\n' "${summary[@]}" | python3 "$WORK/summary.py" >&2
OK=1
