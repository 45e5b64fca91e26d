"""binder/ has what mybinder needs to run the quickstart with the panel installed.

Static checks only (no repo2docker here): the files exist, are executable where
mybinder runs them, install this repository with pip (which builds the panel), and
the notebook they point at exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"


def test_environment_has_python_node_and_pip():
    env = yaml.safe_load((BINDER / "environment.yml").read_text())
    deps = [str(d) for d in env["dependencies"]]
    assert "conda-forge" in env["channels"]
    assert any(d.startswith("python=3.1") for d in deps)
    assert any(d.startswith("nodejs=") and int(d.split("=")[1]) >= 20 for d in deps)
    assert "pip" in deps


def test_post_build_installs_the_package_and_checks_both_extensions():
    script = BINDER / "postBuild"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "pip install --no-cache-dir .\n" in text
    assert "jupyter labextension list" in text and "jupyter server extension list" in text


def test_start_pins_one_home_and_hands_over():
    script = BINDER / "start"
    assert os.access(script, os.X_OK)
    lines = script.read_text().strip().splitlines()
    assert any(line.startswith("export NBDEPLOY_HOME=") for line in lines)
    assert lines[-1] == 'exec "$@"'


def test_the_quickstart_and_the_panel_sources_exist():
    assert (ROOT / "notebooks" / "quickstart.ipynb").is_file()
    assert (ROOT / "labextension" / "package.json").is_file()
    assert (ROOT / "labextension" / "yarn.lock").is_file()
    assert (ROOT / "jupyter-config" / "server-config" / "nbdeploy.json").is_file()
