# Shared by the benchmark and demo scripts (source it): the two-namespace link they measure over, the
# cleanup of the processes in PIDS, the namespaces in NAMESPACES and the directory WORK, and
# strongSwan peers in namespaces.

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

# strongSwan's charon as a peer inside a namespace. kernel-libipsec is the dataplane: ESP in
# userspace through a TUN device (the kernel here has no ESP), always UDP-encapsulated, with
# routes to the remote traffic selectors installed by charon (table 220).
CHARON=/usr/lib/ipsec/charon
CHARON_LIBIPSEC=/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so
# `aesni` before `aes`/`gcm`, as Debian's modular default loads it, or ESP falls back to
# portable C AES-GCM (BENCHMARKS.md, issue #4). CHARON_PLUGINS replaces the list.
CHARON_PLUGINS=${CHARON_PLUGINS:-random nonce aesni aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey gmp curve25519 kdf openssl kernel-libipsec kernel-netlink socket-default vici updown}

# need_strongswan: installs strongswan-charon, strongswan-swanctl and libcharon-extra-plugins
# with apt-get if they are missing; returns 1 (with a message) if charon, kernel-libipsec,
# swanctl, unshare or /dev/net/tun are still not there.
need_strongswan() {
    local pkg missing=()
    for pkg in strongswan-charon strongswan-swanctl libcharon-extra-plugins; do
        [[ $(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "$0: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
        # Without systemd/init here the package starts no charon; one started in the root
        # namespaces would not interfere (own /run, own sockets below).
    fi
    for pkg in swanctl unshare; do
        command -v "$pkg" >/dev/null || { echo "$0: $pkg not found" >&2; return 1; }
    done
    [[ -x $CHARON && -f $CHARON_LIBIPSEC ]] || { echo "$0: $CHARON or kernel-libipsec missing" >&2; return 1; }
    [[ -c /dev/net/tun ]] || { echo "$0: /dev/net/tun missing (kernel-libipsec needs TUN)" >&2; return 1; }
}

# charon_conf DIR [NAT_T_PORT]: DIR/strongswan.conf for one charon: IKE on UDP 500 and
# NAT_T_PORT (default 4500), its log in DIR/charon.log, its vici socket DIR/charon.vici.
charon_conf() {
    local dir=$1 nat_t=${2:-4500}
    mkdir -p "$dir"
    cat >"$dir/strongswan.conf" <<CONF
charon {
    load = $CHARON_PLUGINS
    install_routes = yes
    install_virtual_ip = no
    port = 500
    port_nat_t = $nat_t
    filelog {
        charon {
            path = $dir/charon.log
            time_format = %T
            default = 1
            flush_line = yes
        }
    }
    plugins {
        vici {
            socket = unix://$dir/charon.vici
        }
    }
}
CONF
}

# start_charon DIR NS: charon with DIR/strongswan.conf in NS, in its own mount namespace with a
# private /run (it writes /run/charon.pid, so two cannot share one); its PID joins PIDS. Waits
# up to 10 s for the vici socket, then loads DIR/swanctl.conf. Returns 1 (output on stderr) if
# either fails.
start_charon() {
    local dir=$1 ns=$2
    rm -f "$dir/charon.vici"
    # ip netns exec, unshare and sh all exec, so $! is charon itself.
    STRONGSWAN_CONF="$dir/strongswan.conf" ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/strongswan && exec "$0"' "$CHARON" \
        </dev/null >"$dir/charon.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        [[ -S $dir/charon.vici ]] && break
        sleep 0.1
    done
    [[ -S $dir/charon.vici ]] || {
        cat "$dir/charon.out" >&2 2>/dev/null || true
        echo "$0: charon in $ns did not open its vici socket within 10 s" >&2
        return 1
    }
    swan "$dir" --load-all --noprompt --file "$dir/swanctl.conf" >"$dir/load.out" 2>&1 || {
        cat "$dir/load.out" >&2
        echo "$0: swanctl --load-all failed for $dir" >&2
        return 1
    }
}

# swan DIR ARGS…: swanctl ARGS against the charon of DIR.
swan() { local dir=$1; shift; swanctl "$@" --uri "unix://$dir/charon.vici"; }

# charon_installed DIR: the charon of DIR has a CHILD_SA INSTALLED.
charon_installed() { swan "$1" --list-sas --raw 2>/dev/null | grep -q 'state=INSTALLED'; }
