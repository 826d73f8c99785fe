#!/usr/bin/env bash
# How much of ESP's cost is the cipher: the ESP rows of scripts/bench-dataplane.sh with
# tunnel-pod as built and, in the same rounds, with a diagnostic build whose AES-GCM seal and open
# are removed (scripts/no-cipher.patch, applied in a temporary git worktree). Everything else is
# the shipped code: segmenting, ESP framing and padding, the replay window, UDP GSO/GRO,
# coalescing, metrics. The "before" rows of the table are that build.
#
#   sudo scripts/bench-ceiling.sh [DURATION_SECONDS]     (default: 8)
#
# The diagnostic build sends plaintext under a zero ICV and accepts any ICV: it exists only in
# the worktree, which is removed on exit, and is run only between the benchmark's namespaces.
# Environment: REPEAT (default 3), ROWS (default "1:veth 1:esp 4:esp 4:veth 1:strongswan"),
# TUNNEL_POD (skip the build of the current tree), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-8}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 && $# -le 1 ]] || {
    echo "usage: $0 [DURATION_SECONDS]" >&2
    exit 64
}
[[ $EUID -eq 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtceiling.XXXXXX")
TREE="$WORK/tree"
cleanup() {
    git worktree remove --force "$TREE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
# The diagnostic build has a target directory of its own (kept, so that later runs are quick).
# Not the shared one: with this script's first version the worktree's build replaced
# release/tunnel-pod there, the current tree's build that followed counted as up to date, and
# both rows ran the no-cipher code (the cmp below catches that).
git worktree add -q --detach "$TREE" HEAD
# When esp/suite.rs has moved on, this fails: the patch is two edits, described in BENCHMARKS.md.
git -C "$TREE" apply "$PWD/scripts/no-cipher.patch"
(cd "$TREE" && CARGO_TARGET_DIR="$TARGET/no-cipher" cargo build --release -q -p magictunnel-tunnel-pod)
NO_CIPHER="$TARGET/no-cipher/release/tunnel-pod"
if [[ -z ${TUNNEL_POD:-} ]]; then
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p magictunnel-tunnel-pod
    TUNNEL_POD="$TARGET/release/tunnel-pod"
fi
if cmp -s "$TUNNEL_POD" "$NO_CIPHER"; then
    echo "$0: $TUNNEL_POD is the no-cipher build itself" >&2
    exit 1
fi

echo "# \"before\" rows: the no-cipher diagnostic build (scripts/no-cipher.patch on $(git rev-parse --short HEAD))"
ROWS=${ROWS:-1:veth 1:esp 4:esp 4:veth 1:strongswan} REPEAT=${REPEAT:-3} \
    TUNNEL_POD="$TUNNEL_POD" TUNNEL_POD_BEFORE="$NO_CIPHER" \
    scripts/bench-dataplane.sh "$DURATION"
