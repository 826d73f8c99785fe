#!/usr/bin/env bash
# How much of ESP's cost is the cipher: the ESP rows of scripts/bench-dataplane.sh with
# tunnel-pod as built and, in the same rounds, with a diagnostic build whose AES-GCM seal and open
# are removed (scripts/no-cipher.patch, applied in a temporary git worktree). Everything else is
# the shipped code: segmenting, ESP framing and padding, the replay window, UDP GSO/GRO,
# coalescing, metrics. The "before" rows of the table are that build.
#
#   sudo scripts/bench-ceiling.sh [DURATION_SECONDS]     (default: 8)
#
# The diagnostic build sends plaintext under a zero ICV and accepts any ICV. It is run only
# between the benchmark's namespaces; the worktree and the diagnostic executables are removed on
# exit (its target directory, $CARGO_TARGET_DIR/no-cipher, keeps the compiled dependencies).
# The current tree's row is the working tree; the diagnostic build is HEAD with the patch, so
# uncommitted changes to tunnel-pod make the two rows different code (a warning says so).
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
    # The executable and the copy cargo keeps of it in deps/.
    if [[ -n ${NO_CIPHER:-} ]]; then
        rm -f "$NO_CIPHER" "${NO_CIPHER%/*}"/deps/tunnel_pod-*
    fi
}
trap cleanup EXIT

# Absolute: the diagnostic build runs inside the worktree.
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-target}")
NO_CIPHER="$TARGET/no-cipher/release/tunnel-pod"
# The diagnostic build has a target directory of its own (its dependencies are kept).
# Not the shared one: with this script's first version the worktree's build replaced
# release/tunnel-pod there, the current tree's build that followed counted as up to date, and
# both rows ran the no-cipher code (the cmp below catches that).
git worktree add -q --detach "$TREE" HEAD
# When esp/suite.rs has moved on, this fails: the patch is two edits, described in BENCHMARKS.md.
git -C "$TREE" apply "$PWD/scripts/no-cipher.patch"
(cd "$TREE" && CARGO_TARGET_DIR="$TARGET/no-cipher" cargo build --release -q -p magictunnel-tunnel-pod)
git diff --quiet HEAD -- tunnel-pod ||
    echo "$0: warning: tunnel-pod has uncommitted changes; the no-cipher build is of HEAD" >&2
if [[ -z ${TUNNEL_POD:-} ]]; then
    CARGO_TARGET_DIR=$TARGET cargo build --release -q -p magictunnel-tunnel-pod
    TUNNEL_POD="$TARGET/release/tunnel-pod"
fi
[[ -x $NO_CIPHER && -x $TUNNEL_POD ]] || { echo "$0: a build is missing" >&2; exit 1; }
if cmp -s "$TUNNEL_POD" "$NO_CIPHER"; then
    echo "$0: $TUNNEL_POD is the no-cipher build itself" >&2
    exit 1
fi

echo "# \"before\" rows: the no-cipher diagnostic build (scripts/no-cipher.patch on $(git rev-parse --short HEAD))"
ROWS=${ROWS:-1:veth 1:esp 4:esp 4:veth 1:strongswan} REPEAT=${REPEAT:-3} \
    TUNNEL_POD="$TUNNEL_POD" TUNNEL_POD_BEFORE="$NO_CIPHER" \
    scripts/bench-dataplane.sh "$DURATION"
