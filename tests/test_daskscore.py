"""nd.score(..., engine="dask") over partitioned Parquet, and nd.drift streaming Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy.serving.adapter import load

pytestmark = pytest.mark.slow


@pytest.fixture
def parts(churn_data, tmp_path):
    """Three Parquet files of different sizes, shuffled rows, under data/."""
    _, _, X_test, _ = churn_data
    folder = tmp_path / "data"
    folder.mkdir()
    frames = {
        "a.parquet": X_test.iloc[:150],
        "b.parquet": X_test.iloc[150:170],
        "c.parquet": X_test.iloc[170:],
    }
    for name, frame in frames.items():
        frame.sample(frac=1, random_state=1).to_parquet(folder / name, index=False)
    return folder, frames


def test_dask_scores_each_file_in_order_and_logs_it(champion, parts, tmp_path, monkeypatch):
    folder, _ = parts
    monkeypatch.setenv("NBDEPLOY_SCORE_CHUNK_ROWS", "64")  # several batches per file
    out = nd.score(
        "churn@champion", str(folder / "*.parquet"), output=tmp_path / "out", engine="dask"
    )
    assert out == tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    model = load("churn@champion")
    logged = nd.logs("churn")
    assert set(logged["role"]) == {"batch"} and len(logged) == 400
    for name in ("a.parquet", "b.parquet", "c.parquet"):
        source = pd.read_parquet(folder / name)
        scored = pd.read_parquet(out / name)
        pd.testing.assert_frame_equal(scored[source.columns], source)  # same rows, same order
        expected = model.predict(model.schema.from_frame(source)).predictions
        assert list(scored["prediction"]) == list(expected)
        assert set(scored["prediction_id"]) <= set(logged["prediction_id"])


def test_dask_refuses_what_it_cannot_do(champion, parts, tmp_path):
    folder, _ = parts
    with pytest.raises(nd.NbdeployError, match="output=FOLDER"):
        nd.score("churn@champion", str(folder), engine="dask")
    with pytest.raises(nd.NbdeployError, match="no Parquet files"):
        nd.score(
            "churn@champion", str(tmp_path / "none*.parquet"), output=tmp_path / "o", engine="dask"
        )
    with pytest.raises(nd.NbdeployError, match="engine"):
        nd.score("churn@champion", str(folder), output=tmp_path / "o", engine="spark")


def test_drift_streams_parquet_files(champion, parts, churn_data):
    folder, frames = parts
    whole = pd.concat(frames.values())
    streamed = nd.drift("churn@champion", str(folder / "*.parquet"))
    in_memory = nd.drift("churn@champion", whole)
    assert streamed.n_current == len(whole) and streamed.drifted == in_memory.drifted
    np.testing.assert_allclose(
        streamed.columns["statistic"].to_numpy(dtype=float),
        in_memory.columns.loc[streamed.columns.index, "statistic"].to_numpy(dtype=float),
        atol=1e-3,  # Wasserstein from binned quantiles (tests/test_streamdrift.py)
    )
    shifted = folder.parent / "shifted"
    shifted.mkdir()
    whole.assign(monthly_charges=whole["monthly_charges"] + 60).to_parquet(shifted / "s.parquet")
    assert (
        "monthly_charges" in nd.drift("churn@champion", str(shifted)).columns.query("drifted").index
    )
