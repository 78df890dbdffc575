# Two commands do everything on a fresh machine:
#   make demo   create .venv, install (torch 2.13 CPU first, then rltrade with all extras), run the main job
#   make test   install if needed, then lint and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rltrade needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.*"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/rltrade data

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_envs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build src/*.egg-info
