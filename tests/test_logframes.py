"""``nd.logs`` decodes many records at once (``auditlog.frames``): every row must be what
decoding its record alone gives, whatever mix of layouts the log holds."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd

import nbdeploy as nd
from nbdeploy.auditlog import (
    LogTail,
    Record,
    decode_inputs,
    decode_record,
    encode_inputs,
    encode_payload,
    shared,
)

NUMERIC = ["a", "b"]
MIXED = ["age", "email"]


def _record(i: int, payload: bytes, inputs: bytes, n: int) -> Record:
    return Record(f"req{i}", "dep", "m", 1 + i % 2, "champion" if i % 3 else None, "served",
                  n, 0.5 * i, payload, inputs, ts=1000.0 + i)  # fmt: skip


def _numeric(i: int, n: int = 1) -> Record:
    x = np.random.default_rng(i).random((n, 2))
    p = np.random.default_rng(i + 100).random(n)
    body = {"columns": NUMERIC, "predictions": (p > 0.5).astype(np.int64),
            "proba": np.stack([1 - p, p], axis=1), "classes": [0, 1]}  # fmt: skip
    return _record(i, encode_payload(body), encode_inputs(NUMERIC, x), n)


def _mixed(i: int, n: int = 2) -> Record:
    inputs = {"age": np.arange(n) + i, "email": [f"p{i}.{j}@x.org" for j in range(n)],
              "customer": [f"c{i}{j}" for j in range(n)]}  # fmt: skip
    body = {"columns": MIXED, "predictions": [f"class{(i + j) % 2}" for j in range(n)]}
    return _record(i, encode_payload(body), encode_inputs(MIXED, inputs), n)


def _fallback(i: int) -> Record:
    body = {"columns": NUMERIC, "predictions": np.asarray([0.5, 1.5], dtype=np.float32),
            "fallback": np.asarray([True, False]), "fallback_reason": ["a missing", None],
            "model_prediction": [None, 1.5]}  # fmt: skip
    return _record(i, encode_payload(body), encode_inputs(NUMERIC, np.ones((2, 2)) * i), 2)


def _counts(i: int) -> Record:
    """Integer inputs: an erased row is stored as zeros, and must read as missing."""
    body = {"columns": NUMERIC, "predictions": np.asarray([1, 0])}
    return _record(i, encode_payload(body), encode_inputs(NUMERIC, np.arange(4).reshape(2, 2)), 2)


def _legacy(i: int) -> Record:
    """A record written before arrays were stored as raw bytes: plain JSON."""
    payload = orjson.dumps({"columns": NUMERIC, "predictions": [i % 2]})
    return _record(i, payload, encode_inputs(NUMERIC, np.full((1, 2), float(i))), 1)


def _expected(frame: pd.DataFrame) -> None:
    """Each row of ``frame`` against its record decoded alone."""
    rows = iter(frame.to_dict("records"))
    for rid, req, ts, _, version, alias, _, latency, n, payload, inputs in shared().records("dep"):
        body = decode_record(payload, inputs)
        features = decode_inputs(body)
        proba = body.get("proba")
        for j in range(n):
            row = next(rows)
            assert row["prediction_id"] == f"{rid}-{j}" and row["request_id"] == req
            assert (row["model_version"], row["latency_ms"]) == (version, latency)
            _same(row["alias"], alias)
            assert row["timestamp"] == pd.Timestamp(ts, unit="s", tz="UTC")
            for column, values in features.items():
                _same(row[column], values[j])
            _same(row["prediction"], list(body["predictions"])[j])
            if proba is not None:
                for k, cls in enumerate(body["classes"]):
                    _same(row[f"proba_{cls}"], proba[j][k])
                _same(row["score"], max(proba[j]))
            for key in ("fallback", "fallback_reason", "model_prediction"):
                if key in body:
                    _same(row[key], list(body[key])[j])
    assert next(rows, None) is None


def _same(got: object, want: object) -> None:
    missing = want is None or (isinstance(want, float) and math.isnan(want))
    if missing:
        assert got is None or pd.isna(got), (got, want)
    else:
        assert got == want, (got, want)


def test_a_log_of_mixed_layouts_reads_as_each_record_alone(home):
    # interleaved layouts, so each group's rows must go back to their places
    records = [_numeric(0), _mixed(1), _numeric(2), _numeric(3, n=3), _fallback(4),
               _legacy(5), _numeric(6), _mixed(7, n=3), _legacy(8), _numeric(9),
               _counts(10), _numeric(11)]  # fmt: skip
    records[-1].payload += b"\0\0"  # stray bytes after the arrays are ignored, as alone
    shared().append(records)
    ids = list(nd.logs("dep")["prediction_id"])
    # erased rows: one of a batch, one of a mixed record, every row of another, and
    # one of an integer matrix
    assert nd.erase([ids[4], ids[2], ids[11], ids[12], ids[13], ids[16]]) == 6
    frame = nd.logs("dep")
    assert len(frame) == sum(r.n_rows for r in records)
    _expected(frame)
    assert frame["a"].isna().sum() == 2 + 5  # two erased, five rows of mixed records
    assert frame["customer"].iloc[1] == "c10"  # a passthrough column rides along


def test_one_layout_gives_typed_columns_in_record_order(home):
    shared().append([_numeric(i, n=1 + i % 3) for i in range(40)])
    frame = nd.logs("dep")
    _expected(frame)
    assert frame["a"].dtype == np.float64 and frame["prediction"].dtype == np.int64
    assert frame["timestamp"].is_monotonic_increasing


def test_float32_predictions_come_back_as_the_record_alone_gives_them(home):
    shared().append([_fallback(i) for i in range(3)])
    frame = nd.logs("dep")
    _expected(frame)
    assert frame["prediction"].dtype == np.float64  # Python floats, as before
    assert frame["fallback"].dtype == bool


def _at(ts: float, record: Record) -> Record:
    record.ts = ts
    return record


def test_a_tail_reads_only_new_records_and_equals_a_full_read(home, monkeypatch):
    from nbdeploy.auditlog import frames

    decoded: list[int] = []
    real = frames.decode_many
    monkeypatch.setattr(
        "nbdeploy.auditlog.queries.decode_many",
        lambda blobs, counts: decoded.append(len(blobs)) or real(blobs, counts),
    )
    shared().append([_at(1000.0 + i, _numeric(i, n=1 + i % 2)) for i in range(30)])
    needed = len(shared().records("dep", since=1005.0, limit=25))
    tail = LogTail("dep")
    for step in range(4):
        since = 1005.0 + 15 * step  # the window slides forward
        got = tail.read(since, 25)
        pd.testing.assert_frame_equal(got, nd.logs("dep", since=since, limit=25))
        new = [_at(1030.0 + 10 * step + i, _numeric(100 + 10 * step + i)) for i in range(10)]
        # one record older than the window is logged late; in the first step a new
        # layout joins (its columns leave with it two steps later)
        mixed = [_at(1031.0, _mixed(200))] if step == 0 else []
        shared().append([*new, *mixed, _at(900.0, _numeric(300 + step))])
    assert "age" in nd.logs("dep", since=1020.0) and "age" not in got
    # the tail's reads (every other call: nd.logs decodes too) decode what the window
    # needs, then only the records logged since
    assert decoded[:8:2] == [needed, 11, 10, 10]


def test_an_erasure_makes_the_next_tail_read_a_full_one(home):
    shared().append([_at(1000.0 + i, _numeric(i)) for i in range(5)])
    tail = LogTail("dep")
    first = tail.read(900.0, None)
    assert not first["a"].isna().any()
    assert nd.erase([first["prediction_id"].iloc[1]]) == 1
    shared().append([_at(1009.0, _numeric(9))])
    again = tail.read(900.0, None)
    assert again["a"].isna().tolist() == [False, True, False, False, False, False]
    pd.testing.assert_frame_equal(again, nd.logs("dep", since=900.0))
