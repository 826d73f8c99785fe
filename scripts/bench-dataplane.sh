#!/usr/bin/env bash
# Throughput and CPU cost of the userspace dataplane against the raw veth it runs on and against
# strongSwan, every row in one invocation and one table.
#
#   sudo scripts/bench-dataplane.sh [DURATION_SECONDS] [STREAMS]     (default: 10, every row)
#
# Builds tunnel-pod (release), makes two network namespaces joined by a veth pair and runs one
# iperf3 TCP transfer from A to B per row, in this order (ROWS, "STREAMS:PATH" words):
#
#   1:veth 1:gre 1:esp 1:esp-cbc 4:gre 4:esp 4:veth 1:strongswan 1:veth/wire 1:gre/wire 1:esp/wire
#   1:gre6 1:esp6
#
#   veth        over the veth itself (the baseline of the "/ veth" column)
#   gre         through two tunnel-pods, GRE, MTU 1476
#   esp         through two tunnel-pods, ESP AES-256-GCM-16 in UDP 4500, static SAs, MTU 1400
#   esp-cbc     the same with AES-256-CBC + HMAC-SHA2-256-128
#   gre6, esp6  gre and esp with IPv6 inside the tunnel (fd00:99::a → fd00:99::b on the TUNs;
#               "/ veth" is still to the IPv4 veth row)
#   strongswan  through two charons (kernel-libipsec: userspace ESP AES-256-GCM-16 in UDP 4500,
#               IKEv2 PSK; `aesni` loaded, see lib-netns.sh), the same setup as bench-strongswan.sh
#   PATH/wire   PATH with the veth pair made to behave as a wire between two hosts' NICs (see
#               wire_mode below: bursts cut to MTU-sized frames before the veth, GRO after it);
#               its "/ veth" ratio is to the veth/wire row
#
# tunnel-pods get MSS clamp Auto and health checks at the default rate, and are started afresh for
# every row (so one row's state cannot leak into the next). Columns: streams (iperf3 -P), path,
# Gbit/s received, the ratio to the raw veth row of the same mode (wire or not) with the same number
# of streams (else the first of that mode), TCP retransmits, and CPU-s/GB: utime + stime from /proc/PID/stat of both tunnel-pod
# processes (both charons for strongSwan), read right before and right after the iperf3 client
# runs, summed over both endpoints, divided by the GB (10^9 bytes) iperf3 received. On this VM
# both endpoints, both TCP stacks and iperf3 share the same cores, so Gbit/s depends on the load;
# CPU-s/GB is the figure that carries to separate hosts. The load average at start and end, the
# CPU and its mitigations, one core's AES-GCM speed at start and end and the steal time are
# printed with the table. Everything it creates is removed on exit, also on Ctrl-C.
#
# Environment:
#   TUNNEL_POD=path        skip the build and use that binary
#   TUNNEL_POD_ARGS=...    flags added to `tunnel-pod run` (e.g. --no-offload, --no-udp-offload,
#                          --queues N, --gre-tx raw), for every tunnel-pod row
#   MODES="gre esp ..."    which non-veth paths of ROWS run (default: gre esp esp-cbc strongswan
#                          gre6 esp6);
#                          the veth rows always run
#   ROWS="1:veth 1:esp"    replaces the row list
#   PERF_DIR=dir           record `perf record -e cpu-clock -g` of both tunnel-pods during each
#                          tunnel-pod row into dir/<row>.data (scripts/perf-dataplane.sh uses it;
#                          perf's own cost then shows in the CPU column; PERF_ALL=1: perf -a)
#   REPEAT=N               N rounds, each running every row once in order; the table shows each
#                          row's median Gbit/s (with the range), retransmits and CPU-s/GB
#   TUNNEL_POD_BEFORE=path another tunnel-pod binary (an earlier commit's): every tunnel-pod row
#                          also runs with it, right after, and the CPU-s/GB ratios are printed
#   PYTHON                 the interpreter that parses iperf3's JSON (stdlib only; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
ONLY_STREAMS=${2:-}
MODES=${MODES:-gre esp esp-cbc strongswan gre6 esp6}
ROWS=${ROWS:-1:veth 1:gre 1:esp 1:esp-cbc 4:gre 4:esp 4:veth 1:strongswan 1:veth/wire 1:gre/wire 1:esp/wire 1:gre6 1:esp6}
PYTHON=${PYTHON:-python3}
REPEAT=${REPEAT:-1}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 && $ONLY_STREAMS =~ ^[0-9]*$ && $# -le 2 &&
    $REPEAT =~ ^[0-9]+$ && $REPEAT -gt 0 ]] || {
    echo "usage: $0 [DURATION_SECONDS] [STREAMS]" >&2
    exit 64
}
[[ $EUID -eq 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
for tool in ip iperf3 curl ss ethtool "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

# The rows that run: MODES filters the tunnel paths, STREAMS the stream counts.
SELECTED=()
for row in $ROWS; do
    streams=${row%%:*} path=${row#*:}
    [[ $streams =~ ^[0-9]+$ && $streams -gt 0 ]] || { echo "$0: bad row $row" >&2; exit 64; }
    case ${path%/wire} in
        veth | gre | esp | esp-cbc | strongswan | gre6 | esp6) ;;
        *) echo "$0: unknown path in row $row" >&2; exit 64 ;;
    esac
    [[ ${path%/wire} == veth || " $MODES " == *" ${path%/wire} "* ]] || continue
    [[ -z $ONLY_STREAMS || $streams == "$ONLY_STREAMS" ]] || continue
    SELECTED+=("$row")
done
((${#SELECTED[@]})) || { echo "$0: no row selected" >&2; exit 64; }

# shellcheck source=scripts/lib-netns.sh
. "$PWD/scripts/lib-netns.sh"
SWAN_OK=0
if [[ " ${SELECTED[*]} " == *":strongswan "* ]]; then
    need_strongswan && SWAN_OK=1 || echo "$0: strongSwan rows skipped" >&2
fi
if [[ -n ${PERF_DIR:-} ]]; then
    command -v perf >/dev/null || { echo "$0: PERF_DIR set but perf not found" >&2; exit 1; }
    mkdir -p "$PERF_DIR"
fi

if [[ -z ${TUNNEL_POD:-} ]]; then
    cargo build --release -q -p magictunnel-tunnel-pod
    TUNNEL_POD="${CARGO_TARGET_DIR:-target}/release/tunnel-pod"
fi
[[ -x $TUNNEL_POD && ( -z ${TUNNEL_POD_BEFORE:-} || -x $TUNNEL_POD_BEFORE ) ]] ||
    { echo "$0: $TUNNEL_POD or $TUNNEL_POD_BEFORE is not executable" >&2; exit 1; }

ID="mtb$$"
NS_A="${ID}a" NS_B="${ID}b" VETH_A="${ID}va" VETH_B="${ID}vb"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$ID.XXXXXX")
chmod 700 "$WORK"
PIDS=()
NAMESPACES=()
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# The machine's speed at this moment, to tell a slower VM from slower code: one core's
# AES-256-GCM on 16 KiB buffers (OpenSSL, 1 s), and the hypervisor's steal time over the run.
# The same code carried ESP at 0.37-0.42 x veth on one VM and 0.26-0.28 x on the next, whose
# steal was 0.8 % (BENCHMARKS.md, sixth session). A failed probe prints "?"; it never stops the run.
aes_probe() {
    command -v openssl >/dev/null || { echo "no openssl"; return 0; }
    { openssl speed -seconds 1 -evp aes-256-gcm -bytes 16384 2>/dev/null || true; } |
        awk 'toupper($1) == "AES-256-GCM" { sub(/k$/, "", $2); printf "%.2f GB/s", $2 / 1e6; found = 1 }
             END { if (!found) printf "?" }'
}
# steal_pct [START]: with no argument the "total steal" jiffies of all CPUs now (/proc/stat: user
# nice system idle iowait irq softirq steal; guest is already in user), with one such START the
# steal share of the CPU time since. In awk alone: mawk prints integers above 2^31 in exponent
# form, which bash arithmetic would refuse.
steal_pct() {
    awk -v start="${1:-}" '$1 == "cpu" {
        total = $2+$3+$4+$5+$6+$7+$8+$9
        if (start == "") { printf "%.0f %.0f", total, $9; exit }
        split(start, a, " "); t = total - a[1]
        printf "%.1f", (t > 0 ? 100 * ($9 - a[2]) / t : 0); exit }' /proc/stat
}
AES_START=$(aes_probe)
STEAL_START=$(steal_pct)

cleanup() { reap_lab; }
trap cleanup EXIT
trap 'exit 130' INT TERM

make_link
# strongSwan's traffic selectors: one address per side on lo.
ip -n "$NS_A" addr add 10.98.0.1/32 dev lo
ip -n "$NS_B" addr add 10.98.0.2/32 dev lo

# ESP static SAs: A sends with SPI 4097, B with 8194; random keys, never logged (files are 0600
# in the 0700 work directory).
umask 077
KEY_GCM_AB=$(head -c 36 /dev/urandom | base64 -w0)
KEY_GCM_BA=$(head -c 36 /dev/urandom | base64 -w0)
KEY_CBC_AB=$(head -c 32 /dev/urandom | base64 -w0)
KEY_CBC_BA=$(head -c 32 /dev/urandom | base64 -w0)
KEY_HMAC_AB=$(head -c 32 /dev/urandom | base64 -w0)
KEY_HMAC_BA=$(head -c 32 /dev/urandom | base64 -w0)
# sa MODE SPI DIRECTION: the static SA for MODE (esp or esp-cbc) in DIRECTION (ab or ba).
sa() {
    local enc int
    if [[ $1 == esp-cbc ]]; then
        enc=KEY_CBC_${3^^} int=KEY_HMAC_${3^^}
        echo "{spi: $2, encryption: AES-CBC-256, encryptionKey: \"${!enc}\", integrity: HMAC-SHA2-256-128, integrityKey: \"${!int}\"}"
    else
        enc=KEY_GCM_${3^^}
        echo "{spi: $2, encryption: AES-GCM-16-256, encryptionKey: \"${!enc}\"}"
    fi
}

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

# start_pods MODE: a tunnel-pod in each namespace (POD_A, POD_B), waited for until both are ready.
start_pods() {
    config "$1" a 203.0.113.1 203.0.113.2 10.99.0.0/31 "$(sa "$1" 4097 ab)" "$(sa "$1" 8194 ba)"
    config "$1" b 203.0.113.2 203.0.113.1 10.99.0.1/31 "$(sa "$1" 8194 ba)" "$(sa "$1" 4097 ab)"
    # `ip netns exec` execs the command: $! is the tunnel-pod itself (its /proc/PID/stat below).
    # shellcheck disable=SC2086 # TUNNEL_POD_ARGS is a list of flags
    ip netns exec "$NS_A" "$TUNNEL_POD" run --config "$WORK/$1-a.yaml" --interface "${ID}ta" \
        ${TUNNEL_POD_ARGS:-} >"$WORK/$1-a.log" 2>&1 &
    POD_A=$!
    PIDS+=("$POD_A")
    # shellcheck disable=SC2086
    ip netns exec "$NS_B" "$TUNNEL_POD" run --config "$WORK/$1-b.yaml" --interface "${ID}tb" \
        ${TUNNEL_POD_ARGS:-} >"$WORK/$1-b.log" 2>&1 &
    POD_B=$!
    PIDS+=("$POD_B")
    for _ in $(seq 100); do
        if ready "$NS_A" && ready "$NS_B"; then return; fi
        kill -0 "$POD_A" 2>/dev/null && kill -0 "$POD_B" 2>/dev/null || break
        sleep 0.2
    done
    echo "$0: $1 tunnel-pods not ready within 20 s" >&2
    echo "--- A ---" >&2; cat "$WORK/$1-a.log" >&2
    echo "--- B ---" >&2; cat "$WORK/$1-b.log" >&2
    exit 1
}

# add_ipv6: IPv6 on both TUNs (no DAD: usable at once), then A must reach B over it.
add_ipv6() {
    ip -n "$NS_A" -6 addr add fd00:99::a/64 dev "${ID}ta" nodad
    ip -n "$NS_B" -6 addr add fd00:99::b/64 dev "${ID}tb" nodad
    for _ in $(seq 50); do
        ip netns exec "$NS_A" ping -6 -c 1 -W 1 -n fd00:99::b >/dev/null 2>&1 && return
        sleep 0.2
    done
    echo "$0: no ping6 through the tunnel" >&2
    exit 1
}

stop_pods() {
    kill -TERM "$POD_A" "$POD_B" 2>/dev/null || true
    wait "$POD_A" "$POD_B" 2>/dev/null || true
    forget "$POD_A" "$POD_B"
}

ready() { [[ $(ip netns exec "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
    http://127.0.0.1:9180/readyz) == 200 ]]; }

# cpu_ticks PID…: utime + stime (clock ticks, all threads) of these processes, summed.
cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        # Fields after "pid (comm) ": state is the 1st, utime the 12th, stime the 13th.
        t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# measure LABEL SERVER_ADDRESS STREAMS CLIENT_BIND CPU_PIDS…: iperf3 TCP from A to
# SERVER_ADDRESS in B; writes $WORK/LABEL.json and the CPU ticks of CPU_PIDS spent while the
# client ran to $WORK/LABEL.cpu ("-" without CPU_PIDS). CLIENT_BIND "" binds nothing.
measure() {
    local label=$1 address=$2 streams=$3 bind=$4
    shift 4
    ip netns exec "$NS_B" iperf3 -s -1 -B "$address" >"$WORK/$label-server.log" 2>&1 &
    local server=$!
    PIDS+=("$server")
    for _ in $(seq 50); do
        [[ -n $(ip netns exec "$NS_B" ss -Hltn 'sport = :5201') ]] && break
        sleep 0.1
    done
    local perf="" before=0
    if [[ -n ${PERF_DIR:-} && $# -gt 0 && $label != strongswan* ]]; then
        local pidlist
        pidlist=$(IFS=,; echo "$*")
        local target=(-p "$pidlist")
        [[ ${PERF_ALL:-0} == 1 ]] && target=(-a)
        perf record -q -e cpu-clock -g "${target[@]}" -o "$PERF_DIR/$label.data" \
            >"$WORK/$label-perf.log" 2>&1 &
        perf=$!
        PIDS+=("$perf")
        sleep 0.5
    fi
    (($#)) && before=$(cpu_ticks "$@")
    # In the background: `wait` returns at once on a signal, a foreground command would not.
    ip netns exec "$NS_A" iperf3 -c "$address" ${bind:+-B "$bind"} -t "$DURATION" -P "$streams" \
        -J >"$WORK/$label.json" &
    local client=$!
    PIDS+=("$client")
    wait "$client" || {
        echo "$0: iperf3 to $address ($label) failed:" >&2
        cat "$WORK/$label.json" >&2
        exit 1
    }
    if (($#)); then
        echo $(($(cpu_ticks "$@") - before)) >"$WORK/$label.cpu"
    else
        echo - >"$WORK/$label.cpu"
    fi
    if [[ -n $perf ]]; then
        kill -INT "$perf" 2>/dev/null || true
        wait "$perf" 2>/dev/null || true
        forget "$perf"
    fi
    wait "$server" 2>/dev/null || true
    forget "$client" "$server"
}

# forget PID…: drop finished processes from the cleanup list (their ids may be reused).
forget() {
    local kept=() pid
    for pid in "${PIDS[@]}"; do [[ " $* " == *" $pid "* ]] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}

# strongSwan: swanctl.conf for SIDE (a initiates), as in bench-strongswan.sh.
SWAN_PSK=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
swan_peer() {
    local dir="$WORK/swan-$1"
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
        secret = 0x$SWAN_PSK
    }
}
EOF
}

# strongswan_row LABEL STREAMS: two charons, the CHILD_SA up, one measurement, charons stopped.
# Returns 1 (reason on stderr) when the tunnel does not come up.
strongswan_row() {
    local label=$1 streams=$2 a="$WORK/swan-a" b="$WORK/swan-b"
    swan_peer a 203.0.113.1 203.0.113.2 10.98.0.1 10.98.0.2 a@bench.invalid b@bench.invalid
    swan_peer b 203.0.113.2 203.0.113.1 10.98.0.2 10.98.0.1 b@bench.invalid a@bench.invalid
    start_charon "$a" "$NS_A" || return 1
    CHARON_A=${PIDS[-1]}
    start_charon "$b" "$NS_B" || return 1
    CHARON_B=${PIDS[-1]}
    swan "$a" --initiate --child bench --timeout 20 >"$a/initiate.out" 2>&1 ||
        { cat "$a/initiate.out" >&2; return 1; }
    for _ in $(seq 100); do
        if charon_installed "$a" && charon_installed "$b"; then break; fi
        sleep 0.1
    done
    { charon_installed "$a" && charon_installed "$b"; } ||
        { echo "$0: strongSwan CHILD_SA not INSTALLED within 10 s" >&2; return 1; }
    # The first implementation listed is the one used, e.g. "AES_GCM_16[aesni]".
    swan "$a" --list-algs 2>/dev/null | grep -o -m1 'AES_GCM_16\[[a-z0-9-]*\]' >"$WORK/$label.impl" || true
    for _ in $(seq 50); do
        ip netns exec "$NS_A" ip route get 10.98.0.2 from 10.98.0.1 2>/dev/null | grep -q ipsec && break
        sleep 0.1
    done
    ip netns exec "$NS_A" ping -c 1 -W 2 -I 10.98.0.1 10.98.0.2 >/dev/null ||
        { echo "$0: no ping through the strongSwan tunnel" >&2; return 1; }
    measure "$label" 10.98.0.2 "$streams" 10.98.0.1 "$CHARON_A" "$CHARON_B"
    stop_charons
}

stop_charons() {
    local pid
    for pid in ${CHARON_A:-} ${CHARON_B:-}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${CHARON_A:-} ${CHARON_B:-}; do wait "$pid" 2>/dev/null || true; done
    forget ${CHARON_A:-} ${CHARON_B:-}
    CHARON_A="" CHARON_B=""
}

# wire_mode on|off: the veth pair as a wire between two hosts with NICs, or as created. A veth
# hands a TSO or UDP-GSO burst to its peer whole, and without NAPI it does no GRO: between two
# hosts a burst leaves as MTU-sized frames (TSO/USO in the NIC) and the receiving NIC's GRO
# coalesces them again. On: TSO and UDP segmentation off on both ends (the kernel cuts bursts in
# software before the veth, on the sender's CPU), NAPI GRO on, and polls deferred by up to 50 µs
# (gro_flush_timeout, napi_defer_hard_irqs) as a NIC's interrupt moderation defers them, or the
# sender's transmit runs every poll for a single frame and nothing is coalesced. The raw veth
# baseline of such rows runs the same way.
wire_mode() {
    local timeout=0 defer=0 offload=on pair ns dev
    [[ $1 == on ]] && timeout=50000 defer=2 offload=off
    for pair in "$NS_A:$VETH_A" "$NS_B:$VETH_B"; do
        ns=${pair%%:*} dev=${pair#*:}
        ip netns exec "$ns" ethtool -K "$dev" gro "$1" tso "$offload" tx-udp-segmentation "$offload"
        ip netns exec "$ns" sh -c "echo $timeout >/sys/class/net/$dev/gro_flush_timeout &&
            echo $defer >/sys/class/net/$dev/napi_defer_hard_irqs"
    done
}

# run_row ROW ROUND BINARY TAG: one measurement of ROW; its label (recorded in DONE) is
# PATH[+wire]-STREAMS[~TAG]@ROUND.
run_row() {
    local row=$1 round=$2 bin=$3 tag=$4 streams path label
    streams=${row%%:*} path=${row#*:}
    echo "$0: $streams stream(s) over $path${tag:+ ($tag)}, ${DURATION} s, round $round" >&2
    if [[ $path == */wire ]]; then
        path=${path%/wire}
        label="$path+wire-$streams"
        wire_mode on
    else
        label="$path-$streams"
        wire_mode off
    fi
    label+="${tag:+~$tag}@$round"
    case $path in
        veth) measure "$label" 203.0.113.2 "$streams" "" ;;
        strongswan)
            ((SWAN_OK)) || return 0
            strongswan_row "$label" "$streams" || {
                stop_charons
                for side in a b; do
                    echo "--- charon $side (last 20 lines) ---" >&2
                    tail -n 20 "$WORK/swan-$side/charon.log" >&2 2>/dev/null || true
                done
                echo "$0: strongSwan row skipped" >&2
                return 0
            }
            ;;
        *)
            # gre6/esp6: the gre/esp pods, with IPv6 on their TUNs.
            TUNNEL_POD=$bin start_pods "${path%6}"
            local address=10.99.0.1
            if [[ $path == *6 ]]; then
                add_ipv6
                address=fd00:99::b
            fi
            measure "$label" "$address" "$streams" "" "$POD_A" "$POD_B"
            stop_pods
            ;;
    esac
    DONE+=("$label")
}

# Rounds interleave the rows, so that a change of load over the run touches every row alike.
DONE=()
for round in $(seq "$REPEAT"); do
    for row in "${SELECTED[@]}"; do
        run_row "$row" "$round" "$TUNNEL_POD" ""
        path=${row#*:}
        if [[ -n ${TUNNEL_POD_BEFORE:-} && ${path%/wire} != veth && ${path%/wire} != strongswan ]]; then
            run_row "$row" "$round" "$TUNNEL_POD_BEFORE" before
        fi
    done
done

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), kernel $(uname -r), $(nproc) CPUs"
# The kernel-bound rows (GRE above all) move with the CPU and its speculation mitigations: the
# same code on the same kernel version halved its GRE rate from one VM to the next (BENCHMARKS.md,
# fifth session). Name both, so that rows of two VMs are not compared unknowingly.
cpu=$(sed -n '/^model name/{s/^model name[[:space:]]*: //p;q}' /proc/cpuinfo)
mitigations=""
for m in spectre_v2 spec_rstack_overflow retbleed; do
    mitigations+="${mitigations:+; }$m: $(cat "/sys/devices/system/cpu/vulnerabilities/$m" 2>/dev/null || echo '?')"
done
echo "# CPU: ${cpu:-unknown}; mitigations: $mitigations"
echo "# load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# AES-256-GCM, one core (openssl speed, 16 KiB): $AES_START at start, $(aes_probe) at end; steal time $(steal_pct "$STEAL_START") % of the CPU time of the run"
echo "# ${DURATION} s per row; TUNNEL_POD_ARGS='${TUNNEL_POD_ARGS:-}'"
echo
"$PYTHON" - "$WORK" "$(getconf CLK_TCK)" "${DONE[@]}" <<'EOF'
import json, statistics, sys
work, hz, *labels = sys.argv[1:]
hz = int(hz)
runs = {}
for label in labels:
    key, _round = label.rsplit("@", 1)
    key, _, tag = key.partition("~")
    path, streams = key.rsplit("-", 1)
    path, wire = path.removesuffix("+wire"), path.endswith("+wire")
    report = json.load(open(f"{work}/{label}.json"))
    end = report.get("end", {})
    if "error" in report or "sum_received" not in end:
        sys.exit(f"iperf3 over {label}: {report.get('error', 'no result')}")
    ticks = open(f"{work}/{label}.cpu").read().strip()
    received = end["sum_received"]
    gb = received["bytes"] / 1e9
    cpu = None if ticks == "-" or gb == 0 else int(ticks) / hz / gb
    name = {
        "veth": "raw veth",
        "gre": "GRE (tunnel-pod)",
        "esp": "ESP AES-256-GCM in UDP (tunnel-pod)",
        "esp-cbc": "ESP AES-256-CBC + HMAC-SHA2-256-128 in UDP (tunnel-pod)",
        "gre6": "GRE (tunnel-pod), IPv6 inside",
        "esp6": "ESP AES-256-GCM in UDP (tunnel-pod), IPv6 inside",
        "strongswan": "strongSwan kernel-libipsec, AES-256-GCM",
    }[path]
    if path == "strongswan":
        try:
            impl = open(f"{work}/{label}.impl").read().strip()
        except OSError:
            impl = ""
        name += f" ({impl}, charon CPU)" if impl else " (charon CPU)"
    if wire:
        name += ", wire mode"
    if tag:
        name += ", before (TUNNEL_POD_BEFORE)"
    run = runs.setdefault((key, tag), dict(path=path, wire=wire, before=bool(tag),
                                           streams=int(streams), name=name, samples=[]))
    run["samples"].append(dict(gbps=received["bits_per_second"] / 1e9, cpu=cpu,
                               retransmits=end.get("sum_sent", {}).get("retransmits")))

# With several rounds each row shows the median of its runs (and, for Gbit/s, the range).
rows = []
for run in runs.values():
    s = run.pop("samples")
    g = sorted(x["gbps"] for x in s)
    cpus = [x["cpu"] for x in s if x["cpu"] is not None]
    rts = [x["retransmits"] for x in s if x["retransmits"] is not None]
    run.update(gbps=statistics.median(g), low=g[0], high=g[-1], n=len(s),
               cpu=statistics.median(cpus) if cpus else None,
               retransmits=int(statistics.median(rts)) if rts else "n/a")
    rows.append(run)

def veth(streams, wire):
    vs = [r for r in rows if r["path"] == "veth"]
    mode = [r for r in vs if r["wire"] == wire]
    same = [r for r in mode if r["streams"] == streams]
    return (same or mode or [None])[0]

several = any(r["n"] > 1 for r in rows)
print("| streams | path | Gbit/s" + (" (median, range)" if several else "")
      + " | / veth | retransmits | CPU-s/GB |")
print("|---|---|---|---|---|---|")
for r in rows:
    base = veth(r["streams"], r["wire"])
    ratio = f"{r['gbps'] / base['gbps']:.1%}" if base and base["gbps"] else "n/a"
    cpu = "—" if r["cpu"] is None else f"{r['cpu']:.2f}"
    gbps = f"{r['gbps']:.2f}" + (f" ({r['low']:.2f}–{r['high']:.2f})" if r["n"] > 1 else "")
    print(f"| {r['streams']} | {r['name']} | {gbps} | {ratio} | {r['retransmits']} | {cpu} |")

def find(path, streams=1, wire=False, before=False):
    return next((r for r in rows if r["path"] == path and r["streams"] == streams
                 and r["wire"] == wire and r["before"] == before), None)

befores = [r for r in rows if r["before"]]
if befores:
    print()
    print("CPU-s/GB against TUNNEL_POD_BEFORE, same rounds:")
    for b in befores:
        a = find(b["path"], b["streams"], b["wire"])
        if a and b["gbps"] < 0.01:
            print(f"- {a['name']}: {a['cpu']:.2f}; before: carried nothing")
        elif a and a["cpu"] and b["cpu"]:
            print(f"- {a['name']}: {a['cpu']:.2f} / {b['cpu']:.2f} = {a['cpu'] / b['cpu']:.2f}")

esp, swan = find("esp"), find("strongswan")
print()
if esp and swan and swan["gbps"]:
    line = f"tunnel-pod ESP AES-256-GCM / strongSwan, 1 stream: {esp['gbps'] / swan['gbps']:.1f}× the throughput"
    if esp["cpu"] and swan["cpu"]:
        line += f", {swan['cpu'] / esp['cpu']:.1f}× less CPU per GB"
    print(line)
else:
    print("tunnel-pod ESP / strongSwan: n/a (a row is missing)")
print("CPU-s/GB: utime + stime of both endpoint processes while iperf3 ran, per 10^9 bytes received.")
EOF
