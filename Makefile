# Plantwatch — the two commands a newcomer needs:
#   make demo   run the sample plant on this machine (embedded default), live console output
#   make test   install everything the tests need, build the tools, run every test
# Everything installed or built lands in ignored folders (.venv/, .cache/).

SHELL := /bin/bash
# Go and rustup's cargo where this kind of machine installs them, even when a non-login shell's PATH lacks them.
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(HOME)/.cargo/bin:$(PATH)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
DEBIAN_PACKAGES := mosquitto mosquitto-clients postgresql prometheus prometheus-alertmanager cmake ninja-build g++ libgtest-dev nlohmann-json3-dev
DEMO_SECONDS ?= 120

.PHONY: demo cluster test deps python-deps debian-deps tools generate check format test-python test-host test-firmware test-e2e bench soak fuzz clean

demo: python-deps debian-deps
	$(VENV)/bin/plantwatch up -f examples/plant --simulate --duration $(DEMO_SECONDS) --summary-json $(CACHE)/demo-summary.json
	@echo "summary: $(CACHE)/demo-summary.json"

# The bundled control plane (docs/getting-started.md): the tests' real Kubernetes API server, controller manager
# and scheduler, with kwok simulating the edge's nodes and pods, until Ctrl-C; kubeconfig at .cache/cluster/kubeconfig.
cluster: python-deps
	bash tools/build-go-tools.sh
	$(PY) tests/e2e/cluster.py up --kubeconfig $(CACHE)/cluster/kubeconfig

test: deps
	$(MAKE) -j2 --output-sync=target tools test-firmware
	$(MAKE) check
	$(MAKE) test-python

deps: python-deps debian-deps

# The virtual environment is rebuilt only when pyproject.toml changes.
python-deps: $(CACHE)/venv.stamp
$(CACHE)/venv.stamp: pyproject.toml
	@mkdir -p $(CACHE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Debian packages of the real servers the tests talk to (root, as on CI machines).
debian-deps: $(CACHE)/debian.stamp
$(CACHE)/debian.stamp: Makefile
	@mkdir -p $(CACHE)
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $@

# Real Kubernetes control plane, kwok and helm (Go module proxy), and InfluxDB 2.x (Go + its
# Rust libflux from crates.io), built into .cache/bin.
tools:
	bash tools/build-go-tools.sh
	bash tools/build-influxdb.sh

generate: python-deps
	$(PY) tools/generate.py

# Drift and style checks: the generated spec classes must match crds/; ruff (configured in
# pyproject.toml) lints and checks the formatting of every Python file (`make format` fixes it).
check: python-deps
	$(PY) tools/generate.py --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: python-deps
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test-firmware: debian-deps
	cmake -S firmware -B $(CACHE)/firmware-build -G Ninja -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(CACHE)/firmware-build
	ctest --test-dir $(CACHE)/firmware-build --output-on-failure

# The end-to-end suite mostly waits on its control plane, so it runs beside the rest of the tests
# (two pytest processes; each prints its report when it ends). Each draws its servers' ports from its
# own range below the kernel's ephemeral ports (PLANTWATCH_PORT_RANGE, plantwatch.mqtt.broker.free_port).
test-python: python-deps
	$(MAKE) -j2 --output-sync=target test-e2e test-host

test-host: python-deps
	PLANTWATCH_PORT_RANGE=26000-31999 $(PY) -m pytest -q tests --ignore=tests/e2e

test-e2e: python-deps tools
	PLANTWATCH_PORT_RANGE=20000-25999 $(PY) -m pytest -q tests/e2e

# The whole pipeline (decode → rules → SQLite) under structure-aware fuzzing: FUZZ_CASES generated
# messages shared among the formats; `make test` runs a slice of 7,000 (tests/unit/test_pipeline_fuzz.py).
FUZZ_CASES ?= 1000000
fuzz: python-deps
	FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest -q -p no:cacheprovider -o timeout=0 tests/unit/test_pipeline_fuzz.py

# Benchmarks: ratios against a baseline measured in the same run (see bench/*.py); the InfluxDB run needs the built influxd.
bench: python-deps debian-deps tools
	$(PY) bench/ingest.py
	$(PY) bench/inference.py
	$(PY) bench/images.py
	$(PY) bench/scale_out.py
	$(PY) bench/store.py
	$(PY) bench/detection.py
	$(PY) bench/operator.py
	$(PY) bench/node_status.py

# Soak: SOAK_MESSAGES hostile messages (distinct topics, unknown nodes, Sparkplug births) through
# mosquitto to a running gateway, whose RSS must stay flat; `make test` runs 200,000 of them.
SOAK_MESSAGES ?= 2000000
soak: python-deps debian-deps
	SOAK_MESSAGES=$(SOAK_MESSAGES) $(PY) -m pytest -q -s -o timeout=7200 tests/integration/test_soak_memory.py

clean:
	rm -rf $(CACHE)/firmware-build $(CACHE)/venv.stamp
