#!/usr/bin/env bash
# Runs every cargo-fuzz target of tunnel-pod briefly (FUZZ_SECONDS each, default 30). Needs the
# nightly toolchain; cargo-fuzz itself and the fuzz build are cached under $MAGICTUNNEL_CACHE.
set -euo pipefail
cd "$(dirname "$0")/../tunnel-pod"
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
SECONDS_EACH="${FUZZ_SECONDS:-30}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
  exit 1
fi
if [ ! -x "$CACHE/cargo-fuzz/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz (once)" >&2
  cargo install --locked --root "$CACHE/cargo-fuzz" cargo-fuzz >/dev/null
fi
export PATH="$CACHE/cargo-fuzz/bin:$PATH" CARGO_TARGET_DIR="$CACHE/fuzz-target"
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${SECONDS_EACH}s" >&2
  mkdir -p "$CACHE/fuzz-corpus/$target"
  cargo +nightly fuzz run "$target" "$CACHE/fuzz-corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 12
done
