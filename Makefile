# The two set-up commands of the README: `make run` (main job) and `make test` (the suite).
# Both create .venv on first use from the pinned working set and are no-ops after that.
VENV ?= .venv
PY := $(VENV)/bin/python
export USERNAME ?= pac
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: install run test lint bench

$(VENV)/.installed: requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The real lerobot package in its own folder (never in .venv): the suite writes a robot's
# dataset with it (tests/test_your_robot.py).
LEROBOT := benchmarks/.lerobot/.installed
$(LEROBOT): $(VENV)/.installed benchmarks/lerobot_env.sh
	PYTHON=$(PY) bash benchmarks/lerobot_env.sh
	touch $@

run: install
	$(PY) flows/pac_flow.py run

lint: install
	$(VENV)/bin/ruff check pac flows tests benchmarks

test: install $(LEROBOT) lint
	$(PY) -m pytest -q --durations=15
