#!/usr/bin/env bash
# Build Kubernetes server binaries from the Go module proxy (no container registry, no release
# downloads here) into $MAGICTUNNEL_CACHE/k8s-$VERSION/bin. Cached: a second run is instant.
#   e2e/cluster/build-k8s.sh [component...]   (default: kube-apiserver)
set -euo pipefail
VERSION="${K8S_VERSION:-v1.34.3}"
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
OUT="$CACHE/k8s-$VERSION/bin"
COMPONENTS=("${@:-kube-apiserver}")
mkdir -p "$OUT"

missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$OUT/$c" ] || missing+=("$c"); done
[ ${#missing[@]} -eq 0 ] && { echo "$OUT"; exit 0; }

work="$CACHE/k8s-$VERSION/src"
mkdir -p "$work"
cd "$work"
if [ ! -f go.mod ]; then
  go mod init magictunnel.dev/k8s-build >/dev/null 2>&1
  # k8s.io/kubernetes replaces every staging module with a local path; point each at the
  # published v0.X.Y module of the same release instead.
  gomod="$(go mod download -json "k8s.io/kubernetes@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  staging_version="v0.${VERSION#v1.}"
  {
    echo "require k8s.io/kubernetes $VERSION"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
  printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\nfunc main() {}\n' > tools.go
  go mod tidy >/dev/null 2>&1 || true
fi
for c in "${missing[@]}"; do
  echo "building $c $VERSION (several minutes, once)" >&2
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${VERSION#v1.}" -o "$OUT/$c" "k8s.io/kubernetes/cmd/$c"
done
echo "$OUT"
