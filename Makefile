# Two commands do everything on a fresh machine:
#   make demo   create .venv, install (torch 2.13 CPU first, then rltrade with all extras), run the main job
#   make test   install if needed, then lint and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rltrade needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.*"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/rltrade demo

# The report's browser test drives a system Chromium (Debian package `chromium`); without one
# (not root, no apt-get) that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: no Chromium installed; the report's browser test will be skipped"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

test: lint browser
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
