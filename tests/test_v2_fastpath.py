"""The Open Inference Protocol route takes the model's fast path and answers exactly as
``/invocations`` does: one FP64 or INT tensor, or one named input per column, for an
all-numeric model (a float matrix, no DataFrame), against a real server on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy.schema import Column, Schema
from nbdeploy.serving import wire

NAMES = ["age", "income", "visits"]  # visits is an integer (long) column


@pytest.fixture(scope="module")
def numeric(module_home):
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = pd.DataFrame(
        {
            "age": rng.normal(40, 12, 800),
            "income": rng.normal(50_000, 15_000, 800),
            "visits": rng.integers(0, 20, 800),
        }
    )
    y = (X["age"] / 40 + X["visits"] / 10 + rng.normal(0, 0.5, 800) > 2).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    nd.register(model, "v2fast", X, y)
    return nd.serve("v2fast/1"), X


def post(dep: Any, body: Any, path: str) -> httpx.Response:
    return httpx.post(
        dep.url + path,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )


def invocations(dep: Any, rows: list[list[Any]]) -> dict[str, Any]:
    response = post(dep, {"dataframe_split": {"columns": NAMES, "data": rows}}, "/invocations")
    assert response.status_code == 200, response.text
    return response.json()


def infer(dep: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    response = post(dep, {"inputs": inputs}, "/v2/models/v2fast/infer")
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def tensor(shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": "t", "shape": shape, "datatype": "FP64", "data": data}


def rows_of(X: Any, n: int) -> list[list[Any]]:
    return [[float(r.age), float(r.income), int(r.visits)] for r in X.head(n).itertuples()]


@pytest.mark.parametrize("n", [1, 7])
def test_one_fp64_tensor_answers_as_invocations(numeric, n):
    dep, X = numeric
    rows = rows_of(X, n)
    expected = invocations(dep, rows)
    for data in (rows, [v for r in rows for v in r]):  # nested, and flat row-major
        out = infer(dep, [{"name": "input-0", "shape": [n, 3], "datatype": "FP64", "data": data}])
        assert out["predict"]["data"] == expected["predictions"]
        assert out["predict"]["shape"] == [n]
        assert len(out["prediction_id"]["data"]) == n


def test_int_tensor_answers_as_invocations(numeric):
    dep, _ = numeric
    rows = [[30, 42_000, 3], [55, 80_000, 12]]  # every value an integer
    expected = invocations(dep, rows)
    out = infer(dep, [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": rows}])
    assert out["predict"]["data"] == expected["predictions"]


def test_named_inputs_in_any_order_answer_as_invocations(numeric):
    dep, X = numeric
    rows = rows_of(X, 5)
    expected = invocations(dep, rows)
    columns = list(zip(*rows, strict=True))
    inputs = [
        {"name": "visits", "shape": [5], "datatype": "INT64", "data": list(columns[2])},
        {"name": "age", "shape": [5], "datatype": "FP64", "data": list(columns[0])},
        {"name": "income", "shape": [5], "datatype": "FP64", "data": list(columns[1])},
    ]
    out = infer(dep, inputs)
    assert out["predict"]["data"] == expected["predictions"]
    proba = np.asarray(out["predict_proba"]["data"]).reshape(out["predict_proba"]["shape"])
    # the same model on the same numbers: the probabilities agree bit for bit too
    again = infer(dep, [{"name": "t", "shape": [5, 3], "datatype": "FP64", "data": rows}])
    assert proba.ravel().tolist() == again["predict_proba"]["data"]
    logged = nd.logs("v2fast")
    ids = out["prediction_id"]["data"]
    assert set(ids) <= set(logged["prediction_id"])
    mine = logged.set_index("prediction_id").loc[ids]
    assert mine["visits"].tolist() == list(columns[2])


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param([tensor([1, 2], [1.0, 2.0])], id="width"),
        pytest.param([tensor([2, 3], [1.0] * 5)], id="count"),
        pytest.param([tensor([1, 3], [[[1.0, 2.0, 3.0]]])], id="deep"),
        pytest.param([tensor([1, -3], [1.0] * 3)], id="negative"),
        pytest.param(
            [
                {"name": "age", "shape": [2], "datatype": "FP64", "data": [30.0, 40.0]},
                {"name": "income", "shape": [2], "datatype": "FP64", "data": [1.0]},
                {"name": "visits", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            ],
            id="column-count",
        ),
        pytest.param(
            [
                {"name": "age", "shape": [2], "datatype": "FP64", "data": [30.0, 40.0]},
                {"name": "income", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
                {"name": "visits", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]},
            ],
            id="ragged-columns",
        ),
    ],
)
def test_bad_shapes_are_400(numeric, inputs):
    dep, _ = numeric
    response = post(dep, {"inputs": inputs}, "/v2/models/v2fast/infer")
    assert response.status_code == 400, response.text
    assert "error" in response.json()


def test_text_and_booleans_in_a_numeric_tensor_are_refused(numeric):
    dep, _ = numeric
    for value in ("SECRET-7", True):
        body = {"inputs": [tensor([1, 3], [1.0, value, 2])]}
        response = post(dep, body, "/v2/models/v2fast/infer")
        assert response.status_code in (400, 422), response.text
        assert "SECRET" not in response.text


def test_numeric_schema_gives_a_float_matrix_without_a_dataframe():
    schema = Schema((Column("a", "double"), Column("b", "long")))
    tensor = wire.from_oip(
        schema,
        {"inputs": [{"name": "t", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]},
        may_hold_booleans=False,
    )
    assert isinstance(tensor, np.ndarray) and tensor.dtype == np.float64
    assert tensor.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    named = wire.from_oip(
        schema,
        {
            "inputs": [
                {"name": "b", "shape": [2], "datatype": "INT64", "data": [2, 4]},
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.5, 3.5]},
            ]
        },
        may_hold_booleans=False,
    )
    assert isinstance(named, np.ndarray)
    assert named.tolist() == [[1.5, 2.0], [3.5, 4.0]]
    # a body that may hold JSON booleans takes the checked column path instead
    checked = wire.from_oip(
        schema,
        {"inputs": [{"name": "t", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2]}]},
        may_hold_booleans=True,
    )
    assert isinstance(checked, dict)
