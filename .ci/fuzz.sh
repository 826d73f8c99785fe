#!/usr/bin/env bash
# Runs every cargo-fuzz target of tunnel-pod briefly (FUZZ_SECONDS per target, default 20). Needs
# the nightly toolchain; cargo-fuzz itself and the fuzz build are cached under $MAGICTUNNEL_CACHE.
# Fails when there is no target, when a target does not build, and when one finds a crash.
set -euo pipefail
cd "$(dirname "$0")/../tunnel-pod"
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
SECONDS_EACH="${FUZZ_SECONDS:-20}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
  exit 1
fi
if [ ! -x "$CACHE/cargo-fuzz/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz (once)" >&2
  cargo install --locked --root "$CACHE/cargo-fuzz" cargo-fuzz >/dev/null
fi
export PATH="$CACHE/cargo-fuzz/bin:$PATH" CARGO_TARGET_DIR="$CACHE/fuzz-target"
# `cargo fuzz list` failing or listing nothing is an error: a loop over no targets would pass.
targets="$(cargo +nightly fuzz list)"
if [ -z "$targets" ]; then
  echo "fuzz: cargo fuzz list found no targets in $(pwd)/fuzz" >&2
  exit 1
fi
for target in $targets; do
  echo "fuzz: $target for ${SECONDS_EACH}s" >&2
  mkdir -p "$CACHE/fuzz-corpus/$target"
  log="$(mktemp)"
  # On failure the last 40 lines: the crash input and backtrace sit above the final stats.
  # Committed seeds (fuzz/corpus-seeds/<target>, when there are some) are read beside the
  # cached corpus, which is the one libFuzzer writes to.
  seeds=()
  [ -d "fuzz/corpus-seeds/$target" ] && seeds=("fuzz/corpus-seeds/$target")
  if ! cargo +nightly fuzz run "$target" "$CACHE/fuzz-corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "fuzz: $target failed" >&2
    exit 1
  fi
  tail -n 12 "$log"
  rm -f "$log"
done
