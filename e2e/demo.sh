#!/usr/bin/env bash
# Bring-up demo on a real single-node cluster built here (e2e/cluster/local.sh: kubelet,
# containerd, kube-proxy, ...): the chart installed with images built from this checkout
# (e2e/cluster/install-chart.sh), then the sample tunnels from examples/. Prints what the operator
# made of them, then keeps everything running until Enter or Ctrl-C (KUBECONFIG is printed so you
# can look around with kubectl).
#
# The tunnel pods run on the node with hostNetwork. No peer is set up here yet and the examples'
# local endpoints (192.0.2.10/11) are not addresses of this host, so the tunnel pods start, log
# "is it an address of this host?" and restart; tunnels report Ready=False.
set -euo pipefail
cd "$(dirname "$0")/.."
export MT_CLUSTER_DIR="${MT_CLUSTER_DIR:-/tmp/magictunnel-demo}"
export MT_API_PORT="${MT_API_PORT:-64443}" MT_ETCD_PORT="${MT_ETCD_PORT:-23900}"
cleanup() { e2e/cluster/local.sh down || true; }
trap cleanup EXIT INT TERM

export KUBECONFIG
KUBECONFIG="$(e2e/cluster/local.sh up)"
e2e/cluster/install-chart.sh >/dev/null
KUBECTL="$(e2e/cluster/build-k8s.sh kubectl)/kubectl"

"$KUBECTL" apply -f examples/gre.yaml -f examples/ipsec-generated-psk.yaml -f examples/ipsec-own-psk.yaml
sleep 3
echo; echo "== hq-ipsec waits for its Secret:"; "$KUBECTL" get mt hq-ipsec -o jsonpath='{.status.conditions[0].message}'; echo
"$KUBECTL" create secret generic hq-psk --from-literal=psk="$(head -c 32 /dev/urandom | base64)"
sleep 5
echo; echo "== operator"; "$KUBECTL" -n magictunnel-system get deploy,pods -o wide
echo; echo "== tunnels"; "$KUBECTL" get mt
echo; echo "== IKE IDs of branch-ipsec"; "$KUBECTL" get mt branch-ipsec -o jsonpath='{.status.ikeIds}'; echo
echo; echo "== objects"; "$KUBECTL" get pods,secrets -o wide
echo; echo "== a tunnel pod's log"; "$KUBECTL" logs branch-gre-0 --tail=5 || true
echo; echo "== events"; "$KUBECTL" get events.events.k8s.io
op_ip="$("$KUBECTL" -n magictunnel-system get pods -l app.kubernetes.io/instance=mt -o jsonpath='{.items[0].status.podIP}')"
echo; echo "== operator metrics"; curl -s "http://$op_ip:8080/metrics" | grep -E '^magictunnel_operator_(reconciles|tunnels_not_deployed)' || true
echo; echo "KUBECONFIG=$KUBECONFIG"
echo "tear down: Enter here, or MT_CLUSTER_DIR=$MT_CLUSTER_DIR e2e/cluster/local.sh down"
if [ -t 0 ]; then read -r -p "Press Enter to tear everything down. "; fi
