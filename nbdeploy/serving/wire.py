"""Wire formats -> checked column arrays, and back.

MLflow's four JSON layouts and CSV for ``/invocations``; Open Inference Protocol
V2 (KServe/MLServer) tensors for ``/v2/models/{name}/infer``. Each returns what
:class:`~nbdeploy.schema.Schema` returns: a float matrix (all-numeric schemas)
or a dict of column arrays.

Row limits are enforced while reading, before the objects of a whole body exist:
CSV is converted to column arrays a chunk of rows at a time and stops at the
limit; a JSON body that might hold too many rows (it has as many commas as the
limit) is walked first with the standard library's scanner, which decodes one
row at a time and stops counting at the limit.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import SchemaError
from nbdeploy.schema import Schema

if TYPE_CHECKING:
    from nbdeploy.serving.adapter import LoadedModel
    from nbdeploy.serving.batching import Answer

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_OIP_TYPES = {"double": "FP64", "long": "INT64", "boolean": "BOOL", "string": "BYTES"}


_CSV_CHUNK = 16_384  # rows converted to arrays at a time
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
# containers walked element by element, by the kinds of their ancestors and their own
# (o: object, a: array); anything else is decoded whole, as one row or value
_MLFLOW_WALK = frozenset({"o", "a", "oo", "oa", "ooa"})  # split.data, records, columns
_OIP_WALK = frozenset({"o", "a", "oa", "oao", "oaoa"})  # inputs[i].data


class TooManyRows(Exception):
    """A body holds more rows than the limit (raised before it is fully parsed)."""


def _bad(message: str) -> SchemaError:
    return SchemaError(message, code="bad_request")


def check_json_rows(body: bytes, limit: int, *, oip: bool = False) -> None:
    """Raise :class:`TooManyRows` if an array of rows or column values in ``body``
    has more than ``limit`` elements; malformed JSON is left to the real parser."""
    if body.count(b",") < limit:  # an array of n elements holds n - 1 commas
        return
    try:
        _Walker(body.decode("utf-8"), limit, _OIP_WALK if oip else _MLFLOW_WALK).value(0, "")
    except (ValueError, IndexError, RecursionError):
        return


class _Walker:
    def __init__(self, text: str, limit: int, walked: frozenset[str]) -> None:
        self.text, self.limit, self.walked = text, limit, walked

    def value(self, i: int, ancestors: str) -> int:
        """Skip the value at ``i``; returns where it ends."""
        text = self.text
        i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
        kind = {"{": "o", "[": "a"}.get(text[i], "")
        if not kind or ancestors + kind not in self.walked:
            return _DECODER.raw_decode(text, i)[1]
        close, count, i = "}" if kind == "o" else "]", 0, i + 1
        i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == close:
            return i + 1
        while True:
            if kind == "o":  # a key, then its value
                key, i = _DECODER.raw_decode(text, _SPACE.match(text, i).end())  # type: ignore[union-attr]
                i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
                if not isinstance(key, str) or text[i] != ":":
                    raise ValueError("not an object")
                i += 1
            i = self.value(i, ancestors + kind)
            count += 1
            if count > self.limit:
                raise TooManyRows
            i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
            if text[i] == close:
                return i + 1
            if text[i] != ",":
                raise ValueError("malformed")
            i += 1


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


def from_csv(
    schema: Schema, body: bytes, *, max_rows: int | None = None
) -> np.ndarray | dict[str, Any]:
    """CSV with a header row; empty fields are missing values.

    Rows become column arrays ``_CSV_CHUNK`` at a time, so memory stays near the size
    of the result, and reading stops (:class:`TooManyRows`) past ``max_rows``.
    """
    # decoded as it is read, never as one more copy of the body (spreadsheets write a
    # byte order mark, which utf-8-sig drops)
    lines = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline="")
    reader = csv.reader(lines, strict=True)  # an unclosed quote is an error, not a value
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise _bad("the CSV body needs a header row and at least one data row") from None
    except UnicodeDecodeError:
        raise _bad("the CSV body is not UTF-8") from None
    if len(set(header)) != len(header):
        raise _bad("a column is named twice in the CSV header")
    schema._check_names(header)  # a missing or extra column is reported before any row
    parts: list[dict[str, Any]] = []
    chunk: list[list[str]] = []
    n, limit = 0, max_rows if max_rows is not None else float("inf")
    try:
        for r in reader:
            if not r:
                continue
            if len(r) != len(header):
                raise _bad("every CSV row must have as many fields as the header")
            n += 1
            if n > limit:
                raise TooManyRows
            chunk.append(r)
            if len(chunk) == _CSV_CHUNK:
                parts.append(_csv_columns(schema, header, chunk))
                chunk = []
    except csv.Error:
        raise _bad("the CSV body is malformed (check its quotes)") from None
    except UnicodeDecodeError:
        raise _bad("the CSV body is not UTF-8") from None
    if chunk:
        parts.append(_csv_columns(schema, header, chunk))
    if not parts:
        raise SchemaError("the batch is empty: send at least one row")
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _csv_columns(schema: Schema, header: list[str], rows: list[list[str]]) -> dict[str, Any]:
    typed = {c.name: c for c in schema.columns}
    columns: dict[str, Any] = {}
    for name, values in zip(header, zip(*rows, strict=True), strict=True):
        col = typed[name]
        if col.type == "string":
            columns[name] = [v if v != "" else None for v in values]
            continue
        if col.type != "boolean":
            try:  # float() in C over the column; no list of Python floats in between
                columns[name] = np.fromiter(map(float, values), np.float64, len(values))
                continue
            except ValueError:  # empty fields or text: the cell by cell path says which
                pass
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


def from_oip(schema: Schema, data: Any) -> np.ndarray | dict[str, Any]:
    """OIP V2: one named input per column, or one 2-D tensor in schema order."""
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
    if (
        len(tensors) == 1
        and len(tensors[0]["shape"]) == 2
        and tensors[0]["name"] not in schema.names
    ):
        n, width = tensors[0]["shape"]
        flat = _flatten(tensors[0]["data"])
        if width != len(schema.columns) or len(flat) != n * width:
            raise _bad(
                f"a 2-D input must have shape [rows, {len(schema.columns)}] and that many values"
            )
        rows = [flat[i * width : (i + 1) * width] for i in range(n)]
        return schema.from_rows(None, rows)
    columns = {}
    for t in tensors:
        values = _flatten(t["data"])
        expected = int(np.prod(t["shape"])) if t["shape"] else 1
        if len(values) != expected:
            raise _bad(f"input {t['name'][:40]!r} has {len(values)} values for shape {t['shape']}")
        columns[t["name"]] = values
    return schema.from_columns(columns)


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
