# edgeward developer entry points. `make run` and `make test` do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the project needs: redis-server (replay store, tests), libsodium-dev (native crypto),
# chromium (the headless browser test of examples/web, tests/integration/test_browser.py).
SYSTEM_PACKAGES := redis-server libsodium-dev pkg-config chromium

.PHONY: all install deps run test bench loadtest fuzz lint proto clean

all: test

deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	pkg-config --exists libsodium 2>/dev/null || missing="$$missing libsodium-dev"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian packages:$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "missing system packages:$$missing"; \
			echo "install them with: sudo apt-get install$$missing"; exit 1; \
		fi; \
	fi

# The native modules are built by the editable install; editing ext/ rebuilds them.
$(STAMP): pyproject.toml setup.py $(wildcard ext/edgeward/*.pxd ext/edgeward/native/*.pyx ext/edgeward/native/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel 'Cython>=3.1,<4'
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[dev]'
	touch $@

install: deps $(STAMP)

run: install
	$(BIN)/edgeward dev

test: install
	$(BIN)/python -m pytest tests

# Budgets (ratios measured in one run) and the end-to-end table; see docs/performance.md.
# Every part runs even when an earlier one misses a budget; the target fails if any did.
bench: install
	@status=0; \
	$(BIN)/python -m pytest bench -s -p no:cacheprovider --benchmark-columns=min,median,max,rounds || status=1; \
	$(BIN)/python -m bench.e2e || status=1; \
	$(BIN)/python -m bench.push || status=1; \
	$(BIN)/python -m bench.workers || status=1; \
	$(BIN)/python -m bench.latency || status=1; \
	exit $$status

# Locust, headless, against a stack of its own (or the EDGEWARD_LOADTEST_* target); fails on a
# budget of loadtest/budgets.toml. LOADTEST_ARGS picks the shape: --shape steps, --users 50.
loadtest: install
	$(BIN)/python -m loadtest $(LOADTEST_ARGS)

# Coverage-guided fuzzing (docs/fuzzing.md): each target for FUZZ_SECONDS on a corpus that grows
# in build/fuzz/corpus/; findings go to build/fuzz/artifacts/. Every target runs; any finding fails.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= envelope envelope_wire public resp http11 grpc_web
fuzz: install
	$(BIN)/python tests/fuzz/seeds.py build/fuzz/corpus
	@mkdir -p build/fuzz/artifacts; status=0; \
	for target in $(FUZZ_TARGETS); do \
		echo "fuzz_$$target: $(FUZZ_SECONDS) s"; \
		$(BIN)/python tests/fuzz/fuzz_$$target.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/$$target- build/fuzz/corpus/$$target || status=1; \
	done; \
	exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

proto: install
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
