"""Wire formats -> checked column arrays, and back.

MLflow's four JSON layouts and CSV for ``/invocations``; Open Inference Protocol
V2 (KServe/MLServer) tensors for ``/v2/models/{name}/infer``. Each returns what
:class:`~nbdeploy.schema.Schema` returns: a float matrix (all-numeric schemas)
or a dict of column arrays.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import SchemaError
from nbdeploy.schema import Schema

if TYPE_CHECKING:
    from nbdeploy.serving.adapter import LoadedModel
    from nbdeploy.serving.batching import Answer

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_OIP_TYPES = {"double": "FP64", "long": "INT64", "boolean": "BOOL", "string": "BYTES"}


def _bad(message: str) -> SchemaError:
    return SchemaError(message, code="bad_request")


def from_mlflow_json(
    schema: Schema, data: Any, *, may_hold_booleans: bool = True
) -> np.ndarray | dict[str, Any]:
    if not isinstance(data, dict):
        raise _bad(f"the body must be a JSON object with one of: {', '.join(FORMATS)}")
    given = [key for key in FORMATS if key in data]
    if len(given) != 1:
        problem = "two formats in one body" if given else "no recognised format"
        raise _bad(f"{problem}: send exactly one of {', '.join(FORMATS)}")
    unknown = set(data) - {given[0], "params"}
    if unknown:
        raise _bad(f"unexpected top-level key {sorted(unknown)[0][:40]!r}")
    payload = data[given[0]]
    if given[0] == "dataframe_split":
        if not isinstance(payload, dict) or "data" not in payload:
            raise _bad('dataframe_split needs {"columns": [...], "data": [[...], ...]}')
        columns = payload.get("columns")
        if columns is not None and (
            not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
        ):
            raise _bad("dataframe_split columns must be a list of names")
        return schema.from_rows(columns, payload["data"], may_hold_booleans=may_hold_booleans)
    if given[0] == "dataframe_records":
        return schema.from_records(payload)
    return _tensor_like(schema, payload, may_hold_booleans)


def _tensor_like(
    schema: Schema, payload: Any, may_hold_booleans: bool = True
) -> np.ndarray | dict[str, Any]:
    """``instances`` / ``inputs``: an object of columns, or a list of rows or objects."""
    if isinstance(payload, dict):
        return schema.from_columns(payload)
    if not isinstance(payload, list) or not payload:
        raise SchemaError("the batch is empty: send at least one row")
    if isinstance(payload[0], dict):
        return schema.from_records(payload)
    if not isinstance(payload[0], list) and len(schema.columns) == 1:
        return schema.from_columns({schema.names[0]: payload})
    return schema.from_rows(None, payload, may_hold_booleans=may_hold_booleans)


def from_csv(schema: Schema, body: bytes) -> np.ndarray | dict[str, Any]:
    """CSV with a header row; empty fields are missing values."""
    try:
        text = body.decode("utf-8-sig")  # spreadsheets write a byte order mark
    except UnicodeDecodeError:
        raise _bad("the CSV body is not UTF-8") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        rows = list(reader)
    except (StopIteration, csv.Error):
        raise _bad("the CSV body needs a header row and at least one data row") from None
    rows = [r for r in rows if r]
    if len(set(header)) != len(header):
        raise _bad("a column is named twice in the CSV header")
    if not rows:
        raise SchemaError("the batch is empty: send at least one row")
    if any(len(r) != len(header) for r in rows):
        raise _bad("every CSV row must have as many fields as the header")
    typed = {c.name: c for c in schema.columns}
    columns: dict[str, list[Any]] = {}
    for j, name in enumerate(header):
        col = typed.get(name)
        values = [r[j] for r in rows]
        if col is None or col.type == "string":
            columns[name] = [v if v != "" else None for v in values]
            continue
        parsed: list[Any] = []
        for v in values:
            if v == "":
                parsed.append(None)
            elif col.type == "boolean" and v.lower() in ("true", "false"):
                parsed.append(v.lower() == "true")
            else:
                try:
                    parsed.append(float(v))
                except ValueError:
                    raise SchemaError(
                        f"column {name!r} expects {col.type} values, got text", column=name
                    ) from None
        columns[name] = parsed
    return schema.from_columns(columns)


def from_oip(
    schema: Schema, data: Any, *, may_hold_booleans: bool = True
) -> np.ndarray | dict[str, Any]:
    """OIP V2: one named input per column, or one 2-D tensor in schema order.

    For an all-numeric schema both layouts become one float matrix (the model's fast
    path, as ``/invocations`` gets) unless the body may hold JSON booleans, which numpy
    would silently read as 0/1; those, and every other schema, take the checked
    column path.
    """
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list) or not data["inputs"]:
        raise _bad(
            'send {"inputs": [{"name": ..., "shape": [...], "datatype": ..., "data": [...]}]}'
        )
    tensors = data["inputs"]
    for t in tensors:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or "data" not in t:
            raise _bad("every input needs a name, a shape, a datatype and data")
        if not isinstance(t.get("shape"), list) or not all(
            isinstance(d, int) and d >= 0 for d in t["shape"]
        ):
            raise _bad(f"input {t['name'][:40]!r} needs a shape of non-negative integers")
    fast = schema.numeric and not may_hold_booleans
    if (
        len(tensors) == 1
        and len(tensors[0]["shape"]) == 2
        and tensors[0]["name"] not in schema.names
    ):
        n, width = tensors[0]["shape"]
        if width != len(schema.columns):
            raise _bad(f"a 2-D input must have shape [rows, {len(schema.columns)}]")
        matrix = _numbers(tensors[0]["data"], n * width, ndim=(1, 2)) if fast else None
        if matrix is not None:
            return schema.from_matrix(matrix.reshape(n, width))
        flat = _flatten(tensors[0]["data"])
        if len(flat) != n * width:
            raise _bad(
                f"a 2-D input must have shape [rows, {len(schema.columns)}] and that many values"
            )
        rows = [flat[i * width : (i + 1) * width] for i in range(n)]
        return schema.from_rows(None, rows)
    if fast and len(tensors) == len(schema.columns) and all(len(t["shape"]) == 1 for t in tensors):
        by_name = {t["name"]: t for t in tensors}
        n = tensors[0]["shape"][0]
        if len(by_name) == len(tensors) and set(by_name) == set(schema.names):
            ordered = [by_name[name] for name in schema.names]
            if all(t["shape"][0] == n for t in ordered):
                block = _numbers([t["data"] for t in ordered], n * len(ordered), ndim=2)
                if block is not None:
                    return schema.from_matrix(block.reshape(len(ordered), n).T)
    columns = {}
    for t in tensors:
        values = _flatten(t["data"])
        expected = int(np.prod(t["shape"])) if t["shape"] else 1
        if len(values) != expected:
            raise _bad(f"input {t['name'][:40]!r} has {len(values)} values for shape {t['shape']}")
        columns[t["name"]] = values
    return schema.from_columns(columns)


def _numbers(data: Any, size: int, ndim: int | tuple[int, ...]) -> np.ndarray | None:
    """``data`` (nested lists of JSON numbers) as one numeric array of ``size`` values,
    or None when it is anything else: the checked path then says what is wrong."""
    try:
        array = np.array(data)
    except (ValueError, TypeError):  # ragged nesting
        return None
    shapes = ndim if isinstance(ndim, tuple) else (ndim,)
    if array.dtype.kind not in "fiu" or array.size != size or not size or array.ndim not in shapes:
        return None
    return array


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise _bad("input data must be a list")
    if data and isinstance(data[0], list):
        out: list[Any] = []
        for row in data:
            if not isinstance(row, list) or any(isinstance(v, list | dict) for v in row):
                raise _bad("input data is nested too deeply")
            out.extend(row)
        return out
    return data


def oip_metadata(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(model.version.version)],
        "platform": "nbdeploy",
        "inputs": [
            {"name": c.name, "datatype": _OIP_TYPES[c.type], "shape": [-1]}
            for c in model.schema.columns
        ],
        "outputs": [
            {
                "name": "predict",
                "datatype": "BYTES"
                if model.classes and any(isinstance(c, str) for c in model.classes)
                else "FP64",
                "shape": [-1],
            }
        ],
    }


def oip_response(name: str, answer: Answer, request_id: str | None) -> dict[str, Any]:
    predictions = answer.predictions
    array = np.asarray(predictions)
    kind = {"f": "FP64", "i": "INT64", "u": "INT64", "b": "BOOL"}.get(array.dtype.kind, "BYTES")
    n = len(answer.prediction_ids)
    outputs: list[dict[str, Any]] = [
        {"name": "predict", "shape": [n], "datatype": kind, "data": predictions},
        {"name": "prediction_id", "shape": [n], "datatype": "BYTES", "data": answer.prediction_ids},
    ]
    if answer.proba is not None:
        outputs.append(
            {
                "name": "predict_proba",
                "shape": list(answer.proba.shape),
                "datatype": "FP64",
                "data": answer.proba.ravel(),
                "parameters": {"classes": answer.classes},
            }
        )
    out = {"model_name": name, "model_version": str(answer.version), "outputs": outputs}
    if request_id:
        out["id"] = request_id[:128]
    return out
