# Every target bootstraps its own virtual environment on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
KERNEL := nbdeploy-test

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "nbdeploy (tests)" >/dev/null
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/nbdeploy demo

lint: install
	$(VENV)/bin/ruff check nbdeploy tests benchmarks
	$(VENV)/bin/ruff format --check nbdeploy tests benchmarks
	$(VENV)/bin/mypy

test: lint
	NBDEPLOY_TEST_KERNEL=$(KERNEL) $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) .nbdeploy .pytest_cache .mypy_cache .ruff_cache
