"""``nd.test``: the checks a version must pass before it may be promoted.

Schema, score against ``min_score``, no regression against the version holding
alias ``vs`` (scored on the same rows), single-row latency, and robustness: a
set of malformed inputs must each be refused cleanly by the same schema
enforcement the server uses, and never reach the model as garbage.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from nbdeploy import registry
from nbdeploy.exceptions import NbdeployError, SchemaError
from nbdeploy.models import ModelVersion, TestReport

#: name -> (scorer, greater is better, needs scores)
METRICS: dict[str, tuple[str, bool, bool]] = {
    "accuracy": ("accuracy_score", True, False),
    "balanced_accuracy": ("balanced_accuracy_score", True, False),
    "f1": ("f1_score", True, False),
    "f1_macro": ("f1_score", True, False),
    "precision": ("precision_score", True, False),
    "recall": ("recall_score", True, False),
    "roc_auc": ("roc_auc_score", True, True),
    "log_loss": ("log_loss", False, True),
    "r2": ("r2_score", True, False),
    "mae": ("mean_absolute_error", False, False),
    "rmse": ("root_mean_squared_error", False, False),
    "mse": ("mean_squared_error", False, False),
}


def _score(metric: str, model: Any, columns: dict[str, Any], y: Any) -> float:
    import sklearn.metrics

    name, _, needs_scores = METRICS[metric]
    fn = getattr(sklearn.metrics, name)
    out = model.predict(columns)
    kwargs = {"average": "macro"} if metric == "f1_macro" else {}
    if needs_scores:
        if out.proba is None:
            raise NbdeployError(
                f"metric {metric!r} needs class probabilities, which this "
                "model does not give; choose e.g. 'accuracy'"
            )
        proba = out.proba[:, 1] if out.proba.shape[1] == 2 and metric == "roc_auc" else out.proba
        extra = {"multi_class": "ovr"} if metric == "roc_auc" and proba.ndim == 2 else {}
        return float(
            fn(y, proba, **extra, **({"labels": model.classes} if metric == "log_loss" else {}))
        )
    if metric in ("f1", "precision", "recall") and len(np.unique(np.asarray(y))) > 2:
        kwargs = {"average": "macro"}
    return float(fn(y, out.predictions, **kwargs))


def _keep_holdout(mv: ModelVersion, model: Any, columns: dict[str, Any], y: np.ndarray) -> None:
    """Store the test rows, labels and outputs with the version: ``nd.estimate`` calibrates
    its label-free estimates on them (at most 50,000 rows)."""
    import pandas as pd

    out = model.predict(columns)
    frame = pd.DataFrame({name: columns[name] for name in model.schema.names})
    frame["__label__"] = [str(v) for v in y] if y.dtype.kind not in "fiu" else y
    frame["__prediction__"] = (
        [str(v) for v in out.predictions] if out.predictions.dtype.kind not in "fiub"
        else out.predictions
    )  # fmt: skip
    if out.proba is not None and model.classes is not None:
        for j, cls in enumerate(model.classes):
            frame[f"__proba_{cls}__"] = out.proba[:, j]
    if len(frame) > 50_000:
        frame = frame.sample(50_000, random_state=0)
    try:
        registry.store_holdout(mv, frame)
    except Exception as exc:  # the gate's verdict stands; only estimates lose their data
        import warnings

        warnings.warn(f"nd.test could not keep the held-out data: {exc}", stacklevel=3)


def _sensitive(sensitive: Any, X: Any, schema: Any) -> tuple[Any, Any]:
    """The group of each test row, and ``X`` without that column unless the model takes it."""
    if sensitive is None:
        return None, X
    if isinstance(sensitive, str):
        if not hasattr(X, "columns") or sensitive not in X.columns:
            raise NbdeployError(
                f"sensitive={sensitive!r} is not a column of X; add it to X or pass the "
                "group values themselves (sensitive=<Series>)"
            )
        groups = X[sensitive].to_numpy()
        if sensitive not in schema.names and sensitive not in schema.passthrough:
            X = X.drop(columns=[sensitive])
        return groups, X
    return np.asarray(sensitive, dtype=object), X


def _bad_inputs(columns: dict[str, Any], schema: Any) -> list[tuple[str, dict[str, Any]]]:
    """Malformed variants of one good row, each of which must be refused."""
    row = {name: [values[0]] for name, values in columns.items()}
    first = schema.columns[0]
    cases = [
        ("missing column", {k: v for k, v in row.items() if k != first.name}),
        ("extra column", {**row, "__unexpected__": [1.0]}),
        ("empty batch", {k: [] for k in row}),
        ("wrong type", {**row, first.name: ["text"] if first.type != "string" else [3.5]}),
    ]
    strict = next((c for c in schema.columns if not c.nullable), None)
    if strict is not None:
        cases.append(("missing value", {**row, strict.name: [None]}))
    finite = next((c for c in schema.columns if c.type == "double" and not c.allow_inf), None)
    if finite is not None:
        cases.append(("infinite value", {**row, finite.name: [float("inf")]}))
    return cases


def test(
    ref: str | ModelVersion,
    X: Any,
    y: Any,
    *,
    metric: str | None = None,
    min_score: float | None = None,
    vs: str | None = None,
    max_latency_ms: float | None = None,
    sensitive: Any = None,
    max_disparity: float | None = None,
) -> TestReport:
    """Run the pre-deploy gate on ``ref`` and record the result on the version.

    ``sensitive``: a column of ``X`` (by name) or a Series/array of group values; adds
    a ``disparity`` check (fairlearn's demographic parity difference for binary
    classifiers) bounded by ``max_disparity`` when given.
    """
    from nbdeploy.serving.adapter import load

    mv = registry.resolve(ref)
    model = load(mv)
    checks: list[dict[str, Any]] = []

    def check(name: str, value: Any, threshold: Any, passed: bool) -> None:
        checks.append(
            {"check": name, "value": value, "threshold": threshold, "passed": bool(passed)}
        )

    metric = metric or ("r2" if model.meta.get("task") == "regression" else "accuracy")
    if metric not in METRICS:
        raise NbdeployError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    greater = METRICS[metric][1]
    groups, X = _sensitive(sensitive, X, model.schema)
    if max_disparity is not None and groups is None:
        raise NbdeployError(
            "max_disparity needs the groups: pass sensitive='column' (a column of X) "
            "or sensitive=<Series of group values>"
        )
    try:
        columns = model.schema.from_frame(X)
        check("schema", "matches", "the signature", True)
    except SchemaError as exc:
        check("schema", str(exc), "the signature", False)
        return _finish(mv, checks, metric, None)
    y = np.asarray(y)
    if len(y) != len(next(iter(columns.values()))):
        raise NbdeployError(f"X has {len(next(iter(columns.values())))} rows but y has {len(y)}")

    score = _score(metric, model, columns, y)
    if min_score is None:
        check(metric, round(score, 6), "none", True)
    else:
        ok = score >= min_score if greater else score <= min_score
        check(metric, round(score, 6), f"{'>=' if greater else '<='} {min_score}", ok)

    _keep_holdout(mv, model, columns, y)

    if groups is not None:
        from nbdeploy.monitoring.fairness import disparity_of

        if len(groups) != len(y):
            raise NbdeployError(f"sensitive has {len(groups)} values but y has {len(y)}")
        value, what = disparity_of(
            model.predict(columns).predictions,
            groups,
            y,
            classes=list(model.classes or []),
            task=str(model.meta.get("task")),
        )
        bound = "none" if max_disparity is None else f"<= {max_disparity} ({what})"
        ok = max_disparity is None or (value == value and value <= max_disparity)
        check("disparity", round(value, 6), bound, ok)

    if vs is not None:
        holder = registry.alias_holder(mv.name, vs)
        if holder is None:
            check(f"vs @{vs}", "no holder yet", "no regression", True)
        elif holder == mv.version:
            check(f"vs @{vs}", f"is version {holder} itself", "no regression", True)
        else:
            theirs = _score(metric, load(f"{mv.name}/{holder}"), columns, y)
            ok = score >= theirs if greater else score <= theirs
            check(  # both scores: this version's and the holder's
                f"vs @{vs} (v{holder})",
                f"{score:.4g} vs {theirs:.4g}",
                f"{'>=' if greater else '<='} {theirs:.4g}",
                ok,
            )

    one = {name: values[:1] for name, values in columns.items()}
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        model.predict(one)
        timings.append((time.perf_counter() - start) * 1000.0)
    p50 = float(np.median(timings))
    check(
        "latency p50 ms (1 row)",
        round(p50, 3),
        "none" if max_latency_ms is None else f"<= {max_latency_ms}",
        max_latency_ms is None or p50 <= max_latency_ms,
    )

    refused, total = 0, 0
    for _, bad in _bad_inputs(columns, model.schema):
        total += 1
        try:
            model.schema.from_columns(bad)
        except SchemaError:
            refused += 1
    check("bad inputs refused", f"{refused}/{total}", f"{total}/{total}", refused == total)
    text = next((c.name for c in model.schema.columns if c.type == "string"), None)
    if text is not None:  # production will bring categories training never saw
        unseen = {**one, text: np.array(["__nbdeploy_unseen__"], dtype=object)}
        try:
            model.predict(unseen)
            check(f"unseen category in {text!r}", "predicts", "an answer", True)
        except Exception as exc:
            check(
                f"unseen category in {text!r}",
                f"fails ({type(exc).__name__})",
                "an answer (e.g. OneHotEncoder(handle_unknown='ignore'))",
                False,
            )
    return _finish(mv, checks, metric, score)


test.__test__ = False  # type: ignore[attr-defined]


def _finish(
    mv: ModelVersion, checks: list[dict[str, Any]], metric: str, score: float | None
) -> TestReport:
    import pandas as pd

    frame = pd.DataFrame(checks, columns=["check", "value", "threshold", "passed"])
    passed = bool(frame["passed"].all())
    registry.record_test(
        mv, passed, {"metric": metric, "score": score, "time": time.time(), "checks": checks}
    )
    return TestReport(
        name=mv.name, version=mv.version, passed=passed, checks=frame, metric=metric, score=score
    )
