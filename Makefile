# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs fairlandmark, writes and audits a demo study
#   make test   -> creates .venv, installs every extra (incl. torch for the reference model), runs the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.core-installed
FULL_STAMP := $(VENV)/.full-installed

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(CORE_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[report,parquet]'
	touch $@

# A plain, unpinned torch: the registry's build runs on CPU too and matches torchvision.
$(FULL_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[report,parquet,train,dev]'
	touch $@ $(CORE_STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/fairlandmark demo --out demo_study

# The import-layer contract and mypy run first: a structure or type error fails fast, before the tests.
test: $(FULL_STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

bench: $(FULL_STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/audit_speed.py

clean:
	rm -rf $(VENV) demo_study .pytest_cache
