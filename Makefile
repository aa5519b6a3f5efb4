# mloop: `make demo` runs the whole loop end to end; `make test` runs every test.
# Both install what is missing (venv + Python deps, Kafka jars, PostgreSQL) and start what they need.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCAL := deploy/local
# uv comes from PyPI into its own small venv; it then installs the workspace exactly as uv.lock says.
UV_VERSION := 0.13.9
UV := .cache/uv-tool/bin/uv
export UV_PYTHON_DOWNLOADS := never
MEMBERS := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml cli/pyproject.toml)

.PHONY: setup infra up down status demo test test-unit efficacy bench lint audit format clean

setup: $(STAMP)

$(UV):
	$(PYTHON) -m venv .cache/uv-tool
	.cache/uv-tool/bin/python -m pip install -q "uv==$(UV_VERSION)"

$(STAMP): $(UV) uv.lock pyproject.toml $(MEMBERS)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $(STAMP)

infra: setup
	$(LOCAL)/postgres.sh start
	$(LOCAL)/kafka.sh start

up: infra
	$(LOCAL)/services.sh start

down:
	-$(LOCAL)/services.sh stop
	-$(LOCAL)/kafka.sh stop
	-$(LOCAL)/postgres.sh stop

status: setup
	$(VENV)/bin/mloop status

demo: up
	$(VENV)/bin/mloop demo

# Integration and e2e tests start their own Kafka broker (ports 19092/19093) and use their own schemas.
test: lint audit
	$(LOCAL)/postgres.sh start
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q -m "not integration and not e2e"

# Drift's efficacy on real drifting datasets (tests/efficacy); also part of `make test`.
efficacy: setup
	$(LOCAL)/postgres.sh start
	$(PY) -m pytest -q -m efficacy tests/efficacy

bench: up
	$(PY) -m tests.perf.run
	$(PY) -m tests.perf.drift_speed
	$(PY) -m tests.perf.drift_throughput
	$(PY) -m tests.perf.ingest_speed
	$(PY) -m tests.perf.serving_speed
	$(PY) -m tests.perf.training_overhead

# Formatting, lint and types of libs/ and services/ (config in pyproject.toml); part of `make test`.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Known vulnerabilities in uv.lock's packages (tools/audit.py says what fails); part of `make test`. pip-audit runs
# from its own venv, not uv.lock; an unreachable vulnerability service skips the audit with one line.
PIP_AUDIT_VERSION := 2.9.0
PIP_AUDIT := .cache/pip-audit-$(PIP_AUDIT_VERSION)
AUDIT_SERVICE ?= pypi
EXPORT := $(UV) export --frozen --all-packages --no-emit-workspace --no-hashes --no-header --format requirements-txt -q

$(PIP_AUDIT)/.installed:
	$(PYTHON) -m venv --clear $(PIP_AUDIT)
	timeout 300 $(PIP_AUDIT)/bin/python -m pip install -q "pip-audit==$(PIP_AUDIT_VERSION)"
	@touch $@

audit: $(UV) $(PIP_AUDIT)/.installed
	@mkdir -p .run/audit
	@$(EXPORT) --no-dev -o .run/audit/runtime.txt
	@$(EXPORT) --all-groups -o .run/audit/all.txt
	timeout 360 $(PIP_AUDIT)/bin/python tools/audit.py --pip-audit $(PIP_AUDIT)/bin/pip-audit \
		--runtime .run/audit/runtime.txt --all .run/audit/all.txt --service $(AUDIT_SERVICE) --timeout 300

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: down
	rm -rf .run
