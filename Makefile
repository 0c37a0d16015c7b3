# Loopline: the README's two commands are `make demo` and `make test`; everything else is a step of them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-stamp
# The machine's pip finds the CPU torch wheel through PIP_FIND_LINKS; uv does not read pip's
# configuration, so pass it on. Without it, torch comes from PyTorch's CPU index.
TORCH_SOURCE := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
UV_INSTALL := $(UV) pip install --compile-bytecode --python $(PY) $(TORCH_SOURCE)

.PHONY: help install browser lint docs test demo up down status benchmarks clean

help:
	@echo "make demo    set up, start the local stack and run the whole loop on embedded defaults"
	@echo "make test    set up, then ruff, the documentation site (strict) and the whole pytest suite"
	@echo "make up | down | status    the local stack (Airflow, Spark Connect, PostgreSQL, MLflow)"
	@echo "make benchmarks            reproducible measurements (see benchmarks/)"
	@echo "make docs                  build the documentation site into build/site (strict)"

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Loopline needs Python 3.11, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.8
	@# torch first and alone, so nothing drags in the multi-GB CUDA build
	$(UV_INSTALL) torch==2.13.0 -c constraints.txt
	$(UV_INSTALL) -r requirements.txt -c constraints.txt
	$(UV_INSTALL) --no-deps -e .
	touch $@

install: $(STAMP)

# Debian's chromium for the real-browser UI test (Playwright drives it; no browser download). Without root or
# apt-get the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "could not install chromium: the browser test will skip"; \
	  else echo "chromium missing and not installable here (needs root + apt-get): the browser test will skip"; fi; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site (mkdocs.yml, docs/): --strict fails on a broken link or a page missing from the nav.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site

test: install browser lint docs
	$(PY) -m pytest $(PYTEST_ARGS)

up: install
	$(VENV)/bin/loopline up

down:
	@if [ -x $(VENV)/bin/loopline ]; then $(VENV)/bin/loopline down; else echo "nothing to stop"; fi

status: install
	$(VENV)/bin/loopline status

demo: install
	$(VENV)/bin/loopline demo

benchmarks: install
	@for bench in benchmarks/bench_*.py; do echo "== $$bench"; $(PY) $$bench || exit 1; done

clean: down
	rm -rf .loopline
