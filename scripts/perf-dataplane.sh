#!/usr/bin/env bash
# Where the tunnel-pod dataplane spends its CPU: one TCP stream through two tunnel-pods per mode
# (default: ESP AES-256-GCM, then GRE) under `perf record -e cpu-clock -g` on both tunnel-pod
# processes; prints the top symbols by self time (kernel [k] and user [.]), the kernel / user
# split and the split by thread.
#
#   sudo scripts/perf-dataplane.sh [DURATION_SECONDS]     (default: 10)
#
# cpu-clock is a software event: this VM has no hardware counters (ENVIRONMENT.md). Samples are
# taken only while a tunnel-pod thread runs, so kernel work it causes elsewhere (the veth peer's
# softirq when it runs in iperf3's context, for one) is not in the profile; PERF_ALL=1 records the
# whole machine (perf record -a) instead. The lab, the configs and TUNNEL_POD_ARGS are those of
# scripts/bench-dataplane.sh, which this runs with ROWS="1:veth 1:esp 1:gre" (MODES picks the modes, e.g.
# MODES="esp esp-cbc gre gre/wire") and PERF_DIR; its table is printed too (perf's own overhead is in its
# CPU column). The build is a release build with line tables (CARGO_PROFILE_RELEASE_DEBUG=
# line-tables-only), so user symbols resolve; TUNNEL_POD=path skips it. TOP (default 25) sets the
# number of symbols shown; the perf.data files stay in PERF_OUT (default: a new /tmp directory).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-10}
MODES=${MODES:-esp gre}
TOP=${TOP:-25}
PYTHON=${PYTHON:-python3}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 && $# -le 1 && $TOP =~ ^[0-9]+$ ]] || {
    echo "usage: $0 [DURATION_SECONDS]" >&2
    exit 64
}
[[ $EUID -eq 0 ]] || { echo "$0: needs root (network namespaces, perf)" >&2; exit 1; }
command -v perf >/dev/null || { echo "$0: perf not found (apt-get install linux-perf)" >&2; exit 1; }

if [[ -z ${TUNNEL_POD:-} ]]; then
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -q -p magictunnel-tunnel-pod
    TUNNEL_POD="${CARGO_TARGET_DIR:-target}/release/tunnel-pod"
fi
OUT=${PERF_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/mtperf.XXXXXX")}
mkdir -p "$OUT"

# A mode with /wire (e.g. gre/wire) runs on the veth pair in wire mode, with its own veth row.
rows="1:veth" paths=""
for mode in $MODES; do
    [[ ${mode%/wire} == strongswan || ${mode%/wire} == veth ]] && continue
    [[ $mode == */wire && " $rows " != *" 1:veth/wire "* ]] && rows+=" 1:veth/wire"
    rows+=" 1:$mode" paths+=" ${mode%/wire}"
done
[[ -n $paths ]] || { echo "$0: no tunnel-pod mode in MODES" >&2; exit 64; }

ROWS="$rows" MODES="$paths" PERF_DIR="$OUT" TUNNEL_POD="$TUNNEL_POD" \
    scripts/bench-dataplane.sh "$DURATION"

for mode in $MODES; do
    # bench-dataplane's label of the row's first round.
    name=${mode/\/wire/+wire}
    data="$OUT/$name-1@1.data"
    [[ -s $data ]] || continue
    perf report -i "$data" --no-children -g none --sort dso,sym --stdio -q --percent-limit 0 \
        2>/dev/null >"$OUT/$name-symbols.txt" || true
    perf report -i "$data" --no-children -g none --sort comm --stdio -q --percent-limit 0 \
        2>/dev/null >"$OUT/$name-threads.txt" || true
    echo
    echo "## perf: $mode, one TCP stream, both tunnel-pods ($data)"
    "$PYTHON" - "$OUT/$name-symbols.txt" "$OUT/$name-threads.txt" "$TOP" <<'EOF'
import re, sys
symbols, threads, top = sys.argv[1], sys.argv[2], int(sys.argv[3])
row = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
rows = []
for line in open(symbols):
    m = row.match(line)
    if m:
        rows.append((float(m[1]), m[2], m[3], m[4]))
if not rows:
    sys.exit(f"no samples in {symbols}")
kernel = sum(p for p, _, mode, _ in rows if mode == "k")
user = sum(p for p, _, mode, _ in rows if mode != "k")
print(f"kernel {kernel:.1f} %, user {user:.1f} % of the samples")
print()
print("| self % | where | symbol |")
print("|---|---|---|")
for p, dso, mode, sym in rows[:top]:
    where = "kernel" if mode == "k" else dso
    print(f"| {p:.2f} | {where} | `{sym}` |")
by_thread = []
for line in open(threads):
    m = re.match(r"^\s*([\d.]+)%\s+(.*?)\s*$", line)
    if m:
        by_thread.append((float(m[1]), m[2]))
if by_thread:
    print()
    print("by thread: " + ", ".join(f"{name} {p:.1f} %" for p, name in by_thread))
EOF
done
echo
echo "perf data and reports: $OUT"
