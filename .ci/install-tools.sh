#!/usr/bin/env bash
# Everything the tests need beyond Rust and Go, installed idempotently. Heavy Go builds (helm,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl) are cached
# under $MAGICTUNNEL_CACHE.
set -euo pipefail
CACHE="${MAGICTUNNEL_CACHE:-/var/cache/magictunnel}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
mkdir -p "$CACHE/bin"

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
# make verify-kat: the known-answer scripts recompute vectors with Debian's interpreter, its
# `cryptography` (AES-CBC/GCM; scapy's ESP in the netns tests needs it too) and `mpmath` (the
# RFC 3526 primes from pi).
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || need_apt+=(python3-cryptography)
/usr/bin/python3 -c 'import mpmath' 2>/dev/null || need_apt+=(python3-mpmath)
# The dataplane tests: packet dissection, frame crafting, throughput, namespaces.
command -v tshark >/dev/null || need_apt+=(tshark)
/usr/bin/python3 -c 'import scapy' 2>/dev/null || need_apt+=(python3-scapy)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v ip >/dev/null || need_apt+=(iproute2)
# netns_gre_gro and bench-dataplane's wire rows: a veth's GRO, TSO and checksum offload.
command -v ethtool >/dev/null || need_apt+=(ethtool)
# IKEv2 interop (netns_ike): strongSwan's charon with kernel-libipsec, and a NAT namespace.
for pkg in strongswan-charon strongswan-swanctl libcharon-extra-plugins iptables; do
  [ "$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || need_apt+=("$pkg")
done
# The local Kubernetes node (e2e/cluster/local.sh): container runtime, CNI plugins, kube-proxy's
# iptables/conntrack; gcc + libc6-dev build the static pause binary (e2e/images/build.sh).
for pkg in containerd runc containernetworking-plugins conntrack gcc libc6-dev; do
  [ "$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$CACHE/bin/helm" ]; then
  echo "building helm $HELM_VERSION (once)" >&2
  GOBIN="$CACHE/bin" CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

"$(dirname "$0")/../e2e/cluster/build-k8s.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl >/dev/null
