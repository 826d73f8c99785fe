# Shared by the benchmark scripts (source it): cleanup of the processes in PIDS, the network
# namespaces in NAMESPACES and the directory WORK, for `trap … EXIT`.

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
