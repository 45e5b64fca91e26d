"""The monitor panel: live state updates, the offline snapshot, the magic and the CLI page.

Asserted on widget state and on executed-notebook outputs; no browser is involved.
"""

from __future__ import annotations

import json
import time

import nbformat
import pytest

import nbdeploy as nd
from nbdeploy.monitoring.render import TABS
from tests.conftest import kernel_name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dep(module_champion, churn_data):
    _, _, X_test, _ = churn_data
    deployment = nd.serve("churn@champion")
    deployment.predict(X_test.iloc[:200])
    return deployment


def _wait(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_panel_state_follows_new_traffic_and_stops_when_closed(dep, churn_data):
    _, _, X_test, _ = churn_data
    panel = nd.monitor("churn", interval=0.2)
    try:
        assert panel.running and panel.live.value
        assert [panel.tabs.get_title(i) for i in range(len(TABS))] == list(TABS)
        before = panel.report.overview["predictions"]
        assert before >= 200 and f"{before} predictions" in panel.status.value
        dep.predict(X_test.iloc[200:250])
        assert _wait(lambda: panel.report.overview["predictions"] == before + 50)
        assert f"{before + 50} predictions" in panel.status.value
        assert f">{before + 50}<" in panel.panes["Overview"].value
        assert "<svg" in panel.panes["Drift"].value
        panel.window.value = "all"  # the selector recomputes at once
        assert panel.report.window == "all"
    finally:
        panel.close()
    assert _wait(lambda: not panel._thread.is_alive(), 5)
    assert not panel.running


def test_live_refresh_keeps_the_costly_views_for_a_while(dep, monkeypatch):
    from nbdeploy import widgets
    from nbdeploy.monitoring import beyond

    computed = []
    real = beyond.compute
    monkeypatch.setattr(beyond, "compute", lambda *a, **k: computed.append(1) or real(*a, **k))
    panel = nd.monitor("churn", live=False)
    try:
        assert len(computed) == 1
        first = panel.report.extras
        panel.refresh(everything=False)  # what a live tick does
        assert len(computed) == 1 and panel.report.extras is first
        assert "fairness, anomalies, estimate and segments from" in panel.status.value
        monkeypatch.setattr(widgets, "EXTRAS_EVERY_S", 0.0)  # they are due again
        panel.refresh(everything=False)
        assert len(computed) == 2 and panel.report.extras is not first
        assert "estimate from" not in panel.status.value
        panel.refresh()  # "refresh now": everything at once
        assert len(computed) == 3
    finally:
        panel.close()


def test_rerunning_the_monitor_cell_leaves_one_refresh_thread(dep):
    first = nd.monitor("churn", interval=0.2)
    second = nd.monitor("churn", interval=0.2)  # the same cell run again
    try:
        assert _wait(lambda: not first._thread.is_alive(), 5) and second.running
        second.stop()
        second.start()  # straight after stop: live again, not a dead toggle
        assert second.running and _wait(lambda: second._thread.is_alive(), 2)
    finally:
        first.close()
        second.close()


def test_mime_bundle_carries_an_offline_html_snapshot(dep):
    panel = nd.monitor("churn", live=False)
    bundle = panel._repr_mimebundle_()
    panel.close()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    snapshot = bundle["text/html"]
    assert "nbdeploy monitor: churn" in snapshot
    for tab in TABS:
        assert f">{tab}</h4>" in snapshot
    assert "<svg" in snapshot
    assert not any(tag in snapshot for tag in ("<script", "<link", "src=", "<iframe"))


def test_deploy_monitor_magic_returns_the_panel(dep):
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(history_length=0, history_load_length=0)
    try:
        shell.run_line_magic("load_ext", "nbdeploy")
        result = shell.run_cell("%deploy monitor churn --window 24h")
        assert result.error_in_exec is None
        panel = result.result
        panel.close()
        assert panel.report.window == "24h" and panel.report.overview["ref"] == "churn/1"
        bad = shell.run_cell("%deploy monitor nobody")
        assert "no deployment or model is named 'nobody'" in str(bad.error_in_exec)
    finally:
        InteractiveShell.clear_instance()


def test_cli_writes_the_same_report_as_a_standalone_page(dep, tmp_path):
    from nbdeploy.cli import main

    page = tmp_path / "report.html"
    assert main(["monitor", "churn", "--html", str(page), "--window", "all"]) == 0
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "nbdeploy monitor: churn" in text
    assert all(f">{tab}</h4>" in text for tab in TABS)
    assert "<script" not in text and "<svg" in text


def test_executed_notebook_shows_the_snapshot(dep, tmp_path):
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import nbdeploy as nd\nnd.monitor('churn', live=False)")]
    source, output = tmp_path / "monitor.ipynb", tmp_path / "monitor.out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(
        str(source), str(output), kernel_name=kernel_name(), cwd=str(tmp_path), progress_bar=False
    )
    outputs = json.loads(output.read_text())["cells"][0]["outputs"]
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "nbdeploy monitor: churn" in html and "<svg" in html
