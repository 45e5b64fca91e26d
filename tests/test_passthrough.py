"""Passthrough columns (DESIGN §9): requests carry them in every format, the log keeps
them, the model never sees them, and predictions are the same with or without them."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy.exceptions import NbdeployError, RegistryError

JSON = {"content-type": "application/json"}


@pytest.fixture
def served_pt(home, churn_data, churn_models):
    X, y, _, _ = churn_data
    region = np.where(np.arange(len(X)) % 2, "north", "south")
    # X may carry the passthrough column: it is dropped from the model's input
    mv = nd.register(churn_models[0], "churn", X.assign(region=region), y, passthrough=["region"])
    return mv, nd.serve(f"churn/{mv.version}")


def _values(column: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in column]


def _post(url: str, payload: dict) -> dict:
    answer = httpx.post(url, content=json.dumps(payload), headers=JSON, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_every_format_carries_passthrough_and_predictions_do_not_change(served_pt, churn_data):
    _, dep = served_pt
    _, _, X_test, _ = churn_data
    rows = X_test.head(3).assign(contract=X_test.head(3)["contract"].astype(str))
    records = rows.to_dict(orient="records")
    regions = ["north", "south", None]
    with_region = [{**r, "region": g} for r, g in zip(records, regions, strict=True)]
    url = dep.url + "/invocations"
    plain = _post(url, {"dataframe_records": records})["predictions"]
    split_cols = [*rows.columns, "region"]
    split_rows = [[*r.values(), g] for r, g in zip(records, regions, strict=True)]
    columns = {c: rows[c].tolist() for c in rows.columns}
    oip = {
        "inputs": [
            {"name": c, "shape": [3], "datatype": "BYTES" if c == "contract" else "FP64", "data": v}
            for c, v in {**columns, "region": regions}.items()
        ]
    }
    answers = [
        _post(url, {"dataframe_records": with_region}),
        _post(url, {"dataframe_split": {"columns": split_cols, "data": split_rows}}),
        _post(url, {"inputs": {**columns, "region": regions}}),
        _post(url, {"instances": with_region}),
    ]
    for answer in answers:
        assert answer["predictions"] == plain
    csv = rows.assign(region=["north", "south", ""]).to_csv(index=False)
    by_csv = httpx.post(url, content=csv, headers={"content-type": "text/csv"}, timeout=30)
    assert by_csv.status_code == 200 and by_csv.json()["predictions"] == plain
    v2 = httpx.post(f"{dep.url}/v2/models/churn/infer", json=oip, timeout=30)
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == plain
    # Python scoring too: the same column in a DataFrame
    assert dep.predict(rows.assign(region=["north", "south", None]))["prediction"].tolist() == plain

    logged = nd.logs("churn")
    assert "region" in logged
    assert len(logged) == 3 * 8
    tail = logged.tail(3 * 7)  # every request after the plain one carried region
    assert _values(tail["region"].iloc[:3]) == ["north", "south", None]
    assert logged["region"].iloc[:3].isna().all()  # the first request had none
    csv_rows = _values(logged.iloc[3 * 5 : 3 * 6]["region"])
    assert csv_rows == ["north", "south", None]
    # the feature columns the model saw are exactly its signature
    assert set(logged.columns) >= set(X_test.columns)


def test_passthrough_values_must_be_scalars(served_pt, churn_data):
    _, dep = served_pt
    _, _, X_test, _ = churn_data
    record = X_test.head(1).assign(contract="monthly").to_dict(orient="records")[0]
    bad = httpx.post(
        dep.url + "/invocations",
        content=json.dumps({"dataframe_records": [{**record, "region": {"a": 1}}]}),
        headers=JSON,
        timeout=30,
    )
    assert bad.status_code == 422
    assert "passthrough column 'region'" in bad.json()["error"]["message"]
    # another unknown column is still refused
    other = httpx.post(
        dep.url + "/invocations",
        content=json.dumps({"dataframe_records": [{**record, "segment": "x"}]}),
        headers=JSON,
        timeout=30,
    )
    assert other.status_code == 422
    assert "unexpected column 'segment'" in other.json()["error"]["message"]


def test_batch_scoring_logs_passthrough(home, churn_data, churn_models):
    X, y, X_test, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, passthrough=["region", "customer_id"])
    data = X_test.head(20).assign(region="east", customer_id=np.arange(20))
    scored = nd.score(mv.ref, data)
    assert scored["prediction"].tolist() == nd.score(mv.ref, X_test.head(20))["prediction"].tolist()
    logged = nd.logs("churn", role="batch")
    assert logged["customer_id"].iloc[:20].tolist() == list(range(20))
    assert set(logged["region"].iloc[:20]) == {"east"}


def test_passthrough_must_be_a_list_of_names(home, churn_data, churn_models):
    X, y, _, _ = churn_data
    with pytest.raises(RegistryError, match="passthrough must be a list"):
        nd.register(churn_models[0], "churn", X, y, passthrough="region")


def test_passthrough_is_chained_erased_with_its_row_and_kept_beside_pii(
    home, churn_data, churn_models
):
    X, y, X_test, _ = churn_data
    mv = nd.register(
        churn_models[0], "churn", X, y, passthrough=["region"], pii={"support_calls": "drop"}
    )
    out = nd.score(mv.ref, X_test.head(4).assign(region=["a", "b", "c", "d"]))
    nd.erase([out["prediction_id"].iloc[1]])
    logged = nd.logs("churn")
    assert _values(logged["region"]) == ["a", None, "c", "d"]
    assert logged["support_calls"].isna().all()  # dropped by the pii policy
    assert nd.verify().ok
    with pytest.raises(NbdeployError, match="pii"):
        nd.fairness("churn", by="support_calls")
