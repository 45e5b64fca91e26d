"""The HTTP API of a served model (DESIGN §4), against real servers on 127.0.0.1.

One home per module and three servers shared by every test: ``churn@champion``
(string and numeric columns), ``numeric/1`` (numbers only, with missing values in
training: the float-matrix fast path and OIP 2-D tensors), and ``churn-guarded``
(a token plus small body and row limits, which reach the child through the
environment ``nd.serve`` passes on).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

import nbdeploy as nd
from tests.conftest import environ

SECRET = "SECRET-VALUE-123"
TOKEN = "tok-3f9a2c77"
COLUMNS = ["tenure_months", "monthly_charges", "support_calls", "contract"]
NUMERIC = COLUMNS[:3]
MAX_BODY = 4096
MAX_ROWS = 50


@pytest.fixture(scope="module")
def servers(module_home, module_champion, churn_data):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _, _ = churn_data
    limits = {"NBDEPLOY_MAX_BODY_BYTES": str(MAX_BODY), "NBDEPLOY_MAX_ROWS": str(MAX_ROWS)}
    with environ(**limits), ThreadPoolExecutor(2) as pool:
        # the guarded server starts while the numeric model registers
        guarded = pool.submit(nd.serve, "churn/1", name="churn-guarded", token=TOKEN)
        Xn = X[NUMERIC].copy()
        Xn.loc[Xn.index[::10], "monthly_charges"] = np.nan  # training had missing values
        numeric_model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())
        numeric_model.fit(Xn, y)
        nd.register(numeric_model, "numeric", Xn, y)
        guarded = guarded.result()
    with ThreadPoolExecutor(2) as pool:
        main = pool.submit(nd.serve, "churn@champion")
        numeric = pool.submit(nd.serve, "numeric/1")
        main, numeric = main.result(), numeric.result()
    return SimpleNamespace(
        home=module_home, main=main, numeric=numeric, guarded=guarded, numeric_model=numeric_model
    )


# -- helpers ---------------------------------------------------------------------------


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenure_months": 12,
        "monthly_charges": 70.5,
        "support_calls": 1,
        "contract": "monthly",
    }
    base.update(changes)
    return base


def records(frame) -> list[dict[str, Any]]:
    return frame.astype(object).to_dict(orient="records")


def encode(body: Any) -> bytes:
    # the standard json module writes NaN / Infinity tokens, as MLflow's client does
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def post(
    dep,
    body: Any,
    *,
    path: str = "/invocations",
    ctype: str | None = "application/json",
    token: str | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {"content-type": ctype} if ctype else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(
        dep.url + path, content=encode(body), headers=headers, params=params, timeout=30
    )


def get(dep, path: str, *, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(dep.url + path, headers=headers, timeout=30, **kw)


def rejections(home: Path, deployment: str) -> int:
    with sqlite3.connect(home / "audit.db") as db:
        return db.execute(
            "SELECT COALESCE(SUM(count), 0) FROM rejections WHERE deployment = ?", (deployment,)
        ).fetchone()[0]


def metric(dep, name: str, labels: str = "", token: str | None = None) -> float:
    text = get(dep, "/metrics", token=token).text
    pattern = "^" + re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def logged(dep) -> int:
    return len(nd.logs(dep.name))


def expect_rejection(
    servers,
    dep,
    send,
    status: int,
    code: str,
    *,
    column: str | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    oip: bool = False,
    token: str | None = None,
) -> str:
    """Send a bad request; check the answer, that nothing was logged and that it was counted."""
    before = (
        logged(dep),
        rejections(servers.home, dep.name),
        metric(dep, "nbdeploy_rejected_total", f'code="{code}"', token),
    )
    response = send()
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    if oip:
        assert isinstance(body["error"], str)
        message = body["error"]
    else:
        assert set(body["error"]) == {"code", "message"}
        assert body["error"]["code"] == code
        message = body["error"]["message"]
    assert message.strip()
    if column is not None:
        assert column in message
    for secret in secrets:
        assert secret not in response.text
    deadline = time.monotonic() + 5  # rejection counts are committed every 0.2 s
    while rejections(servers.home, dep.name) == before[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = (
        logged(dep),
        rejections(servers.home, dep.name),
        metric(dep, "nbdeploy_rejected_total", f'code="{code}"', token),
    )
    assert after[0] == before[0], "a rejected request left a prediction row"
    assert after[1] == before[1] + 1, "the rejection was not counted in the audit db"
    assert after[2] == before[2] + 1, "the rejection was not counted in /metrics"
    return message


def deep(inner: bytes, depth: int = 5000) -> bytes:
    return b'{"inputs": ' + b"[" * depth + inner + b"]" * depth + b"}"


def csv_body(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


CSV_HEADER = ",".join(COLUMNS)

# id, body, content type, status, code, column named in the message, values not echoed
BAD_INPUT = [
    (
        "not-json",
        b'{"dataframe_records": [{"contract": "SECRET-VALUE-123"',
        None,
        400,
        "bad_request",
        None,
    ),
    (
        "not-json-with-nan",
        b'{"dataframe_records": [{"monthly_charges": NaN, "x": "SECRET-VALUE-123"',
        None,
        400,
        "bad_request",
        None,
    ),
    ("empty-body", b"", None, 400, "bad_request", None),
    ("not-an-object", b'["SECRET-VALUE-123"]', None, 400, "bad_request", None),
    (
        "two-formats",
        {"dataframe_records": [row(contract=SECRET)], "instances": [row(contract=SECRET)]},
        None,
        400,
        "bad_request",
        None,
    ),
    ("no-format", {"data": [row(contract=SECRET)]}, None, 400, "bad_request", None),
    ("too-deep", deep(b'"SECRET-VALUE-123"'), None, 400, "bad_request", None),
    ("too-deep-with-nan", deep(b'NaN, "SECRET-VALUE-123"'), None, 400, "bad_request", None),
    (
        "lone-surrogate",
        {"dataframe_records": [row(contract="\ud800" + SECRET)]},
        None,
        400,
        "bad_request",
        None,
    ),
    (
        "lone-surrogate-with-nan",
        {"dataframe_records": [row(contract="\udfff" + SECRET, monthly_charges=float("nan"))]},
        None,
        400,
        "bad_request",
        None,
    ),
    ("record-not-an-object", {"dataframe_records": [SECRET]}, None, 400, "bad_request", None),
    (
        "short-row",
        {"dataframe_split": {"columns": COLUMNS, "data": [[12, 70.5, SECRET]]}},
        None,
        400,
        "bad_request",
        None,
    ),
    (
        "column-twice",
        {
            "dataframe_split": {
                "columns": [*COLUMNS, "contract"],
                "data": [[12, 70.5, 1, "monthly", SECRET]],
            }
        },
        None,
        400,
        "bad_request",
        None,
    ),
    (
        "csv-ragged",
        csv_body(CSV_HEADER, "12,70.5,1,monthly," + SECRET),
        "text/csv",
        400,
        "bad_request",
        None,
    ),
    (
        "csv-not-utf8",
        csv_body(CSV_HEADER) + b"12,70.5,1,\xff\xfe" + SECRET.encode(),
        "text/csv",
        400,
        "bad_request",
        None,
    ),
    (
        "text-plain",
        {"dataframe_records": [row(contract=SECRET)]},
        "text/plain",
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "form",
        b"contract=SECRET-VALUE-123",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "missing-column",
        {
            "dataframe_records": [
                {k: v for k, v in row(contract=SECRET).items() if k != "support_calls"}
            ]
        },
        None,
        422,
        "schema_violation",
        "support_calls",
    ),
    (
        "extra-column",
        {"dataframe_records": [row(loyalty_points=SECRET)]},
        None,
        422,
        "schema_violation",
        "loyalty_points",
    ),
    (
        "string-in-numeric",
        {"dataframe_records": [row(tenure_months=SECRET)]},
        None,
        422,
        "schema_violation",
        "tenure_months",
    ),
    (
        "digits-string-in-numeric",
        {"dataframe_records": [row(tenure_months="31337")]},
        None,
        422,
        "schema_violation",
        "tenure_months",
    ),
    (
        "number-in-string",
        {"dataframe_records": [row(contract=987654321)]},
        None,
        422,
        "schema_violation",
        "contract",
    ),
    (
        "object-in-numeric",
        {"dataframe_records": [row(support_calls={"v": SECRET})]},
        None,
        422,
        "schema_violation",
        "support_calls",
    ),
    (
        "list-in-numeric",
        {"dataframe_records": [row(support_calls=[4242, 4243])]},
        None,
        422,
        "schema_violation",
        "support_calls",
    ),
    (
        "ragged-lists-in-numeric",
        {"dataframe_records": [row(support_calls=[4242, 4243]), row(support_calls=7)]},
        None,
        422,
        "schema_violation",
        "support_calls",
    ),
    (
        "boolean-in-numeric",
        {"dataframe_records": [row(tenure_months=True)]},
        None,
        422,
        "schema_violation",
        "tenure_months",
    ),
    (
        "nan-token",
        {"dataframe_split": {"columns": COLUMNS, "data": [[12, float("nan"), 1, SECRET]]}},
        None,
        422,
        "schema_violation",
        "monthly_charges",
    ),
    (
        "infinity-token",
        {"dataframe_records": [row(monthly_charges=float("inf"), contract=SECRET)]},
        None,
        422,
        "schema_violation",
        "monthly_charges",
    ),
    (
        "minus-infinity-token",
        {"inputs": {**{k: [v] for k, v in row().items()}, "monthly_charges": [float("-inf")]}},
        None,
        422,
        "schema_violation",
        "monthly_charges",
    ),
    (
        "null-in-string",
        {"dataframe_records": [row(contract=None, tenure_months=4242)]},
        None,
        422,
        "schema_violation",
        "contract",
    ),
    (
        "null-in-numeric",
        {"instances": [row(tenure_months=None)]},
        None,
        422,
        "schema_violation",
        "tenure_months",
    ),
    ("empty-records", {"dataframe_records": []}, None, 422, "schema_violation", None),
    (
        "empty-split",
        {"dataframe_split": {"columns": COLUMNS, "data": []}},
        None,
        422,
        "schema_violation",
        None,
    ),
    ("empty-instances", {"instances": []}, None, 422, "schema_violation", None),
    ("empty-inputs", {"inputs": {c: [] for c in COLUMNS}}, None, 422, "schema_violation", None),
    ("csv-header-only", csv_body(CSV_HEADER), "text/csv", 422, "schema_violation", None),
    (
        "csv-text-in-numeric",
        csv_body(CSV_HEADER, f"{SECRET},70.5,1,monthly"),
        "text/csv",
        422,
        "schema_violation",
        "tenure_months",
    ),
    (
        "csv-nan",
        csv_body(CSV_HEADER, "12,NaN,1," + SECRET),
        "text/csv",
        422,
        "schema_violation",
        "monthly_charges",
    ),
]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code", "column"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_rejected_clearly(servers, body, ctype, status, code, column):
    dep = servers.main
    expect_rejection(
        servers,
        dep,
        lambda: post(dep, body, ctype=ctype or "application/json"),
        status,
        code,
        column=column,
        secrets=(SECRET, "31337", "4242", "987654321"),
    )


# the numeric model: all-numeric rows take the float-matrix fast path
NUMERIC_BAD_INPUT = [
    ("string", [[12, SECRET, 1]], "monthly_charges"),
    ("infinity", [[12, float("inf"), 1]], "monthly_charges"),
    ("list-in-cell", [[[4242, 4243], 70.5, 1]], "tenure_months"),
    ("ragged-lists", [[[4242, 4243], 70.5, 1], [12, 70.5, 1]], "tenure_months"),
    ("all-booleans", [[True, False, True]], "tenure_months"),
    ("boolean-among-numbers", [[12, 70.5, True]], "support_calls"),
    ("null-in-integer", [[None, 70.5, 1]], "tenure_months"),
]


@pytest.mark.parametrize(
    ("data", "column"), [pytest.param(*case[1:], id=case[0]) for case in NUMERIC_BAD_INPUT]
)
def test_bad_input_to_numeric_model_is_rejected(servers, data, column):
    dep = servers.numeric
    body = {"dataframe_split": {"columns": NUMERIC, "data": data}}
    expect_rejection(
        servers,
        dep,
        lambda: post(dep, body),
        422,
        "schema_violation",
        column=column,
        secrets=(SECRET, "4242"),
    )


# -- the formats -------------------------------------------------------------------------


def test_every_format_gives_the_same_predictions(servers, churn_data, churn_models):
    _, _, X_test, _ = churn_data
    frame = X_test.head(25)
    expected = churn_models[0].predict(frame).tolist()
    recs = records(frame)
    rows = [[r[c] for c in COLUMNS] for r in recs]
    reordered = COLUMNS[::-1]
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": COLUMNS, "data": rows}},
        "dataframe_split (index, other column order)": {
            "dataframe_split": {
                "index": list(range(25)),
                "columns": reordered,
                "data": [[r[c] for c in reordered] for r in recs],
            }
        },
        "dataframe_records": {"dataframe_records": recs},
        "instances (objects)": {"instances": recs},
        "instances (rows)": {"instances": rows},
        "inputs (columns)": {"inputs": {c: [r[c] for r in recs] for c in COLUMNS}},
        "inputs (objects)": {"inputs": recs},
    }
    answers = {name: post(servers.main, body) for name, body in bodies.items()}
    answers["text/csv"] = post(servers.main, frame.to_csv(index=False).encode(), ctype="text/csv")
    answers["csv; charset"] = post(
        servers.main, frame.to_csv(index=False).encode(), ctype="text/csv; charset=utf-8"
    )
    seen: set[str] = set()
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        assert body["predictions"] == expected, name
        assert body["model_version"] == "1"
        assert len(body["prediction_ids"]) == 25
        assert not seen & set(body["prediction_ids"]), "prediction ids must be unique"
        seen |= set(body["prediction_ids"])
    logs = nd.logs("churn")
    assert seen <= set(logs["prediction_id"])


def test_csv_exported_with_a_byte_order_mark_is_read(servers, churn_data, churn_models):
    # Excel's "CSV UTF-8" starts with a BOM; it must not hide the first column's name
    _, _, X_test, _ = churn_data
    frame = X_test.head(3)
    body = frame.to_csv(index=False).encode("utf-8-sig")
    response = post(servers.main, body, ctype="text/csv")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == churn_models[0].predict(frame).tolist()


def test_logged_row_matches_the_request(servers, churn_data, churn_models):
    _, _, X_test, _ = churn_data
    frame = X_test.iloc[40:43]
    answer = post(servers.main, {"dataframe_records": records(frame)}).json()
    logs = nd.logs("churn").set_index("prediction_id").loc[answer["prediction_ids"]]
    assert logs["prediction"].tolist() == answer["predictions"]
    assert (logs["model_version"] == 1).all()
    assert (logs["alias"] == "champion").all()
    assert (logs["role"] == "served").all()
    assert logs["request_id"].nunique() == 1
    for column in COLUMNS:
        assert logs[column].tolist() == frame[column].astype(object).tolist()
    proba = churn_models[0].predict_proba(frame)[:, 1]
    np.testing.assert_allclose(logs["proba_yes"].to_numpy(dtype=float), proba, rtol=1e-12)


def test_nan_tokens_are_parsed_and_the_schema_decides(servers):
    dep, model = servers.numeric, servers.numeric_model
    import pandas as pd

    frame = pd.DataFrame([[12, np.nan, 1], [40, 20.0, 0]], columns=NUMERIC)
    expected = model.predict(frame).tolist()
    body = json.dumps(
        {"dataframe_split": {"columns": NUMERIC, "data": [[12, float("nan"), 1], [40, 20.0, 0]]}}
    )
    assert "NaN" in body  # exactly what MLflow's client sends
    nan_answer = post(dep, body.encode())
    assert nan_answer.status_code == 200, nan_answer.text
    assert nan_answer.json()["predictions"] == expected
    null_answer = post(
        dep,
        {
            "dataframe_records": [
                {"tenure_months": 12, "monthly_charges": None, "support_calls": 1},
                {"tenure_months": 40, "monthly_charges": 20.0, "support_calls": 0},
            ]
        },
    )
    assert null_answer.status_code == 200, null_answer.text
    assert null_answer.json()["predictions"] == expected
    csv_answer = post(
        dep, b"tenure_months,monthly_charges,support_calls\n12,,1\n40,20.0,0\n", ctype="text/csv"
    )
    assert csv_answer.json()["predictions"] == expected


# -- Open Inference Protocol V2 ------------------------------------------------------------


def oip_columns(frame) -> list[dict[str, Any]]:
    kinds = {
        "tenure_months": "INT64",
        "monthly_charges": "FP64",
        "support_calls": "INT64",
        "contract": "BYTES",
    }
    return [
        {
            "name": c,
            "shape": [len(frame)],
            "datatype": kinds[c],
            "data": frame[c].astype(object).tolist(),
        }
        for c in frame.columns
    ]


def test_oip_named_inputs(servers, churn_data, churn_models):
    _, _, X_test, _ = churn_data
    frame = X_test.head(10)
    response = post(
        servers.main, {"id": "req-7", "inputs": oip_columns(frame)}, path="/v2/models/churn/infer"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "churn"
    assert body["model_version"] == "1"
    assert body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["data"] == churn_models[0].predict(frame).tolist()
    assert outputs["predict"]["shape"] == [10]
    ids = outputs["prediction_id"]["data"]
    assert set(ids) <= set(nd.logs("churn")["prediction_id"])
    proba = np.asarray(outputs["predict_proba"]["data"]).reshape(outputs["predict_proba"]["shape"])
    np.testing.assert_allclose(proba, churn_models[0].predict_proba(frame), rtol=1e-12)
    versioned = post(
        servers.main, {"inputs": oip_columns(frame)}, path="/v2/models/churn/versions/1/infer"
    )
    assert versioned.status_code == 200


def test_oip_one_2d_tensor(servers):
    import pandas as pd

    dep, model = servers.numeric, servers.numeric_model
    data = [[12, 70.5, 1], [40, 20.0, 0], [3, 130.0, 5]]
    expected = model.predict(pd.DataFrame(data, columns=NUMERIC)).tolist()
    for payload in (data, [v for r in data for v in r]):  # nested, and flat row-major
        response = post(
            dep,
            {"inputs": [{"name": "input-0", "shape": [3, 3], "datatype": "FP64", "data": payload}]},
            path="/v2/models/numeric/infer",
        )
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["predict"]["data"] == expected
        assert len(outputs["prediction_id"]["data"]) == 3


def test_oip_metadata_and_health(servers):
    meta = get(servers.main, "/v2/models/churn")
    assert meta.status_code == 200
    body = meta.json()
    assert body["name"] == "churn"
    assert body["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in body["inputs"]] == [
        ("tenure_months", "INT64"),
        ("monthly_charges", "FP64"),
        ("support_calls", "INT64"),
        ("contract", "BYTES"),
    ]
    for path in ("/v2/health/ready", "/v2/health/live", "/health", "/ping"):
        assert get(servers.main, path).status_code == 200, path
    ready = get(servers.main, "/v2/models/churn/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


OIP_BAD_INPUT = [
    (
        "not-json",
        b'{"inputs": [SECRET-VALUE-123',
        "application/json",
        "/v2/models/churn/infer",
        400,
        "bad_request",
        None,
    ),
    (
        "no-inputs",
        {"outputs": [SECRET]},
        "application/json",
        "/v2/models/churn/infer",
        400,
        "bad_request",
        None,
    ),
    (
        "missing-column",
        "drop-contract",
        "application/json",
        "/v2/models/churn/infer",
        422,
        "schema_violation",
        "contract",
    ),
    (
        "string-in-numeric",
        "secret-tenure",
        "application/json",
        "/v2/models/churn/infer",
        422,
        "schema_violation",
        "tenure_months",
    ),
    (
        "wrong-shape",
        "bad-shape",
        "application/json",
        "/v2/models/churn/infer",
        400,
        "bad_request",
        "support_calls",
    ),
    (
        "csv",
        b"a,b\n1,2\n",
        "text/csv",
        "/v2/models/churn/infer",
        415,
        "unsupported_media_type",
        None,
    ),
    (
        "other-model",
        "good",
        "application/json",
        "/v2/models/SECRET-VALUE-124/infer",
        404,
        "not_found",
        None,
    ),
]


@pytest.mark.parametrize(
    ("body", "ctype", "path", "status", "code", "column"),
    [pytest.param(*case[1:], id=case[0]) for case in OIP_BAD_INPUT],
)
def test_oip_errors(servers, churn_data, body, ctype, path, status, code, column):
    _, _, X_test, _ = churn_data
    inputs = oip_columns(X_test.head(2))
    if body == "drop-contract":
        body = {"inputs": inputs[:3]}
    elif body == "secret-tenure":
        body = {"inputs": [{**inputs[0], "data": [SECRET, SECRET]}, *inputs[1:]]}
    elif body == "bad-shape":
        body = {"inputs": [*inputs[:2], {**inputs[2], "shape": [3]}, inputs[3]]}
    elif body == "good":
        body = {"inputs": inputs}
    dep = servers.main
    expect_rejection(
        servers,
        dep,
        lambda: post(dep, body, path=path, ctype=ctype),
        status,
        code,
        column=column,
        oip=True,
    )


# -- limits and the token (the guarded server) -------------------------------------------


def test_body_over_the_limit_is_413(servers):
    dep = servers.guarded
    body = encode({"dataframe_records": [row(contract=SECRET)] * 60})
    assert len(body) > MAX_BODY
    message = expect_rejection(
        servers, dep, lambda: post(dep, body, token=TOKEN), 413, "payload_too_large", token=TOKEN
    )
    assert str(MAX_BODY) in message


def test_streamed_body_over_the_limit_is_413(servers):
    # no Content-Length (chunked): the limit holds while the body is read
    dep = servers.guarded
    chunk = encode({"dataframe_records": [row(contract=SECRET)] * 20})

    def send() -> httpx.Response:
        return httpx.post(
            dep.url + "/invocations",
            content=iter([chunk] * 4),
            timeout=30,
            headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
        )

    expect_rejection(servers, dep, send, 413, "payload_too_large", token=TOKEN)


def test_too_many_rows_is_413(servers):
    dep = servers.guarded
    ok = post(
        dep,
        {"dataframe_split": {"columns": COLUMNS, "data": [list(row().values())] * MAX_ROWS}},
        token=TOKEN,
    )
    assert ok.status_code == 200, ok.text
    body = {
        "dataframe_split": {"columns": COLUMNS, "data": [list(row().values())] * (MAX_ROWS + 1)}
    }
    assert len(encode(body)) < MAX_BODY
    message = expect_rejection(
        servers, dep, lambda: post(dep, body, token=TOKEN), 413, "payload_too_large", token=TOKEN
    )
    assert str(MAX_ROWS) in message
    oip = {
        "inputs": [
            {"name": c, "shape": [MAX_ROWS + 1], "datatype": "FP64", "data": [v] * (MAX_ROWS + 1)}
            for c, v in row().items()
        ]
    }
    expect_rejection(
        servers,
        dep,
        lambda: post(dep, oip, token=TOKEN, path="/v2/models/churn/infer"),
        413,
        "payload_too_large",
        token=TOKEN,
        oip=True,
    )


def test_token_is_required(servers, churn_data):
    dep = servers.guarded
    good = {"dataframe_records": [row()]}
    expect_rejection(servers, dep, lambda: post(dep, good), 401, "unauthorized", token=TOKEN)
    expect_rejection(
        servers, dep, lambda: post(dep, good, token=SECRET), 401, "unauthorized", token=TOKEN
    )
    expect_rejection(
        servers,
        dep,
        lambda: httpx.post(dep.url + "/invocations", json=good, headers={"authorization": TOKEN}),
        401,
        "unauthorized",
        token=TOKEN,
    )
    for name in ("token", "access_token", "api_key"):  # only the header counts
        expect_rejection(
            servers,
            dep,
            lambda name=name: post(dep, good, params={name: TOKEN}),
            401,
            "unauthorized",
            token=TOKEN,
            secrets=(TOKEN,),
        )
    oip = {"inputs": oip_columns(churn_data[2].head(1))}
    expect_rejection(
        servers,
        dep,
        lambda: post(dep, oip, path="/v2/models/churn/infer"),
        401,
        "unauthorized",
        token=TOKEN,
        oip=True,
    )
    answer = post(dep, good, token=TOKEN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"


def test_token_leaves_only_health_open(servers):
    dep = servers.guarded
    for path in ("/health", "/ping", "/v2/health/live"):
        assert get(dep, path).status_code == 200, path
    for path in ("/metrics", "/v2/health/ready", "/v2/models/churn", "/info"):
        assert get(dep, path).status_code == 401, path
        assert get(dep, path, params={"token": TOKEN}).status_code == 401, path
        assert get(dep, path, token=TOKEN).status_code == 200, path
    assert post(dep, {"prediction_ids": [], "labels": []}, path="/feedback").status_code == 401


def test_deployment_object_sends_its_token(servers, churn_data, churn_models):
    _, _, X_test, _ = churn_data
    frame = X_test.head(4)
    out = servers.guarded.predict(frame)
    assert out["prediction"].tolist() == churn_models[0].predict(frame).tolist()
    assert servers.guarded.status()["status"] == "ready"


# -- metrics and feedback ------------------------------------------------------------------

_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="[^"]*",?)*\})? '
    r"(-?[0-9.]+(e[+-]?[0-9]+)?|[+-]?Inf|NaN)$"
)


def test_metrics_is_prometheus_text(servers):
    post(servers.main, {"dataframe_records": [row()]})
    response = get(servers.main, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert lines
    for line in lines:
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ ", line), line
            if line.startswith("# TYPE"):
                assert line.split()[3] in ("counter", "gauge", "histogram", "summary"), line
        else:
            assert _SAMPLE.match(line), line
    assert metric(servers.main, "nbdeploy_predictions_total") >= 1
    assert metric(servers.main, "nbdeploy_requests_total", 'route="/invocations",status="200"') >= 1


def feedback_rows(home: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(home / "audit.db") as db:
        return db.execute(
            "SELECT prediction_id, label, source FROM feedback ORDER BY seq"
        ).fetchall()


def test_feedback_records_labels(servers):
    ids = post(servers.main, {"dataframe_records": [row(), row(tenure_months=60)]}).json()[
        "prediction_ids"
    ]
    before = feedback_rows(servers.home)
    response = post(
        servers.main, {"prediction_ids": ids, "labels": ["yes", "no"]}, path="/feedback"
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 2}
    added = feedback_rows(servers.home)[len(before) :]
    assert [(p, json.loads(label)) for p, label, _ in added] == [(ids[0], "yes"), (ids[1], "no")]
    assert {source for _, _, source in added} == {"http"}


@pytest.mark.parametrize("case", ["unknown", "mixed", "row-out-of-range", "lengths", "empty"])
def test_feedback_refuses_unknown_ids(servers, case):
    ids = post(servers.main, {"dataframe_records": [row()]}).json()["prediction_ids"]
    body = {
        "unknown": {"prediction_ids": ["0123456789abcdef0123-0"], "labels": ["yes"]},
        "mixed": {"prediction_ids": [ids[0], "0123456789abcdef0123-0"], "labels": ["yes", "no"]},
        "row-out-of-range": {"prediction_ids": [ids[0][:-1] + "5"], "labels": ["yes"]},
        "lengths": {"prediction_ids": ids, "labels": ["yes", "no"]},
        "empty": {"prediction_ids": [], "labels": []},
    }[case]
    before = feedback_rows(servers.home)
    response = post(servers.main, body, path="/feedback")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "schema_violation"
    assert feedback_rows(servers.home) == before


def test_feedback_malformed_body_is_400(servers):
    before = feedback_rows(servers.home)
    for body in (b"[1, 2]", b"{", {"prediction_ids": "abc-0", "labels": "yes"}, {"ids": []}):
        response = post(servers.main, body, path="/feedback")
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "bad_request"
    assert feedback_rows(servers.home) == before


def test_unknown_route_and_method(servers):
    missing = get(servers.main, "/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = get(servers.main, "/invocations")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


# -- after everything above ----------------------------------------------------------------


def test_servers_survive_all_bad_input(servers, churn_data):
    frame = churn_data[2].head(2)
    for dep, token in ((servers.main, None), (servers.guarded, TOKEN), (servers.numeric, None)):
        assert get(dep, "/health").status_code == 200
        info = get(dep, "/info", token=token).json()
        assert info["pid"] == dep.pid, "the server was restarted"
        body = {"dataframe_records": records(frame[NUMERIC] if dep is servers.numeric else frame)}
        assert post(dep, body, token=token).status_code == 200
        text = get(dep, "/metrics", token=token).text
        assert not re.search(r'status="5\d\d"', text), "bad input must never give a 5xx"
        log = (servers.home / "deployments" / f"{dep.name}.log").read_text()
        assert "internal error" not in log, log
    running = nd.deployments().set_index("name")["status"].to_dict()
    assert running == {"churn": "running", "churn-guarded": "running", "numeric": "running"}
