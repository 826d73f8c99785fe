#!/usr/bin/env bash
# strongSwan baseline alone: iperf3 through two strongSwan peers (kernel-libipsec, ESP
# AES-256-GCM-16 in UDP 4500, IKEv2 PSK, `aesni` loaded) beside the raw veth, as the `1:veth` and
# `1:strongswan` rows of scripts/bench-dataplane.sh, which holds the setup (one copy of it).
#
#   sudo scripts/bench-strongswan.sh [DURATION_SECONDS]     (default: 10)
#
# Prints that script's table (Gbit/s, / veth, retransmits, charon CPU-s/GB). Installs
# strongswan-charon, strongswan-swanctl and libcharon-extra-plugins with apt-get if missing.
set -euo pipefail
ROWS="1:veth 1:strongswan" MODES=strongswan exec "$(dirname "$0")/bench-dataplane.sh" "${1:-10}"
