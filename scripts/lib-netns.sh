# Shared by the benchmark scripts (source it): the two-namespace link they measure over, and the
# cleanup of the processes in PIDS, the namespaces in NAMESPACES and the directory WORK.

# reap_lab: SIGTERM every PID, SIGKILL what is left after 5 s, kill whatever still runs in the
# namespaces, delete them and the work directory.
reap_lab() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# make_link: namespaces NS_A and NS_B (recorded for reap_lab) joined by the veth pair VETH_A /
# VETH_B, addressed 203.0.113.1/24 and 203.0.113.2/24, everything up.
make_link() {
    local ns
    for ns in "$NS_A" "$NS_B"; do
        ip netns add "$ns"
        NAMESPACES+=("$ns")
        ip -n "$ns" link set lo up
    done
    ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
    ip -n "$NS_A" addr add 203.0.113.1/24 dev "$VETH_A"
    ip -n "$NS_B" addr add 203.0.113.2/24 dev "$VETH_B"
    ip -n "$NS_A" link set "$VETH_A" up
    ip -n "$NS_B" link set "$VETH_B" up
}
