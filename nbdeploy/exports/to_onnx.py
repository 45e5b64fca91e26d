"""A model version as ONNX: conversion, a parity report, and an onnxruntime session that
serves through the same adapter as the native model.

Conversion (``pip install nbdeploy[onnx]``): scikit-learn estimators and pipelines with
skl2onnx, XGBoost and LightGBM (scikit-learn API or native boosters) with onnxmltools'
converters. An all-numeric model without preprocessing takes one float tensor
``input`` of shape (n, d); a pipeline takes one (n, 1) tensor per column, strings for
categorical columns, so its ColumnTransformer finds each column by name. Classifiers
give labels and a plain probability tensor (no ZipMap).

ONNX computes in float32 where the native model uses float64, so exact equality is not
the bar: :func:`parity` compares both on the stored input example and on 21 rows built
from the reference profile's quantiles (0%, 5%, ..., 100% of each numeric column,
categories in turn) and requires identical labels and probabilities within 1e-5. A
row whose native top-two probabilities are closer than that can legitimately flip; the
report counts such rows and says so rather than hiding them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import NbdeployError

if TYPE_CHECKING:
    from pathlib import Path

    from nbdeploy.schema import Schema
    from nbdeploy.serving.adapter import LoadedModel

#: Largest difference allowed between native and ONNX probabilities (or regression values,
#: relative to their scale)
TOLERANCE = 1e-5
#: Opsets every converter used here supports (the tree converters stop at ai.onnx.ml 3)
_OPSET = {"": 17, "ai.onnx.ml": 3}
#: A version's stored conversion (``nd.register(..., onnx=True)``), hashed with its files
STORED = "model.onnx"
_MISSING = "ONNX export needs skl2onnx, onnxmltools and onnxruntime: pip install nbdeploy[onnx]"


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX form answers like the native model."""

    rows: int
    labels_identical: bool
    max_abs_diff: float
    tolerance: float = TOLERANCE
    #: rows whose native top-two probabilities are within ``tolerance`` (float32 may flip them)
    near_ties: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.labels_identical and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _types(schema: Schema, single: bool) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if single:
        return [("input", FloatTensorType([None, len(schema.names)]))]
    return [
        (c.name, StringTensorType([None, 1]) if c.type == "string" else FloatTensorType([None, 1]))
        for c in schema.columns
    ]


def _register_boosters() -> None:
    """Teach skl2onnx the XGBoost / LightGBM scikit-learn estimators (onnxmltools converts)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        update_registered_converter(
            xgboost.XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=options,
        )
        update_registered_converter(
            xgboost.XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
        )
    except ImportError:
        pass
    try:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            lightgbm.LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=options,
        )
        update_registered_converter(
            lightgbm.LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
        )
    except ImportError:
        pass


def convert(model: LoadedModel) -> bytes:
    """The ONNX bytes of a loaded (hence verified) native model."""
    from nbdeploy.boosters import NativeBooster

    if not model.native:
        raise NbdeployError(
            f"{model.name} is a {model.flavor} model; ONNX export covers scikit-learn, "
            "XGBoost and LightGBM models"
        )
    try:
        import onnxmltools
        import skl2onnx
    except ImportError:
        raise NbdeployError(_MISSING) from None
    estimator = _unnamed(model.model)
    single = model.schema.numeric and not hasattr(estimator, "steps")
    types = _types(model.schema, single)
    try:
        if isinstance(estimator, NativeBooster):
            from onnxmltools.convert.common.data_types import FloatTensorType

            types = [("input", FloatTensorType([None, len(model.schema.names)]))]
            convert_native = (
                onnxmltools.convert_xgboost
                if estimator.kind == "xgboost"
                else onnxmltools.convert_lightgbm
            )
            kwargs = {"zipmap": False} if estimator.kind == "lightgbm" else {}
            onx = convert_native(_unnamed(estimator.raw), initial_types=types, **kwargs)
        else:
            _register_boosters()
            options = {"zipmap": False} if model.has_proba else None
            onx = skl2onnx.to_onnx(
                estimator, initial_types=types, options=options, target_opset=_OPSET
            )
    except Exception as exc:
        raise NbdeployError(
            f"{model.name}/{model.version.version} could not be converted to ONNX "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    return bytes(onx.SerializeToString())


def _unnamed(model: Any) -> Any:
    """A copy of an XGBoost model without feature names: its converter wants f0, f1, ..."""
    import copy

    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if type(booster).__module__.split(".")[0] != "xgboost" or not booster.feature_names:
        return model
    model = copy.deepcopy(model)
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    booster.feature_names = None
    return model


class OnnxSession:
    """An onnxruntime session with the prediction methods the server calls."""

    def __init__(
        self, data: bytes, schema: Schema, classes: list[Any] | None, *, indexed: bool = False
    ) -> None:
        """``indexed``: the graph's labels are class indices (a converted native booster)."""
        try:
            import onnxruntime
        except ImportError:
            raise NbdeployError(_MISSING) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            data, options, providers=["CPUExecutionProvider"]
        )
        self.schema, self.indexed = schema, indexed
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.classes_ = None if classes is None else np.asarray(classes, dtype=object)
        if self.classes_ is not None and all(isinstance(c, int | float) for c in classes or []):
            self.classes_ = np.asarray(classes)

    def _feeds(self, X: Any) -> dict[str, np.ndarray]:
        if self.inputs == ["input"]:
            return {"input": np.asarray(X, dtype=np.float32)}
        if isinstance(X, np.ndarray) and X.dtype.kind in "fiub":  # one (n, 1) slice a column
            matrix = X.astype(np.float32)
            return {name: matrix[:, i : i + 1] for i, name in enumerate(self.schema.names)}
        import pandas as pd

        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=self.schema.names)
        feeds = {}
        for col in self.schema.columns:
            values = frame[col.name]
            if col.type == "string":
                feeds[col.name] = values.astype(object).to_numpy().reshape(-1, 1)
            else:
                feeds[col.name] = values.to_numpy(dtype=np.float32).reshape(-1, 1)
        return feeds

    def _run(self, X: Any) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(None, self._feeds(X))]

    def predict_proba(self, X: Any) -> np.ndarray:
        out = self._run(X)
        proba = out[1] if len(out) > 1 else out[0]
        if proba.ndim == 1 or proba.shape[1] == 1:  # one probability: that of class 1
            p = proba.reshape(-1)
            proba = np.column_stack([1 - p, p])
        return proba

    def predict(self, X: Any) -> np.ndarray:
        out = self._run(X)
        if self.classes_ is None:
            return out[0].reshape(-1)
        labels = out[0].reshape(-1)
        if self.indexed:
            labels = self.classes_[labels.astype(np.int64)]
        return labels


def probe_rows(model: LoadedModel, profile: dict[str, Any]) -> dict[str, Any]:
    """The stored example plus 21 rows at the profile's 0%, 5%, ..., 100% quantiles."""
    columns: dict[str, list[Any]] = {n: list(v) for n, v in model.meta["example"].items()}
    for i in range(21):
        for col in model.schema.columns:
            info = profile.get("columns", {}).get(col.name, {})
            quantiles, freqs = info.get("quantiles") or [], info.get("frequencies") or {}
            if quantiles:
                value: Any = quantiles[min(i * 50, len(quantiles) - 1)]
                value = round(value) if col.type == "long" else value
            elif freqs:
                cats = [k for k in freqs if k != "__other__"]
                value = cats[i % len(cats)]
            else:
                value = columns[col.name][i % len(columns[col.name])]
            columns[col.name].append(value)
    return model.schema.from_columns(columns)


def parity(native: LoadedModel, onnx: LoadedModel, profile: dict[str, Any]) -> ParityReport:
    """Compare the ONNX form with the native model on the example and quantile rows."""
    rows = probe_rows(native, profile)
    a, b = native.predict(rows), onnx.predict(rows)
    n = len(a.predictions)
    notes = []
    if a.proba is not None and b.proba is not None:
        diff = float(np.max(np.abs(a.proba.astype(np.float64) - b.proba.astype(np.float64))))
        top2 = np.sort(a.proba, axis=1)[:, -2:]
        ties = int(np.sum(top2[:, 1] - top2[:, 0] <= TOLERANCE))
        same = bool(np.array_equal(np.asarray(a.predictions), np.asarray(b.predictions)))
        notes.append("probabilities computed in float32 by onnxruntime, float64 natively")
        if ties:
            notes.append(f"{ties} rows are near ties, where float32 may pick the other class")
        return ParityReport(n, same, diff, near_ties=ties, notes=notes)
    x = np.asarray(a.predictions, dtype=np.float64)
    y = np.asarray(b.predictions, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(x))))
    diff = float(np.max(np.abs(x - y))) / scale
    notes.append(
        "regression values computed in float32: the difference is relative to "
        f"max(1, largest value) = {scale:g}"
    )
    return ParityReport(n, True, diff, notes=notes)


def write(ref: str, path: Any) -> Any:
    """Convert the verified version ``ref`` to ``path``: a ``.onnx`` file, or a folder
    to write ``NAME-vVERSION.onnx`` into (default: the current one)."""
    from pathlib import Path

    import onnx

    from nbdeploy import registry
    from nbdeploy.serving.adapter import load

    native = load(ref)  # resolves, fetches and verifies the hashes before anything loads
    mv = native.version
    sha = registry.manifest_sha(mv) or ""
    data = convert(native)
    session_model = load_onnx(native, data)
    report = parity(native, session_model, native.files.json(registry.PROFILE))
    proto = onnx.load_from_string(data)
    provenance = {
        "nbdeploy.model": mv.name,
        "nbdeploy.version": str(mv.version),
        "nbdeploy.manifest_sha256": sha,
        "nbdeploy.parity": json.dumps(report.to_dict()),
    }
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    target = Path(path) if path is not None else Path(f"{mv.name}-v{mv.version}.onnx")
    if target.is_dir() or target.suffix.lower() != ".onnx":  # a folder to write into
        target = target / f"{mv.name}-v{mv.version}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(target)
    report_path = target.with_name(target.name + ".parity.json")
    del provenance["nbdeploy.parity"]
    report_path.write_text(
        json.dumps({**provenance, "parity": report.to_dict()}, indent=2), encoding="utf-8"
    )
    if not report.ok:
        import warnings

        warnings.warn(
            f"the ONNX form of {mv.name}/{mv.version} differs from the native model beyond "
            f"{TOLERANCE:g} (see {report_path.name})",
            stacklevel=3,
        )
    return target


def store(path: Path, name: str) -> dict[str, Any]:
    """Convert the model saved in the version folder ``path`` (its metadata and profile
    written, its manifest not yet) and write the conversion there as :data:`STORED`, so
    the manifest hashes it with the rest. What to record in the metadata comes back.

    A conversion that fails the parity check is not stored: a server asked for the ONNX
    runtime must not answer differently from the registered model.
    """
    from nbdeploy import integrity, registry
    from nbdeploy.models import ModelVersion
    from nbdeploy.serving.adapter import LoadedModel

    files = integrity.read_verified(path, None, what=name, trust_unverified=True)
    native = LoadedModel(ModelVersion(name, 0, ""), files)
    data = convert(native)
    report = parity(native, load_onnx(native, data), files.json(registry.PROFILE))
    if not report.ok:
        raise NbdeployError(
            f"the ONNX form of {name} differs from the model beyond {TOLERANCE:g} "
            f"(labels identical: {report.labels_identical}, largest difference "
            f"{report.max_abs_diff:.3g}); register without onnx=True to serve it natively"
        )
    (path / STORED).write_bytes(data)
    return {"file": STORED, "parity": report.to_dict()}


def load_onnx(native: LoadedModel, data: bytes | None = None) -> LoadedModel:
    """The same verified version, answering through onnxruntime."""
    from nbdeploy.serving.adapter import LoadedModel

    return LoadedModel(
        native.version,
        native.files,
        alias=native.alias,
        runtime="onnx",
        onnx_bytes=data if data is not None else convert(native),
    )
