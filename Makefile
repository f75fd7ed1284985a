# The verbs a newcomer needs. `make demo` and `make test` each set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STANDINS := .venv-standins
UV     := $(BIN)/uv
CHROMIUM := /usr/bin/chromium
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

export PYTHONDONTWRITEBYTECODE :=

# Settings from .env (see .env.example), when there is one.
ifneq (,$(wildcard .env))
include .env
export
endif

.PHONY: setup git-filter demo check test test-reliability editor bench lock lint clean

setup: $(STAMP) $(STANDINS)/.installed $(CHROMIUM) git-filter

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/python -m pip install --quiet uv==0.13.9
	$(UV) pip sync --quiet --python $(BIN)/python --compile-bytecode requirements.txt requirements-dev.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --compile-bytecode -e .
	$(UV) pip check --python $(BIN)/python
	touch $(STAMP)

# The stand-ins the tests start (moto's S3 and fakesnow's Snowflake servers), apart from Mage's pins.
$(STANDINS)/.installed: requirements-standins.txt $(STAMP)
	test -x $(STANDINS)/bin/python || $(BIN)/python -m venv $(STANDINS)
	$(UV) pip sync --quiet --python $(STANDINS)/bin/python requirements-standins.txt
	touch $@

# Debian's Chromium, which the browser tests drive (Playwright's own browser download is not used).
$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

# Git's clean filter that keeps the editor's session state in pipelines/*/metadata.yaml out of
# git (see .gitattributes and mage_project/pipeline_metadata.py).
git-filter:
	if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.mage-pipeline-state.clean '$(BIN)/python -m mage_project.pipeline_metadata'; fi

demo: setup
	$(BIN)/python -m mage_project demo

# The platform's policies on the project (mage_project.policy, DP001-DP016): one line per finding,
# fails on any error. Reads files and git only: no warehouse, a few seconds.
check: setup
	$(BIN)/python -m mage_project check

# The policies, then everything but the long fault matrix (tests marked reliability), which
# test-reliability runs.
test: setup
	$(BIN)/python -m mage_project check
	$(BIN)/python -m pytest -m "not reliability"

# The fault matrix: SIGKILL at every point of both pipelines, the warehouse stopped or cut off
# mid-load, full disks, ... (tests marked reliability), in two processes. It mounts a tmpfs, so
# it needs root; its disk tests are skipped elsewhere, saying so.
test-reliability: setup
	$(BIN)/python -m pytest -m reliability -n 2

editor: setup
	$(BIN)/python -m mage_project editor

bench: setup
	$(BIN)/python -m benchmarks.load_user_activity

# Regenerate the pinned locks from requirements.in and requirements-dev.in.
lock:
	$(UV) pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	$(UV) pip compile --quiet --python-version 3.11 requirements-dev.in -o requirements-dev.txt
	$(UV) pip compile --quiet --python-version 3.11 requirements-standins.in -o requirements-standins.txt

# Python with ruff, the dbt project's SQL with sqlfluff (dbt/warehouse/.sqlfluff). make test runs
# these same commands (tests/unit/test_lint.py reads them from here).
lint: setup
	$(BIN)/ruff check mage_project tests benchmarks data_loaders transformers data_exporters callbacks sensors
	$(BIN)/sqlfluff lint dbt/warehouse/models dbt/warehouse/macros dbt/warehouse/tests

clean:
	-$(BIN)/python -c "from mage_project.warehouse import embedded; from mage_project import config; embedded.stop(config.data_dir() / 'postgres')"
	rm -rf .data
