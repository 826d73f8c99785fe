#!/usr/bin/env bash
# Container images without Docker: OCI image layout tars assembled from the release binaries
# (stripped, with exactly the shared libraries `ldd` lists: glibc, libm, libgcc_s and the loader),
# imported into containerd's k8s.io namespace.
#
#   e2e/images/build.sh [all|pause|operator|tunnel-pod ...]   (default: all)
#
#   magictunnel/operator:<tags>     /usr/local/bin/magictunnel-operator, user 65532:65532 (the chart's)
#   magictunnel/tunnel-pod:<tags>   /usr/local/bin/tunnel-pod, user 0 (capabilities come from the pod)
#   magictunnel.local/pause:3.10    a static pause() binary: the CRI sandbox image (local.sh sets it)
#
# Env: MT_IMAGE_TAGS (default "<chart appVersion> e2e"), MT_IMAGES_DIR (where the tars go,
#      default $CARGO_TARGET_DIR/images), MT_CLUSTER_DIR (its containerd is imported into; MT_IMPORT=0
#      only writes the tars), MT_SKIP_CARGO=1 (use the release binaries already built).
# Prints one JSON line per image (digest, sizes).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/e2e/images"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${MT_IMAGES_DIR:-$TARGET/images}"
APP_VERSION="$(awk -F'"' '/^appVersion:/ {print $2}' "$ROOT/charts/magictunnel/Chart.yaml")"
read -r -a TAGS <<< "${MT_IMAGE_TAGS:-$APP_VERSION e2e}"
SOCK="${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster}/containerd/containerd.sock"
WANT=("${@:-all}")
[ "${WANT[0]}" = all ] && WANT=(pause operator tunnel-pod)
mkdir -p "$OUT"

tag_args() { local t; for t in "$@"; do printf -- '--tag\n%s\n' "$t"; done; }

# The binary and every library ldd resolves for it (the loader included), at the same paths.
lib_args() {
  local bin="$1" lib
  if ! ldd "$bin" >/dev/null 2>&1; then return 0; fi  # static
  for lib in $(ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}'); do
    printf -- '--file\n%s:%s:0755\n' "$(readlink -f "$lib")" "$lib"
  done
}

build_one() {
  local what="$1" tar="$OUT/$1.oci.tar" args=()
  case "$what" in
    pause)
      gcc -static -Os -s -o "$OUT/pause" "$HERE/pause.c"
      args=(--name magictunnel.local/pause --tag 3.10 --entrypoint /pause --user 65535:65535
            --file "$OUT/pause:/pause:0755") ;;
    operator)
      local b="$OUT/magictunnel-operator"
      strip -o "$b" "$TARGET/release/magictunnel-operator"
      mapfile -t args < <(tag_args "${TAGS[@]}"; lib_args "$b")
      args+=(--name docker.io/magictunnel/operator --entrypoint /usr/local/bin/magictunnel-operator
             --user 65532:65532 --file "$b:/usr/local/bin/magictunnel-operator:0755") ;;
    tunnel-pod)
      local b="$OUT/tunnel-pod"
      strip -o "$b" "$TARGET/release/tunnel-pod"
      mapfile -t args < <(tag_args "${TAGS[@]}"; lib_args "$b")
      args+=(--name docker.io/magictunnel/tunnel-pod --entrypoint /usr/local/bin/tunnel-pod
             --user 0:0 --file "$b:/usr/local/bin/tunnel-pod:0755") ;;
    *) echo "unknown image $what (pause, operator, tunnel-pod)" >&2; exit 2 ;;
  esac
  /usr/bin/python3 "$HERE/oci.py" "$tar" "${args[@]}"
  if [ "${MT_IMPORT:-1}" = 1 ]; then
    [ -S "$SOCK" ] || { echo "no containerd at $SOCK (e2e/cluster/local.sh up, or MT_IMPORT=0)" >&2; exit 1; }
    ctr -a "$SOCK" -n k8s.io images import "$tar" >/dev/null
  fi
}

for w in "${WANT[@]}"; do
  if [ "$w" != pause ] && [ "${MT_SKIP_CARGO:-0}" != 1 ] && [ -z "${CARGO_DONE:-}" ]; then
    (cd "$ROOT" && cargo build -q --release -p magictunnel-operator -p magictunnel-tunnel-pod)
    CARGO_DONE=1
  fi
  build_one "$w"
done
