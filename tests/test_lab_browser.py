"""The side panel in a real JupyterLab, driven by Debian's chromium through playwright.

JupyterLab runs on 127.0.0.1 with a token and a temporary ``NBDEPLOY_HOME``; the test
registers churn/1 (@champion) and churn/2 there and serves churn@champion. In the
panel it finds both versions and the deployment, promotes v2 through the confirmation
dialog (and checks in the registry that the alias moved), runs "Monitor" into an open
notebook, and stops the deployment. Screenshots are kept in ``test-artifacts/``.

No browser is ever downloaded: ``make test`` installs Debian's ``chromium``. Without it
the test fails, saying why, rather than skip: a skipped browser test would let a broken
panel pass ``make test`` unnoticed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_server_ext import jupyter

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUIET_LAB = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false"}}


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "no chromium on PATH, so the panel cannot be tested in a browser: run `make browser` "
            "(Debian: apt-get install -y chromium); this test fails rather than skip"
        )
    from playwright import sync_api  # a dev dependency: missing means a broken install

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def lab(module_champion, module_home, churn_data, churn_models):
    import nbdeploy as nd

    X, y, X_test, y_test = churn_data
    v2 = nd.register(churn_models[0], "churn", X, y, description="same model, retrained")
    assert nd.test(v2, X_test, y_test, min_score=0.7).passed
    dep = nd.serve("churn@champion")
    dep.predict(X_test.head(5))
    root = module_home.parent
    notebook = {
        "cells": [],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "monitor.ipynb").write_text(json.dumps(notebook))
    with jupyter("lab", module_home, root, settings=QUIET_LAB) as (url, token):
        yield url, token


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


def test_the_panel_shows_promotes_monitors_and_stops(browser, lab):
    import nbdeploy as nd
    from nbdeploy.registry import alias_holder

    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{url}/lab/tree/monitor.ipynb?token={token}", timeout=90_000)
        tab = page.locator('.jp-SideBar [data-id="nbdeploy-panel"]')
        tab.wait_for(timeout=90_000)
        panel = page.locator("#nbdeploy-panel")
        if not panel.is_visible():
            tab.click()
        churn = panel.locator('[data-nbdeploy-model="churn"]')
        churn.wait_for(timeout=30_000)
        deployment = panel.locator('[data-nbdeploy-deployment="churn"]')
        deployment.wait_for(timeout=30_000)

        v1 = churn.locator('[data-nbdeploy-version="1"]')
        v2 = churn.locator('[data-nbdeploy-version="2"]')
        assert v1.locator('[data-nbdeploy-badge="champion"]').count() == 1
        assert v2.locator('[data-nbdeploy-badge="champion"]').count() == 0
        assert "✓" in v2.inner_text()  # its last test passed
        assert deployment.locator(".jp-nbdeploy-dot.jp-mod-ok").count() == 1
        assert "1 req" in deployment.inner_text()  # one request of five rows
        page.screenshot(path=str(shot("lab-panel-before.png")))

        # promote v2 through the confirmation dialog
        v2.locator('[data-nbdeploy-action="promote"]').click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=10_000)
        assert dialog.locator('[data-nbdeploy-field="alias"]').input_value() == "champion"
        dialog.locator("button.jp-mod-accept").click()
        assert wait_until(lambda: alias_holder("churn", "champion") == 2)
        v2.locator('[data-nbdeploy-badge="champion"]').wait_for(timeout=15_000)
        assert v1.locator('[data-nbdeploy-badge="champion"]').count() == 0
        # the running server follows the alias, and the panel shows it
        deployment.get_by_text("→ v2").wait_for(timeout=30_000)
        assert panel.locator(".jp-nbdeploy-error").count() == 0
        page.screenshot(path=str(shot("lab-panel.png")))

        # Monitor: a cell with the magic is inserted into the open notebook and run
        page.locator(".jp-Notebook").first.wait_for(timeout=30_000)
        deployment.locator('[data-nbdeploy-action="monitor"]').click()
        cell = page.locator(".jp-Notebook .jp-Cell").filter(has_text="%deploy monitor churn")
        cell.first.wait_for(timeout=30_000)
        # ... and the live panel renders as a widget in the browser (its tabs, drawn offline)
        rendered = cell.first.locator(".jp-OutputArea-output .widget-tab, .lm-TabBar")
        rendered.first.wait_for(timeout=120_000)
        cell.first.get_by_text("Overview").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shot("lab-monitor.png")))

        # Stop, confirmed in a dialog
        deployment.locator('[data-nbdeploy-action="stop"]').click()
        page.locator(".jp-Dialog button.jp-mod-accept").click()
        assert wait_until(lambda: nd.deployments().empty)
        deployment.wait_for(state="detached", timeout=15_000)
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(shot("lab-panel-failure.png")))
        raise
    finally:
        page.close()


def shot(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
