# mloop: `make demo` runs the whole loop end to end; `make test` runs every test.
# Both install what is missing (venv + Python deps, Kafka jars, PostgreSQL) and start what they need.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCAL := deploy/local

.PHONY: setup infra up down status demo test test-unit bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
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
test: setup
	$(LOCAL)/postgres.sh start
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q -m "not integration and not e2e"

bench: up
	$(PY) -m tests.perf.run

lint: setup
	$(VENV)/bin/ruff check .

clean: down
	rm -rf .run
