# MagicTunnel. The two commands a newcomer needs:
#   make demo   bring up a local control plane, the operator and sample tunnels
#   make test   everything CI runs (installs its own tools first)
SHELL := /bin/bash
export MAGICTUNNEL_CACHE ?= /var/cache/magictunnel
export PATH := $(MAGICTUNNEL_CACHE)/bin:$(PATH)
HELM_VERSION ?= v3.19.0

.PHONY: demo test tools unit e2e lint crds bench

demo: tools
	e2e/demo.sh

test: tools lint unit e2e

tools:
	.ci/install-tools.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

e2e:
	e2e/run-local.sh

crds:
	cargo run -q -p magictunnel-operator -- crd > crds/magictunnel.yaml
	cp crds/magictunnel.yaml charts/magictunnel/crds/magictunnel.yaml

bench:
	cargo bench -p magictunnel-operator --bench pure_path
