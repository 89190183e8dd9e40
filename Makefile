# The two front-door commands: `make demo` and `make test`.
#
# Python packages come only from the hashed lock files requirements*.txt
# (pip --require-hashes); `make lock` re-resolves them deliberately.
#   requirements-demo.txt   the package with its runtime extras (platform): `make demo`
#   requirements.txt    that plus the test and lint tools: `make test`, `make unit`
#   requirements-agent.txt  a node's agent alone (no platform extra)
#   pylock.toml         dev's pins again in the standard format (PEP 751), for tools that read it
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check --no-input -q
DEMO_STAMP := $(VENV)/.demo-stamp
DEV_STAMP  := $(VENV)/.dev-stamp
UV_COMPILE := $(BIN)/uv pip compile -q --generate-hashes --universal --python-version 3.11

.PHONY: demo test lint typecheck unit system-deps system-deps-demo bench lock lock-upgrade \
	install-demo install-dev clean buildinfo smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The project itself goes in without build isolation, so its build backend is the
# locked setuptools, not whatever pip would fetch.
$(DEMO_STAMP): requirements-demo.txt pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes --no-deps -r requirements-demo.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(PIP) install --require-hashes --no-deps -r requirements.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@ $(DEMO_STAMP)

install-demo: $(DEMO_STAMP)
install-dev: $(DEV_STAMP)

system-deps-demo:
	@scripts/install-system-deps.sh demo

system-deps:
	@scripts/install-system-deps.sh test

demo: system-deps-demo $(DEMO_STAMP)
	$(BIN)/powernode demo

lint: $(DEV_STAMP)
	$(BIN)/ruff check --no-cache src tests bench
	$(BIN)/ruff format --no-cache --check src tests bench
	$(BIN)/lint-imports --no-cache  # the layering: .importlinter

typecheck: $(DEV_STAMP)
	$(BIN)/mypy --strict src

unit: $(DEV_STAMP)
	$(BIN)/pytest -m "not mount and not cgroup and not slow and not tool"

test: system-deps $(DEV_STAMP) lint typecheck
	$(BIN)/pytest

# The first real boot (docs/boot.md): kernel-initrd + system-base under QEMU to a heartbeat
# with drift false, a reboot, a refused seed and terminate, watched through the platform's
# API; `make test` runs it too (markers qemu, slow).
smoke: system-deps $(DEV_STAMP)
	$(BIN)/pytest -s tests/image/test_smoke_boot.py

bench: system-deps $(DEV_STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Re-resolve the locks from pyproject.toml (+ requirements-build.in), keeping every
# pin that still satisfies it; `lock-upgrade` moves everything to the newest release.
# demo and agent are resolved inside dev's pins, so one package has one version.
lock: $(DEV_STAMP)
	$(UV_COMPILE) $(UV_FLAGS) pyproject.toml requirements-build.in --extra platform --extra mcp \
		--extra dev -o requirements.txt
	$(UV_COMPILE) pyproject.toml requirements-build.in --extra platform \
		-c requirements.txt -o requirements-demo.txt
	$(UV_COMPILE) pyproject.toml requirements-build.in -c requirements.txt \
		-o requirements-agent.txt
	$(BIN)/uv pip compile -q --universal --python-version 3.11 pyproject.toml \
		requirements-build.in --extra platform --extra mcp --extra dev -c requirements.txt \
		-o pylock.toml

# Build information for `powernode-agent version` (git SHA, build date), before a wheel.
buildinfo:
	PYTHONPATH=src $(BIN)/python scripts/write-buildinfo.py

lock-upgrade:
	$(MAKE) lock UV_FLAGS=--upgrade

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
