"""``nd.compare``: champion and challengers side by side, and ``nd.retire``.

Shadows score exactly the rows the champion answered, so their comparison is
paired: agreement on identical rows, and a confidence interval on the
difference in per-row correctness (or absolute error), which is far tighter
than comparing two separate scores. Canary challengers answer other rows, so
they are compared as two samples. The verdict says "better" or "worse" only
when the 95% interval excludes zero, and "not yet known" until then.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy import auditlog
from nbdeploy.exceptions import NbdeployError

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.models import Comparison

#: fewer labelled rows than this and no verdict is given
MIN_LABELS = 30
_Z = 1.959963984540054


def _row_keys(frame: pd.DataFrame) -> pd.Series:
    return frame["request_id"] + ":" + frame["prediction_id"].str.rsplit("-", n=1).str[-1]


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    mean = float(values.mean())
    half = _Z * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return mean, mean - half, mean + half


def compare(name: str, *, since: Any = None) -> Comparison:
    """Compare the models that answered or shadowed deployment ``name``."""
    import pandas as pd

    from nbdeploy.models import Comparison
    from nbdeploy.monitoring.data import champion as holder
    from nbdeploy.monitoring.data import role

    logs = auditlog.logs(name, since=since)
    logs = logs[logs["role"].isin(["served", "shadow"])]
    if logs.empty:
        from nbdeploy.hints import unknown_name

        raise unknown_name(name) or NbdeployError(
            f"no served predictions logged for {name!r} yet; send traffic first"
        )
    logs = logs.assign(row=_row_keys(logs))
    served = logs[logs["role"] == "served"]
    # the alias's holder now, from the registry: after a rollback the newest rows
    # may still be the replaced version's
    champion_ref, champion_alias = holder(name, served)
    if champion_ref is None:  # only shadows logged: the version they shadowed is gone
        champion_ref = f"{logs.iloc[-1]['model_name']}/{int(logs.iloc[-1]['model_version'])}"
    champion_version = int(champion_ref.rsplit("/", 1)[1])
    refs = logs["model_name"] + "/" + logs["model_version"].astype(str)
    kinds = [
        "shadow" if r == "shadow" else role(ref, a, champion_ref, champion_alias)
        for r, ref, a in zip(logs["role"], refs, logs["alias"], strict=True)
    ]
    logs = logs.assign(kind=kinds)
    served = logs[logs["role"] == "served"]
    champion = served[served["kind"] == "champion"]
    truth = auditlog.labels(name)
    label_of = dict(zip(truth["prediction_id"], truth["label"], strict=True))
    labels_by_row = {
        row: label_of[pid]
        for row, pid in zip(served["row"], served["prediction_id"], strict=True)
        if pid in label_of
    }
    regression = (
        pd.api.types.is_float_dtype(champion["prediction"])
        and champion["prediction"].nunique() > 20
    )

    def loss(predictions: pd.Series, rows: pd.Series) -> np.ndarray:
        truth_values = rows.map(labels_by_row)
        known = truth_values.notna().to_numpy()
        if regression:
            return np.abs(predictions.to_numpy(float)[known] - truth_values[known].to_numpy(float))
        return (predictions.to_numpy()[known] == truth_values[known].to_numpy()).astype(float)

    metric = "mae" if regression else "accuracy"
    rows, verdicts = [], {}
    champ_by_row = champion.set_index("row")["prediction"]
    groups = logs.groupby(["kind", "model_version"], sort=False)
    for (kind, version), group in groups:
        is_champion = kind == "champion"
        scores = loss(group["prediction"], group["row"])
        mean, low, high = _interval(scores) if len(scores) else (math.nan,) * 3
        entry = {
            "model_version": int(version),
            "role": kind,
            "alias": group["alias"].iloc[-1],
            "rows": len(group),
            "agreement": math.nan,
            "latency_ms_p50": float(group["latency_ms"].median()),
            "fallback_rate": float(group["fallback"].fillna(False).mean())
            if "fallback" in group
            else math.nan,
            "labelled": len(scores),
            metric: mean,
            "ci_low": low,
            "ci_high": high,
            "verdict": "reference" if is_champion else "",
        }
        if not is_champion:
            paired = group.set_index("row")["prediction"]
            common = paired.index.intersection(champ_by_row.index)
            if len(common) and kind == "shadow":
                entry["agreement"] = float((paired[common] == champ_by_row[common]).mean())
            entry["verdict"] = _verdict(
                kind,
                metric,
                scores,
                loss(champion["prediction"], champion["row"]),
                paired,
                champ_by_row,
                loss,
            )
            verdicts[int(version)] = entry["verdict"]
        rows.append(entry)
    table = pd.DataFrame(rows)
    distributions = _distributions(logs, regression)
    return Comparison(
        name=name,
        champion_version=champion_version,
        champion_alias=champion_alias,
        metric=metric,
        table=table,
        distributions=distributions,
        verdicts=verdicts,
    )


def _verdict(
    kind: str,
    metric: str,
    scores: np.ndarray,
    champion_scores: np.ndarray,
    paired: pd.Series,
    champ_by_row: pd.Series,
    loss: Any,
) -> str:
    better_is_higher = metric == "accuracy"
    if kind == "shadow":
        common = paired.index.intersection(champ_by_row.index)
        mine = loss(paired[common], common.to_series())
        theirs = loss(champ_by_row[common], common.to_series())
        if len(mine) < MIN_LABELS:
            return f"not yet known ({len(mine)} labelled rows, need {MIN_LABELS})"
        _, low, high = _interval(mine - theirs)
    else:
        if min(len(scores), len(champion_scores)) < MIN_LABELS:
            return f"not yet known (need {MIN_LABELS} labelled rows per model)"
        diff = scores.mean() - champion_scores.mean()
        se = math.sqrt(
            scores.var(ddof=1) / len(scores) + champion_scores.var(ddof=1) / len(champion_scores)
        )
        low, high = diff - _Z * se, diff + _Z * se
    if not better_is_higher:
        low, high = -high, -low
    if low > 0:
        return "challenger is better"
    if high < 0:
        return "challenger is worse"
    return "not yet known (difference within noise)"


def _distributions(logs: pd.DataFrame, regression: bool) -> pd.DataFrame:
    import pandas as pd

    label = (
        logs["role"].where(logs["role"] == "shadow", "served")
        + " v"
        + logs["model_version"].astype(str)
    )
    if regression:
        bins = pd.qcut(logs["prediction"].astype(float), q=10, duplicates="drop")
        return pd.crosstab(bins, label, normalize="columns")
    return pd.crosstab(logs["prediction"].astype(str), label, normalize="columns")


def retire(ref: str, *, token: str | None = None) -> list[str]:
    """Take challenger ``ref`` out of every running deployment; returns their names."""
    from nbdeploy.serving import client
    from nbdeploy.serving.process import deployments, token_for

    removed = []
    for row in deployments().itertuples(index=False):
        if row.status != "running":
            continue
        try:
            client.call(row.url + "/admin/retire", {"ref": ref}, token or token_for(str(row.name)))
        except NbdeployError as exc:
            if "404" in str(exc):
                continue
            raise
        removed.append(str(row.name))
    if not removed:
        raise NbdeployError(
            f"{ref} is not a shadow or canary of any running deployment (see nd.deployments())"
        )
    return removed
