"""nd.score on DataFrames, CSV and Parquet, logged with role batch."""

from __future__ import annotations

import pandas as pd
import pytest

import nbdeploy as nd


def test_score_dataframe_matches_the_model_and_is_logged(champion, churn_data, churn_models):
    _, _, X_test, _ = churn_data
    scored = nd.score("churn@champion", X_test, chunk_rows=150)
    assert list(scored.index) == list(X_test.index)
    assert scored["prediction"].tolist() == churn_models[0].predict(X_test).tolist()
    assert {"proba_no", "proba_yes", "score", "prediction_id"} <= set(scored.columns)
    logged = nd.logs("churn", role="batch")
    assert len(logged) == len(X_test) and set(logged["prediction_id"]) == set(
        scored["prediction_id"]
    )
    assert (logged["alias"] == "champion").all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_files_to_files(champion, churn_data, tmp_path, suffix):
    _, _, X_test, _ = churn_data
    source = tmp_path / f"in{suffix}"
    frame = X_test.assign(contract=X_test["contract"].astype(str))
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    target = tmp_path / f"out{suffix}"
    assert nd.score("churn/1", source, output=target, chunk_rows=100, log=False) == target
    out = pd.read_csv(target) if suffix == ".csv" else pd.read_parquet(target)
    assert len(out) == len(X_test) and "prediction" in out
    assert nd.logs("churn").empty
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_bad_row_late_in_a_frame_scores_and_logs_nothing(champion, churn_data):
    _, _, X_test, _ = churn_data
    bad = X_test.astype({"contract": object})
    bad.iloc[-1, bad.columns.get_loc("contract")] = 7  # a number in the text column, last chunk
    with pytest.raises(nd.SchemaError, match="contract"):
        nd.score("churn/1", bad, chunk_rows=100)
    assert nd.logs("churn").empty


def test_bad_batch_fails_cleanly_without_partial_output(champion, churn_data, tmp_path):
    _, _, X_test, _ = churn_data
    target = tmp_path / "out.csv"
    with pytest.raises(nd.SchemaError, match="contract"):
        nd.score("churn/1", X_test.drop(columns="contract"), output=target)
    assert not target.exists() and not list(tmp_path.glob("*.tmp"))
