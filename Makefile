# Every target bootstraps its own virtual environment on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
KERNEL := nbdeploy-test

.PHONY: install demo test lint bench clean lab labtest browser postgres airflow-venv kserve-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,all]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "nbdeploy (tests)" >/dev/null
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The JupyterLab panel: pip builds it on a fresh install (hatch-jupyter-builder); when
# labextension/ changes later, rebuild it with the venv's jlpm and reinstall it.
LABEXT := $(VENV)/share/jupyter/labextensions/nbdeploy/package.json
LABSRC := $(wildcard labextension/src/*.ts* labextension/style/*) labextension/package.json labextension/yarn.lock
JLPM := PATH="$(abspath $(VENV))/bin:$$PATH" jlpm

$(LABEXT): $(LABSRC) | $(STAMP)
	cd labextension && $(JLPM) install && $(JLPM) build:prod
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP) $(LABEXT)

# JupyterLab with the panel and the quickstart, on 127.0.0.1, and the job scheduler
# beside it (stopped with it); one NBDEPLOY_HOME for all.
lab: install
	export NBDEPLOY_HOME="$${NBDEPLOY_HOME:-$(CURDIR)/.nbdeploy}"; \
	$(VENV)/bin/nbdeploy scheduler & scheduler=$$!; trap 'kill $$scheduler' EXIT; \
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 \
		$(if $(filter 0,$(shell id -u)),--allow-root) notebooks/quickstart.ipynb

demo: install
	$(VENV)/bin/nbdeploy demo

lint: install
	$(VENV)/bin/ruff check nbdeploy tests benchmarks
	$(VENV)/bin/ruff format --check nbdeploy tests benchmarks
	$(VENV)/bin/mypy

# Jest unit tests of the panel's TypeScript.
labtest: install
	cd labextension && $(JLPM) install && $(JLPM) test --ci

# Debian's chromium for tests/test_lab_browser.py (which fails, saying why, without it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "chromium not installed: the browser test will fail"

# Debian's PostgreSQL server binaries for the team tests (one throwaway cluster per run;
# tests/test_team.py and the PostgreSQL audit log fail, saying why, without it).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
		|| echo "postgresql not installed: the team tests will fail"

# Tools whose dependencies clash with nbdeploy's (Airflow; KServe pins pandas<3) get
# environments of their own, made once and reused: tests/test_airflow.py runs the exported
# DAG in a real Airflow 3, tests/test_exports_kserve.py checks InferenceServices with kserve.
TOOLS ?= $(HOME)/.cache/nbdeploy
AIRFLOW_VENV := $(TOOLS)/airflow-venv
KSERVE_VENV := $(TOOLS)/kserve-venv

$(AIRFLOW_VENV)/.installed:
	test -x $(AIRFLOW_VENV)/bin/python || python3 -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --disable-pip-version-check \
		'apache-airflow>=3.1,<4' 'apache-airflow-providers-papermill>=3.8'
	touch $@

$(KSERVE_VENV)/.installed:
	test -x $(KSERVE_VENV)/bin/python || python3 -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet --disable-pip-version-check 'kserve>=0.15,<1'
	touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed
kserve-venv: $(KSERVE_VENV)/.installed

test: lint labtest browser postgres airflow-venv kserve-venv
	NBDEPLOY_TEST_KERNEL=$(KERNEL) NBDEPLOY_AIRFLOW_VENV=$(AIRFLOW_VENV) \
		NBDEPLOY_KSERVE_VENV=$(KSERVE_VENV) $(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) .nbdeploy .pytest_cache .mypy_cache .ruff_cache
