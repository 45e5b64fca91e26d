"""``nd.audit``: one call from a prediction id to everything behind it.

The log row gives the input, the output, the version that answered and the alias it
was called through; the registry gives that version's lineage (training run,
notebook, job run, git commit, data fingerprint) and profile; the alias the version
held *at that time* comes from the promotion history. The input is re-scored with the
recorded version to show that the output reproduces, the prediction is explained
per feature (:mod:`nbdeploy.explain`), and ``verified`` says whether the log's hash
chain checks out around its record: editing or deleting a logged row makes it False.

The window helpers below (:func:`versions`, :func:`traffic`, :func:`drift_table`,
:func:`performance`, :func:`integrity`) are what the packaged ``audit`` notebook
shows for a model over a period.

(The module is not named ``audit``: importing ``nbdeploy.audit`` would replace the
function ``nd.audit`` with the module.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy import auditlog, registry
from nbdeploy.exceptions import AuditLogError
from nbdeploy.models import AuditRecord, _when
from nbdeploy.monitoring.metrics import label_text

if TYPE_CHECKING:
    import pandas as pd


def _alias_then(name: str, version: int, ts: float, called_as: str | None) -> str | None:
    """The alias ``version`` held at ``ts``: as logged when it was served through an
    alias (the server knew it then), else from the promotion history."""
    if called_as:
        return called_as
    holders: dict[str, int | None] = {}
    try:
        events = registry._history_events(name)
    except Exception:
        return called_as
    for event in sorted(events, key=lambda e: e["time"]):
        if event["time"] > ts:
            break
        holders[event["alias"]] = event["to_version"]
    held = sorted(a for a, v in holders.items() if v == version)
    if not held:
        return None
    return "champion" if "champion" in held else held[0]


def audit(prediction_id: str) -> AuditRecord:
    """Lineage, input, output, explanation and integrity of one logged prediction."""
    from nbdeploy import explain
    from nbdeploy.auditlog.chain import erasures
    from nbdeploy.serving.adapter import load

    log = auditlog.shared()
    try:
        record_id, row = auditlog.parse_prediction_id(prediction_id)
    except AuditLogError:
        found = None
    else:
        found = log.record(record_id)
    if found is None:
        raise AuditLogError(
            f"no logged prediction {str(prediction_id)[:60]!r}; ids look like '<record>-<row>' "
            "(see the prediction_id column of nd.logs(name))"
        )
    request_id, ts, name, version, called_as, role, payload, stored = found
    body = auditlog.decode_record(payload, stored)
    if row >= len(body["predictions"]):
        raise AuditLogError(f"record {record_id} has no row {row}")
    erased = erasures(stored).get(row)
    output = body["predictions"][row]
    proba = None
    if body.get("proba") is not None:
        proba = {str(c): float(p) for c, p in zip(body["classes"], body["proba"][row], strict=True)}
    mv = registry.resolve(f"{name}/{version}")
    model = load(mv)
    lineage = dict(model.meta.get("lineage", {}))
    pii = model.meta.get("pii") or {}
    inputs, erasure = None, None
    explanation: dict[str, float] = {}
    method, reproduced = "", None
    if erased is not None:
        when, why = erased
        erasure = (
            f"inputs erased {_when(when)} ({why}); output, model version, lineage and the "
            "row's digest in the hash chain are kept"
        )
        method = "not available: the inputs were erased"
    else:
        inputs = {c: values[row] for c, values in auditlog.decode_inputs(body).items()}
    if inputs is not None and pii:
        method = "not available: " + ", ".join(sorted(pii)) + " logged as the pii policy says"
    elif inputs is not None:
        profile = model.files.json(registry.PROFILE)  # the bytes load verified
        x = {n: inputs[n] for n in model.schema.names}
        explanation, method = explain.explain(model, x, profile)
        # with a confidence policy the logged answer may be the fallback: compare the model's
        reproduced = _reproduces(
            model, x, body.get("model_prediction", body["predictions"])[row], proba
        )
    return AuditRecord(
        prediction_id=str(prediction_id),
        timestamp=float(ts),
        model_name=name,
        model_version=int(version),
        alias=_alias_then(name, int(version), float(ts), called_as),
        run_id=mv.run_id,
        data_fingerprint=str(model.meta.get("fingerprint", mv.fingerprint)),
        training_notebook=lineage.get("notebook") or lineage.get("script"),
        inputs=inputs,
        output=output,
        explanation=explanation,
        verified=log.verify(record_id),
        role=role,
        request_id=request_id,
        proba=proba,
        explanation_method=method,
        reproduced=reproduced,
        job_run_id=lineage.get("job_run_id"),
        git_commit=lineage.get("git_commit"),
        lineage=lineage,
        erased=erased is not None,
        erasure=erasure,
    )


def _reproduces(model: Any, x: dict[str, Any], output: Any, proba: dict[str, float] | None) -> bool:
    columns = model.schema.from_columns({n: [v] for n, v in x.items()})
    out = model.predict(columns)
    same = out.predictions[0] == output or str(out.predictions[0]) == str(output)
    if proba is not None and out.proba is not None:
        same = same and np.allclose(out.proba[0], list(proba.values()), rtol=1e-9, atol=1e-12)
    return bool(same)


# -- a model over a window (the audit notebook) -----------------------------------------


@dataclass(frozen=True)
class Window:
    """A time window ``[start, end]`` in epoch seconds; None means open."""

    start: float | None = None
    end: float | None = None

    @classmethod
    def of(cls, since: Any = None, until: Any = None) -> Window:
        return cls(auditlog.parse_time(since), auditlog.parse_time(until))

    def contains(self, ts: float) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts <= self.end)

    def select(self, frame: pd.DataFrame, column: str) -> pd.DataFrame:
        """The rows of ``frame`` whose ``column`` (datetimes or epoch seconds) is inside."""
        import pandas as pd

        stamps = frame[column]
        if not pd.api.types.is_numeric_dtype(stamps):
            stamps = pd.to_datetime(stamps, utc=True).map(lambda t: t.timestamp())
        keep = [self.contains(float(t)) for t in stamps]
        return frame[keep].reset_index(drop=True)

    def __repr__(self) -> str:
        from nbdeploy.models import _when

        return (
            f"window: {_when(self.start) if self.start else 'the beginning'} to "
            f"{_when(self.end) if self.end else 'now'}"
        )


def versions(name: str) -> pd.DataFrame:
    """Every registered version of ``name`` with its lineage essentials."""
    import pandas as pd

    rows = [
        {
            "version": v.version,
            "registered": pd.Timestamp(v.created, unit="s", tz="UTC"),
            "aliases": ", ".join(v.aliases),
            "test_passed": v.test_passed,
            "data_fingerprint": v.fingerprint,
            "run_id": v.run_id,
            "description": v.description,
        }
        for v in registry.versions(name)
    ]
    return pd.DataFrame(rows)


def _records(name: str, window: Window) -> list[tuple[Any, ...]]:
    return auditlog.shared().window(name, window.start, window.end)


def traffic(name: str, window: Window | None = None) -> pd.DataFrame:
    """Predictions per version, alias and role in the window, with latency."""
    import pandas as pd

    frame = pd.DataFrame(
        [r[:7] for r in _records(name, window or Window())],
        columns=["record_id", "ts", "version", "alias", "role", "n_rows", "latency_ms"],
    )
    columns = [
        "version",
        "alias",
        "role",
        "requests",
        "predictions",
        "p50_latency_ms",
        "first",
        "last",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["alias"] = frame["alias"].fillna("")
    out = frame.groupby(["version", "alias", "role"], as_index=False).agg(
        requests=("record_id", "count"),
        predictions=("n_rows", "sum"),
        p50_latency_ms=("latency_ms", "median"),
        first=("ts", "min"),
        last=("ts", "max"),
    )
    for col in ("first", "last"):
        out[col] = pd.to_datetime(out[col], unit="s", utc=True)
    return out[columns]


def drift_table(name: str, window: Window | None = None) -> pd.DataFrame:
    """Per version and column: drift of the window's inputs against the training profile."""
    import pandas as pd

    try:
        from nbdeploy.monitoring.driftstats import drift
    except ImportError:  # monitoring not installed in this build
        return pd.DataFrame({"note": ["drift monitoring is not available"]})
    logged = _frames(name, window or Window())
    parts = []
    for version, features in logged.items():
        try:
            report = drift(registry.load_profile(f"{name}/{version}"), features)
        except Exception as exc:  # too few rows, or a column the profile lacks
            parts.append(pd.DataFrame({"version": [version], "note": [str(exc)]}))
            continue
        table = report.columns.reset_index()[["column", "method", "statistic", "drifted"]]
        parts.append(table.assign(version=version, rows=len(features)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _frames(name: str, window: Window) -> dict[int, pd.DataFrame]:
    import pandas as pd

    by_version: dict[int, list[pd.DataFrame]] = {}
    for _, _, version, _, role, _, _, payload, inputs in _records(name, window):
        if role == "shadow":
            continue
        body = auditlog.decode_record(payload, inputs)
        by_version.setdefault(version, []).append(pd.DataFrame(auditlog.decode_inputs(body)))
    return {v: pd.concat(f, ignore_index=True) for v, f in by_version.items()}


def performance(name: str, window: Window | None = None) -> pd.DataFrame:
    """Per version: predictions with feedback in the window and how many were right."""
    import pandas as pd

    truth = auditlog.labels(name)
    labels = dict(zip(truth["prediction_id"], truth["label"], strict=True))
    rows: dict[int, list[tuple[Any, Any]]] = {}
    classifier: set[int] = set()
    for rid, _, version, _, role, n, _, payload, _ in _records(name, window or Window()):
        if role == "shadow":
            continue
        body = None
        for i in range(n):
            label = labels.get(f"{rid}-{i}")
            if label is not None:
                if body is None:  # decode only records that have labels
                    body = auditlog.decode_payload(payload)
                    if "classes" in body:  # the model gave class probabilities
                        classifier.add(version)
                rows.setdefault(version, []).append((body["predictions"][i], label))
    out = []
    for version, pairs in sorted(rows.items()):
        predicted, actual = zip(*pairs, strict=True)
        numbers = all(isinstance(a, int | float) and not isinstance(a, bool) for a in actual)
        if version not in classifier and numbers and len(set(actual)) > 20:
            error = np.abs(np.asarray(predicted, float) - np.asarray(actual, float))
            out.append(
                {
                    "version": version,
                    "labelled": len(pairs),
                    "metric": "mae",
                    "value": float(error.mean()),
                }
            )
        else:
            hits = sum(label_text(p) == label_text(a) for p, a in pairs)
            out.append(
                {
                    "version": version,
                    "labelled": len(pairs),
                    "metric": "accuracy",
                    "value": hits / len(pairs),
                }
            )
    return pd.DataFrame(out, columns=["version", "labelled", "metric", "value"])


def integrity(name: str, window: Window | None = None) -> pd.DataFrame:
    """Hash-chain check from the first record of ``name`` in the window to the newest
    record of the log (a break anywhere after it means the window cannot be vouched for)."""
    import pandas as pd

    from nbdeploy.auditlog.verifying import record_breaks

    ids = [r[0] for r in _records(name, window or Window())]
    # one walk from the window's first record to the head checks every link after it
    failed = record_breaks(auditlog.shared(), ids[0]) if ids else []
    return pd.DataFrame(
        [
            {
                "records": len(ids),
                "failed": len(failed),
                "verified": not failed,
                "failed_records": ", ".join(failed[:20]),
            }
        ]
    )
