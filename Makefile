# MagicTunnel. The two commands a newcomer needs:
#   make demo   a single-node Kubernetes built here (kubelet, containerd), the chart with images
#               built from this checkout, a GRE and an IPsec MagicTunnel, a branch router in a
#               network namespace (tunnel-pod, strongSwan over IKEv2), traffic through both, then
#               `kubectl get mt` / `describe`; Enter tears it down
#   make test   everything CI runs (installs its own tools first)
SHELL := /bin/bash
export MAGICTUNNEL_CACHE ?= /var/cache/magictunnel
export PATH := $(MAGICTUNNEL_CACHE)/bin:$(PATH)
HELM_VERSION ?= v3.19.0

.PHONY: demo demo-tunnels test tools unit netns-test fuzz e2e lint crds bench bench-dataplane

demo: tools
	e2e/demo.sh

# The dataplane alone, without Kubernetes: tunnel-pods and strongSwan in network namespaces.
demo-tunnels:
	scripts/demo-tunnels.sh

test: tools lint unit verify-kat netns-test fuzz e2e

tools:
	.ci/install-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

# Known answers recomputed with implementations independent of ours (Python hashlib/hmac,
# `cryptography`, mpmath). verify_kat.py checks tunnel-pod/src/esp/kat.rs itself; the IKE scripts
# print name=hex lines, each of which must appear in the Rust file whose tests use it. A verify
# script missing from IKE_KAT fails the target.
IKE_KAT := verify_kdf.py:src/crypto/keys.rs verify_sk.py:src/crypto/sk.rs verify_modp.py:src/crypto/dh.rs
.PHONY: verify-kat
verify-kat:
	/usr/bin/python3 tunnel-pod/tests/verify_kat.py
	set -eo pipefail; cd tunnel-pod/ike; \
	for f in tests/verify_*.py; do \
	  case " $(IKE_KAT) " in *" $${f#tests/}:"*) ;; *) echo "$$f is not in IKE_KAT" >&2; exit 1;; esac; \
	done; \
	for pair in $(IKE_KAT); do \
	  echo "tests/$${pair%%:*}"; \
	  /usr/bin/python3 "tests/$${pair%%:*}" | /usr/bin/python3 ../tests/kat_lines_in_source.py "$${pair#*:}"; \
	done

# cargo-fuzz targets (ESP, GRE, offload, IKE), FUZZ_SECONDS each (default 20); nightly toolchain.
fuzz:
	.ci/fuzz.sh

# Dataplane tests in network namespaces (root): two tunnel-pods, tshark, scapy, iperf3; IKEv2
# interop with strongSwan (MT_IKE_SOAK_SECONDS sets the rekey soak, default 180).
# harness_rekey_soak (strongSwan against strongSwan for 3 minutes, a self-check of the rig, not of
# tunnel-pod) is left to a manual run: libipsec's own loss during rekeys sits near its 1 % limit.
# pod_rekey_soak, the same soak against tunnel-pod, runs.
netns-test:
	cargo test -p magictunnel-tunnel-pod --test netns_gre --test netns_gre_tx --test netns_esp --test netns_ike --test netns_ike_hostile --test netns_shared_endpoint --test netns_ike_initiator --test netns_offload --test netns_esp_gso --test netns_gre_gro -- --ignored --test-threads=1 --skip harness_rekey_soak

e2e:
	e2e/run-local.sh

# The local single-node cluster by hand: `make cluster-up chart` leaves it running
# (KUBECONFIG=$${MT_CLUSTER_DIR:-/tmp/magictunnel-cluster}/admin.kubeconfig); `make cluster-down`.
.PHONY: cluster-up cluster-down images chart
cluster-up: tools
	e2e/cluster/local.sh up
cluster-down:
	e2e/cluster/local.sh down
# OCI image tars from the release binaries, imported into the local cluster's containerd
# (MT_IMPORT=0: tars only).
images:
	e2e/images/build.sh
chart:
	e2e/cluster/install-chart.sh

crds:
	cargo run -q -p magictunnel-operator -- crd > crds/magictunnel.yaml
	cp crds/magictunnel.yaml charts/magictunnel/crds/magictunnel.yaml

bench: bench-dataplane
	cargo bench -p magictunnel-operator --bench pure_path
	cargo bench -p magictunnel-tunnel-pod --bench gre_path

# One table from one run: raw veth, GRE, ESP AES-256-GCM, ESP AES-256-CBC + HMAC-SHA2-256 (1 and 4
# TCP streams) and strongSwan kernel-libipsec, with Gbit/s, / veth and tunnel-pod CPU-s/GB
# (BENCHMARKS.md, issue #12). TUNNEL_POD_ARGS, MODES and ROWS pass through the environment.
bench-dataplane:
	scripts/bench-dataplane.sh

# The ESP rows beside a diagnostic build without AES-GCM, in the same rounds: how much of the cost
# is the cipher (BENCHMARKS.md, issue #12, fifth session).
.PHONY: bench-ceiling
bench-ceiling:
	scripts/bench-ceiling.sh

# perf record -e cpu-clock -g of both tunnel-pods during one ESP and one GRE stream: top symbols,
# kernel / user split. Run it on an idle machine.
.PHONY: perf-dataplane
perf-dataplane:
	scripts/perf-dataplane.sh

# 1,000 IKE SAs against one tunnel-pod, and handshakes/s beside strongSwan (issue #10).
.PHONY: bench-ike
bench-ike:
	scripts/bench-ike.sh
