"""The quickstart notebook runs top to bottom on a registered kernel."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import kernel_name

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@pytest.mark.slow
def test_quickstart_runs_end_to_end(home: Path, tmp_path: Path) -> None:
    import papermill

    source = tmp_path / "quickstart.ipynb"
    shutil.copy(NOTEBOOKS / "quickstart.ipynb", source)
    output = tmp_path / "quickstart.out.ipynb"
    papermill.execute_notebook(
        str(source),
        str(output),
        kernel_name=kernel_name(),
        parameters={"n_train": 1200, "batch_rows": 3000},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    cells = json.loads(output.read_text())["cells"]
    text = json.dumps(cells)
    assert '"output_type": "error"' not in text
    # the running server followed the alias to version 2, then the rollback was recorded
    assert "rollback from version 2" in text
    # every step logged predictions into this test's home, and the server was stopped
    import nbdeploy as nd

    assert len(nd.logs("churn", role="served")) >= 255
    assert len(nd.logs("churn", role="batch")) == 3000
    assert nd.deployments().empty
    # its HTML shows the monitor snapshot (tabs included), not a widget needing a CDN
    import nbformat
    from nbconvert import HTMLExporter

    page, _ = HTMLExporter().from_notebook_node(nbformat.read(str(output), as_version=4))
    assert len(re.findall(r"class=.nbdeploy-monitor.", page)) == 1 and "nbdm-tab" in page
    assert '<script type="application/vnd.jupyter.widget-view+json">' not in page


def test_notebooks_are_stored_without_outputs() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            assert not cell.get("outputs"), f"{path.name} has stored outputs"
