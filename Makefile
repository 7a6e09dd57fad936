# edgeward developer entry points. `make run` and `make test` do all the set-up they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the project needs: redis-server (replay store, tests), libsodium-dev (native crypto).
SYSTEM_PACKAGES := redis-server libsodium-dev pkg-config

.PHONY: all install deps run test bench lint proto clean

all: test

deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	pkg-config --exists libsodium 2>/dev/null || missing="$$missing libsodium-dev"; \
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
	exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

proto: install
	$(BIN)/python tools/gen_proto.py

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
