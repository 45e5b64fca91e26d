"""The numbers an on-call engineer looks at, computed from one :class:`Window`.

- overview: traffic, latency p50/p99, error (rejection) rate, versions answering;
- quality: per feature missing rate, values outside the training range, unseen
  categories and values of the wrong type, plus rejected requests by error code;
- prediction drift: served predictions and top-class scores against the training ones;
- performance over time buckets: accuracy/F1/ROC-AUC (classification) or MAE/RMSE
  (regression) from feedback labels, and for classifiers the *estimated* accuracy,
  the mean top-class probability, which needs no labels but trusts calibration.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.monitoring.data import Window, engine

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.monitoring.driftstats import DriftReport

#: fewer labelled rows than this in a bucket and its metrics are left empty
MIN_LABELS = 10
ESTIMATE_LABEL = "estimated accuracy (mean top-class probability; an estimate, not measured)"


def overview(w: Window) -> dict[str, Any]:
    """Traffic, latency and error rate of the window; the versions that answered."""
    requests = w.served.drop_duplicates("request_id") if len(w.served) else w.served
    latency = requests["latency_ms"].to_numpy(float) if len(requests) else np.array([])
    rejected = int(w.rejections["count"].sum()) if len(w.rejections) else 0
    total = len(requests) + rejected
    versions = (
        w.served.groupby(["model_name", "model_version", "alias"], dropna=False, sort=False).size()
        if len(w.served)
        else None
    )
    serving = [
        {
            "version": int(v),
            "alias": a if isinstance(a, str) else "",
            "role": w.role(f"{m}/{int(v)}", a),
            "rows": int(n),
        }
        for (m, v, a), n in (versions.items() if versions is not None else [])
    ]
    if len(w.shadow):
        for v, n in w.shadow.groupby("model_version").size().items():
            serving.append({"version": int(v), "alias": "", "role": "shadow", "rows": int(n)})
    return {
        "requests": len(requests),
        "predictions": len(w.served),
        "rejected": rejected,
        "error_rate": rejected / total if total else math.nan,
        "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else math.nan,
        "latency_p99_ms": float(np.percentile(latency, 99)) if len(latency) else math.nan,
        "versions": serving,
        "ref": w.ref,
    }


def quality(w: Window) -> pd.DataFrame:
    """One row per feature: missing, out-of-range, unseen and wrongly typed values."""
    import pandas as pd

    from nbdeploy.profiling import OTHER, as_float

    frame = w.feature_frame()
    rows = {}
    for column, prof in (w.profile or {}).get("columns", {}).items():
        values = frame[column] if column in frame else pd.Series([], dtype=object)
        n = len(values)
        missing = values.isna().to_numpy() if n else np.array([], bool)
        present = n - int(missing.sum())
        row: dict[str, Any] = {
            "kind": prof["kind"], "rows": n, "missing_rate": 1 - present / n if n else math.nan,
            "ref_missing_rate": prof["missing_rate"], "out_of_range_rate": math.nan,
            "unseen_rate": math.nan, "unseen_categories": 0, "type_errors": 0,
        }  # fmt: skip
        if prof["kind"] == "numeric" and n:
            numbers = as_float(values) if present else None  # unparseable -> NaN
            if numbers is not None:
                parsed = ~np.isnan(numbers)
                row["type_errors"] = int(present - parsed.sum())
                lo, hi = prof.get("min"), prof.get("max")
                outside = np.zeros(len(numbers), bool)
                if lo is not None:
                    outside |= parsed & ((numbers < lo) | (numbers > hi))
                row["out_of_range_rate"] = float(outside.sum() / present)
        elif n and present:
            known = set(prof["frequencies"]) - {OTHER}
            keys = values[~missing].astype(str)
            unseen = ~keys.isin(known)
            row["unseen_rate"] = float(unseen.mean())
            row["unseen_categories"] = int(keys[unseen].nunique())
        rows[column] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "column"
    return table


def rejections(w: Window) -> pd.DataFrame:
    """Rejected requests of the window by error code and HTTP status."""
    import pandas as pd

    if not len(w.rejections):
        return pd.DataFrame(columns=["code", "status", "count"])
    counts = w.rejections.groupby(["code", "status"])["count"].sum().reset_index()
    return counts.sort_values("count", ascending=False).reset_index(drop=True)


def feature_drift(w: Window) -> DriftReport | None:
    """Drift of the features the version answering now saw, against its training profile."""
    rows = w.current
    if not len(rows) or not w.profile:
        return None
    return engine().drift(w.profile, w.feature_frame(rows))


def prediction_drift(
    w: Window, rows: pd.DataFrame | None = None, profile: dict[str, Any] | None = None
) -> DriftReport | None:
    """Served predictions (and top-class scores) against the training ones of that version."""
    import pandas as pd

    rows = w.current if rows is None else rows
    prof = (w.profile if profile is None else profile) or {}
    columns, current = {}, {}
    if prof.get("predictions") and "prediction" in rows and len(rows):
        columns["prediction"] = prof["predictions"]
        current["prediction"] = rows["prediction"]
    if prof.get("scores") and "score" in rows and len(rows):
        columns["score"] = prof["scores"]
        current["score"] = rows["score"]
    if not columns:
        return None
    reference = {"version": prof["version"], "n_rows": prof["n_rows"], "columns": columns}
    return engine().drift(reference, pd.DataFrame(current))


def version_drift(w: Window) -> pd.DataFrame:
    """The other versions that answered in the window, each against its own profile."""
    import pandas as pd

    from nbdeploy.monitoring.data import reference_profile

    out = []
    for ref, rows in w.others():
        profile = reference_profile(ref)
        features = engine().drift(profile, w.feature_frame(rows, list(profile["columns"])))
        outputs = prediction_drift(w, rows, profile)
        out.append({"version": ref, "rows": len(rows),
                    "drifted features": f"{features.n_drifted} of {len(features.columns)}",
                    "predictions drifted": "yes" if outputs is not None and outputs.drifted
                    else "no"})  # fmt: skip
    return pd.DataFrame(out, columns=["version", "rows", "drifted features", "predictions drifted"])


def _grid(w: Window, n: int) -> tuple[float, float]:
    stamps = w.served["timestamp"]
    start = w.since if w.since is not None else (_seconds(stamps).min() if len(stamps) else w.until)
    return float(start), max((w.until - float(start)) / n, 1e-9)


def _seconds(stamps: pd.Series) -> pd.Series:
    import pandas as pd

    return (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)  # any resolution


def bucket_starts(w: Window, n: int = 8) -> pd.DatetimeIndex:
    """The start times of the window's ``n`` equal buckets."""
    import pandas as pd

    start, width = _grid(w, n)
    return pd.DatetimeIndex(
        pd.to_datetime([start + i * width for i in range(n)], unit="s", utc=True)
    )


def buckets(w: Window, n: int = 8) -> pd.Series:
    """Each served row's time bucket (its start time), ``n`` equal buckets over the window."""
    import pandas as pd

    start, width = _grid(w, n)
    index = np.clip(((_seconds(w.served["timestamp"]) - start) // width).to_numpy(), 0, n - 1)
    stamps = pd.to_datetime(start + index * width, unit="s", utc=True)
    return pd.Series(stamps, index=w.served.index)


def performance(w: Window, n_buckets: int = 8) -> pd.DataFrame:
    """Per time bucket, plus an ``all`` row: metrics from labels, and the classifier estimate."""
    import pandas as pd

    rows = w.served
    if not len(rows):
        return pd.DataFrame()
    truth = dict(zip(w.labels["prediction_id"], w.labels["label"], strict=True))
    label = rows["prediction_id"].map(truth)
    groups = [(b, idx) for b, idx in rows.groupby(buckets(w, n_buckets)).groups.items()]
    groups.append(("all", rows.index))
    out = []
    for bucket, idx in groups:
        part, y = rows.loc[idx], label.loc[idx]
        known = y.notna().to_numpy()
        entry: dict[str, Any] = {
            "bucket": bucket,
            "predictions": len(part),
            "labelled": int(known.sum()),
        }
        if w.is_classifier:
            entry.update(_classification(part[known], y[known]))
            if "score" in part:
                entry["estimated_accuracy"] = float(part["score"].astype(float).mean())
        else:
            entry.update(_regression(part[known], y[known]))
        out.append(entry)
    return pd.DataFrame(out).set_index("bucket")


def _classification(part: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    result = {"accuracy": math.nan, "f1": math.nan, "roc_auc": math.nan}
    if len(part) < MIN_LABELS:
        return result
    from sklearn import metrics

    truth = np.array([label_text(v) for v in y], dtype=object)
    predicted = np.array([label_text(v) for v in part["prediction"]], dtype=object)
    result["accuracy"] = float(metrics.accuracy_score(truth, predicted))
    classes = sorted(c[len("proba_") :] for c in part.columns if c.startswith("proba_"))
    binary = len(classes) == 2
    positive = classes[-1] if binary else None
    seen = set(truth) | set(predicted)
    average = "binary" if binary and positive in seen and len(seen) <= 2 else "macro"
    result["f1"] = float(
        metrics.f1_score(
            truth,
            predicted,
            average=average,
            zero_division=0,
            **({"pos_label": positive} if average == "binary" else {}),
        )
    )
    if len(set(truth)) > 1 and classes and set(truth) <= set(classes):
        proba = part[[f"proba_{c}" for c in classes]].to_numpy(float)
        if binary:
            result["roc_auc"] = float(metrics.roc_auc_score(truth == positive, proba[:, 1]))
        else:
            proba = proba / proba.sum(axis=1, keepdims=True)
            result["roc_auc"] = float(
                metrics.roc_auc_score(truth, proba, multi_class="ovr", labels=classes)
            )
    return result


def label_text(value: Any) -> str:
    """A class label as text, the same whichever type it arrived as: feedback read from
    a CSV says 1.0 where the model predicts 1, and both must mean class "1"."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _regression(part: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    if len(part) < MIN_LABELS:
        return {"mae": math.nan, "rmse": math.nan}
    error = part["prediction"].to_numpy(float) - y.to_numpy(float)
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
