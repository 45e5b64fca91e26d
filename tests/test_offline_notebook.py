"""The executed quickstart, as nbconvert's HTML, read in a browser with no network.

``jupyter nbconvert --execute --to html`` runs the quickstart (small parameters) in
a real kernel and stores widget state, as a user's command would. The page is
opened in Debian's chromium through playwright with every non-file request aborted:
the monitor snapshot's tabs must be visible and switch without scripts, and the
batch-scoring progress bar must be drawn. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbdeploy.monitoring.render import TABS
from tests.conftest import kernel_name
from tests.test_lab_browser import ARTIFACTS, FLAGS

pytestmark = pytest.mark.slow

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def _small_quickstart(target: Path) -> None:
    """The quickstart with its parameters cell set small, as papermill would."""
    nb = json.loads(QUICKSTART.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = "n_train = 1200\nbatch_rows = 3000\n"
    target.write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def page_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import isolated_home

    work = tmp_path_factory.mktemp("offline")
    with isolated_home(work / "home"):
        source = work / "quickstart.ipynb"
        _small_quickstart(source)
        # chunks of 1,000 rows so that scoring 3,000 shows its progress bar
        env = {**os.environ, "NBDEPLOY_SCORE_CHUNK_ROWS": "1000"}
        subprocess.run(
            [sys.executable, "-m", "nbconvert", "--to", "html", "--execute", str(source),
             f"--ExecutePreprocessor.kernel_name={kernel_name()}",
             "--ExecutePreprocessor.timeout=600", "--output", "quickstart"],
            cwd=work, env=env, check=True, capture_output=True, timeout=1200,
        )  # fmt: skip
    return work / "quickstart.html"


def test_nbconvert_html_shows_the_snapshot_not_a_widget_placeholder(page_html):
    text = page_html.read_text()
    assert len(re.findall(r"class=.nbdeploy-monitor.", text)) == 1 and "nbdeploy-progress" in text
    # the widget state was saved (nbconvert's default), yet no output is a widget view
    # that a CDN script would have to draw: the monitor cell shows its snapshot
    assert "application/vnd.jupyter.widget-state+json" in text
    assert '<script type="application/vnd.jupyter.widget-view+json">' not in text


def test_offline_browser_shows_the_monitor_tabs_and_the_progress_bar(page_html):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "no chromium on PATH, so the offline page cannot be checked: run `make browser` "
            "(Debian: apt-get install -y chromium); this test fails rather than skip"
        )
    from playwright import sync_api  # a dev dependency: missing means a broken install

    blocked: list[str] = []

    def offline(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", offline)
            page.goto(page_html.as_uri(), wait_until="load")
            monitor = page.locator(".nbdeploy-monitor")
            assert monitor.count() == 1
            labels = monitor.locator("label.nbdm-tab")
            assert [labels.nth(i).inner_text() for i in range(labels.count())] == list(TABS)
            for i in range(labels.count()):
                assert labels.nth(i).is_visible()
            panes = monitor.locator(".nbdm-pane")
            assert panes.nth(0).is_visible() and not panes.nth(1).is_visible()
            assert "predictions per interval" in panes.nth(0).inner_text()
            monitor.scroll_into_view_if_needed()
            monitor.screenshot(path=str(ARTIFACTS / "offline-monitor-overview.png"))
            labels.nth(TABS.index("Drift")).click()  # CSS alone switches the tab
            assert panes.nth(TABS.index("Drift")).is_visible()
            assert not panes.nth(0).is_visible()
            assert "tenure_months" in panes.nth(TABS.index("Drift")).inner_text()
            monitor.screenshot(path=str(ARTIFACTS / "offline-monitor-drift.png"))
            bar = page.locator(".nbdeploy-progress").last
            assert bar.is_visible() and "100% 3000/3000 rows" in bar.inner_text()
            bar.screenshot(path=str(ARTIFACTS / "offline-progress.png"))
        finally:
            browser.close()
    assert blocked, "the page asked for nothing from the network: was the route in place?"
