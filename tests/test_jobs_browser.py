"""Jobs in a real JupyterLab, driven by Debian's chromium: schedule the open notebook
from its toolbar, run it now from the panel, wait for "succeeded", open the executed
notebook; a refused schedule shows the server's message in the dialog.
Screenshots go to ``test-artifacts/`` (the README shows them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_jobs import _notebook
from tests.test_lab_browser import QUIET_LAB, browser, shot  # noqa: F401 (a fixture)
from tests.test_server_ext import jupyter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(module_home: Path):
    root = module_home.parent
    _notebook(
        root / "train.ipynb",
        "rows = 100  # rows to train on\nfail = False",
        "print('trained on', rows, 'rows')",
        "if fail:\n    raise ValueError('no data')",
    )
    with jupyter("lab", module_home, root, settings=QUIET_LAB) as (url, token):
        yield url, token


def test_schedule_from_the_toolbar_run_now_and_open_the_executed_notebook(browser, lab):  # noqa: F811
    from nbdeploy import scheduler

    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{url}/lab/tree/train.ipynb?token={token}", timeout=90_000)
        button = page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="nbdeploy-schedule"]')
        button.wait_for(timeout=90_000)
        button.locator("button, jp-button").first.click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=30_000)
        assert dialog.locator('[data-nbdeploy-field="name"]').input_value() == "train"
        rows = dialog.locator('[data-nbdeploy-param="rows"]')
        assert rows.input_value() == "100"
        assert dialog.locator('[data-nbdeploy-param="fail"]').get_attribute("type") == "checkbox"
        when = dialog.locator('[data-nbdeploy-field="when"]')

        # a cron expression that cannot be parsed: said in the dialog, nothing created
        dialog.locator('[data-nbdeploy-field="kind"]').select_option("cron")
        when.fill("0 25 * * *")
        dialog.locator('[data-nbdeploy-field="next-runs"] .jp-nbdeploy-error').wait_for(
            timeout=30_000
        )
        rows.fill("5")
        dialog.locator("button.jp-mod-accept").click()
        refused = page.locator('.jp-Dialog [data-nbdeploy-field="error"]')
        refused.wait_for(timeout=30_000)
        assert "hour" in refused.inner_text()
        assert scheduler.scheduled().empty
        # the second attempt keeps what was typed
        dialog = page.locator(".jp-Dialog")
        assert dialog.locator('[data-nbdeploy-param="rows"]').input_value() == "5"

        dialog.locator('[data-nbdeploy-field="kind"]').select_option("every")
        dialog.locator('[data-nbdeploy-field="when"]').fill("6h")
        dialog.locator('[data-nbdeploy-field="name"]').fill("nightly")
        next_runs = dialog.locator('[data-nbdeploy-field="next-runs"] li')
        next_runs.nth(2).wait_for(timeout=30_000)
        assert next_runs.count() == 3
        dialog.screenshot(path=str(shot("lab-schedule-dialog.png")))
        dialog.locator("button.jp-mod-accept").click()

        jobs = page.locator("#nbdeploy-jobs")
        job = jobs.locator('[data-nbdeploy-job="nightly"]')
        job.wait_for(timeout=30_000)
        spec = scheduler.get("nightly")
        assert spec.every_s == 6 * 3600 and spec.parameters == {"rows": 5}

        job.locator('[data-nbdeploy-action="run-now"]').click()
        done = jobs.locator('[data-nbdeploy-status="succeeded"]')
        done.first.wait_for(timeout=240_000)
        page.screenshot(path=str(shot("lab-jobs.png")))

        done.first.locator('[data-nbdeploy-action="open-run"]').click()
        executed = page.locator(".lm-TabBar-tab").filter(has_text="train-")
        executed.first.wait_for(timeout=60_000)
        output = page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output")
        output.filter(has_text="trained on 5 rows").first.wait_for(timeout=60_000)
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(shot("lab-jobs-failure.png")))
        raise
    finally:
        page.close()
