"""Reference profiles and data fingerprints, built once at registration.

A *profile* is the compact summary of the training data that monitoring compares live
traffic against, so training data never has to be reloaded. It is plain JSON
(``orjson.dumps(profile)`` works) of this shape::

    {"version": 1, "n_rows": int,
     "columns": {name: column_profile, ...},
     "predictions": column_profile | None,   # the model's training predictions
     "scores": column_profile | None}        # top-class probability (classifiers)

    numeric column_profile (int, float, bool, datetime as epoch seconds):
      kind="numeric", dtype, count, missing_rate, has_inf, inf_rate, min, max, mean, std,
      quantiles (1001 values at linspace(0, 1, 1001), numpy's "linear" method, over the
      finite values), quantile_resolution (the rounding step of the quantiles)
    categorical column_profile (object, string, category):
      kind="categorical", dtype, count, missing_rate, n_categories,
      frequencies {str(category): share of non-missing rows} for the 1000 most frequent
      categories, plus "__other__" for the share of the rest when there are more

Quantiles are rounded to ``quantile_resolution`` (about 1e-4 of the interquartile
range) so that 20 numeric columns fit in well under 200 KB; that moves a KS statistic
by far less than its 1e-3 resolution. Missing values (None, NaN, NaT, pd.NA) are
counted in ``missing_rate`` and left out of every statistic; infinities are counted
in ``inf_rate`` and left out of the quantiles and moments.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from .exceptions import NbdeployError

__all__ = ["N_QUANTILES", "build_profile", "fingerprint", "load_profile"]

PROFILE_VERSION = 1
N_QUANTILES = 1001
MAX_CATEGORIES = 1000
OTHER = "__other__"
_PROBS = np.linspace(0.0, 1.0, N_QUANTILES)


# ---------------------------------------------------------------- fingerprint


def fingerprint(X: Any, y: Any = None) -> str:
    """Return ``"sha256:<hex>"`` of the training data, for lineage and audit.

    Equal data gives an equal fingerprint in any process: column names, dtypes,
    values and row order count; the index does not (resetting it is not a change).
    Numeric buffers are hashed directly (NaN canonicalised, -0.0 == 0.0); other
    columns through a length-prefixed UTF-8 encoding that is stable across pandas
    versions. ``y`` may be a Series, array, list or None.
    """
    h = hashlib.sha256(b"nbdeploy-fingerprint-v1")
    _hash_table(h, X, "X")
    if y is None:
        _frame(h, b"y:none")
    elif isinstance(y, pd.DataFrame):
        _hash_table(h, y, "y")
    else:
        series = y if isinstance(y, pd.Series) else pd.Series(np.asarray(y))
        _hash_series(h, series, "y")
    return "sha256:" + h.hexdigest()


def _frame(h: Any, payload: bytes | memoryview) -> None:
    # Length-prefix every part so that no two different inputs share a byte stream.
    h.update(struct.pack("<Q", len(payload)))
    h.update(payload)


def _hash_table(h: Any, X: Any, role: str) -> None:
    if isinstance(X, pd.DataFrame):
        _frame(h, f"{role}:frame:{X.shape[0]}x{X.shape[1]}".encode())
        for i, name in enumerate(X.columns):
            _hash_series(h, X.iloc[:, i], repr(name))
        return
    if isinstance(X, pd.Series):
        _hash_series(h, X, role)
        return
    arr = np.asarray(X)
    _frame(h, f"{role}:array:{arr.shape}:{arr.dtype.str}".encode())
    if arr.dtype.kind in "biufcmM":
        _frame(h, _canonical_bytes(arr))
    else:
        flat = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1, 1)
        for j in range(flat.shape[1]):
            _frame(h, _object_bytes(flat[:, j]))


def _hash_series(h: Any, s: pd.Series, name: str) -> None:
    _frame(h, f"col:{name}:{s.dtype}:{len(s)}".encode())
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        _frame(h, _canonical_bytes(s.to_numpy()))
    elif pd.api.types.is_numeric_dtype(dtype) and hasattr(dtype, "numpy_dtype"):
        # Nullable extension arrays (Int64, Float64, boolean): mask + values.
        mask = s.isna().to_numpy()
        _frame(h, np.packbits(mask).tobytes())
        _frame(h, _canonical_bytes(s.to_numpy(dtype=dtype.numpy_dtype, na_value=0)))
    else:
        _frame(h, _object_bytes(s.to_numpy(dtype=object, na_value=None)))


def _canonical_bytes(arr: np.ndarray) -> memoryview:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind in "fc":
        arr = arr + 0.0  # -0.0 -> 0.0
        nan = np.isnan(arr)
        if nan.any():
            arr[nan] = np.nan  # a single NaN bit pattern
    if arr.dtype.kind in "mM":
        arr = arr.view(np.int64)  # the unit is already in the hashed dtype string
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.data.cast("B")


def _object_bytes(values: Iterable[Any]) -> bytes:
    # Tag each value: 0 missing, 1 str, 2 anything else (by its type and repr), so that
    # "1" and 1, or None and "None", hash differently.
    parts: list[bytes] = []
    for v in values:
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
            parts.append(b"\x00")
            continue
        if isinstance(v, str):
            tag, data = b"\x01", v.encode("utf-8", "surrogatepass")
        else:
            tag, data = b"\x02", f"{type(v).__name__}:{v!r}".encode("utf-8", "surrogatepass")
        parts.append(tag + struct.pack("<I", len(data)) + data)
    return b"".join(parts)


# ---------------------------------------------------------------- profiles


def build_profile(X: pd.DataFrame, predictions: Any = None, scores: Any = None) -> dict:
    """Summarise training data (and the model's training outputs) for monitoring.

    ``predictions``: the model's predictions on ``X`` (profiled as numeric or
    categorical by dtype: pass strings or a ``category`` Series for class labels).
    ``scores``: ``predict_proba`` output (n, k) or already the top-class probability.
    1M x 20 numeric columns take a fraction of a second (one sort per column, in
    threads: numpy releases the GIL while sorting).
    """
    if not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(np.asarray(X))
    names = [str(c) for c in X.columns]
    if len(set(names)) != len(names):
        raise NbdeployError("Column names must be unique to build a profile; rename them.")
    series = [X.iloc[:, i] for i in range(X.shape[1])]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        columns = dict(zip(names, pool.map(column_profile, series), strict=True))
    pred = None
    if predictions is not None:
        if not isinstance(predictions, pd.Series):
            arr = np.asarray(predictions)
            predictions = pd.Series(arr.reshape(len(arr), -1)[:, 0] if arr.ndim > 1 else arr)
        pred = column_profile(predictions)
    score = None
    if scores is not None:
        arr = np.asarray(scores, dtype=np.float64)
        score = column_profile(pd.Series(arr.max(axis=1) if arr.ndim == 2 else arr))
    return {
        "version": PROFILE_VERSION,
        "n_rows": len(X),
        "columns": columns,
        "predictions": pred,
        "scores": score,
    }


def load_profile(data: bytes | str | dict) -> dict:
    """Read a profile back (JSON bytes/str or an already-parsed dict) and check it."""
    if isinstance(data, bytes | str):
        import orjson

        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise NbdeployError(f"Reference profile is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict) or data.get("version") != PROFILE_VERSION:
        found = data.get("version") if isinstance(data, dict) else type(data).__name__
        raise NbdeployError(
            f"Reference profile version {found!r} is not supported (expected "
            f"{PROFILE_VERSION}); re-register the model to rebuild its profile."
        )
    if not isinstance(data.get("columns"), dict) or "n_rows" not in data:
        raise NbdeployError("Reference profile lacks 'columns' or 'n_rows'; re-register.")
    return data


def is_numeric(dtype: Any) -> bool:
    """Numbers, booleans and datetimes are profiled as numeric; the rest as categories."""
    return bool(
        pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
    )


def as_float(s: pd.Series) -> np.ndarray:
    """A float64 view or copy of a numeric-like column, missing as NaN.

    Datetimes become epoch seconds; strings that do not parse as numbers count as
    missing (they show up in the missing rate rather than crash monitoring).
    """
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        return s.to_numpy(dtype=np.float64, copy=False)
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        if isinstance(dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_convert(None)
        vals = s.to_numpy()  # any resolution (pandas 3 keeps s/ms/us/ns); NaT -> NaN
        if vals.dtype.kind == "M":
            vals = vals - np.datetime64(0, "s")
        return np.asarray(vals / np.timedelta64(1, "s"), dtype=np.float64)
    if pd.api.types.is_numeric_dtype(dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def sorted_finite(values: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Sort the finite values once; return them with the NaN and infinity counts."""
    finite = np.isfinite(values)
    if finite.all():
        return np.sort(values), 0, 0
    n_nan = int(np.isnan(values).sum())
    return np.sort(values[finite]), n_nan, int(len(values) - finite.sum() - n_nan)


def quantiles_of_sorted(s: np.ndarray) -> np.ndarray:
    """numpy's default ("linear") quantiles at linspace(0, 1, 1001) of a sorted array."""
    pos = _PROBS * (len(s) - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def column_profile(s: pd.Series) -> dict:
    """Profile one column (numeric or categorical by its dtype)."""
    n = len(s)
    if is_numeric(s.dtype):
        s_sorted, n_nan, n_inf = sorted_finite(as_float(s))
        prof: dict[str, Any] = {
            "kind": "numeric",
            "dtype": str(s.dtype),
            "count": int(n - n_nan),
            "missing_rate": n_nan / n if n else 0.0,
            "has_inf": n_inf > 0,
            "inf_rate": n_inf / n if n else 0.0,
            "min": None, "max": None, "mean": None, "std": None,
            "quantiles": [], "quantile_resolution": None,
        }  # fmt: skip
        if len(s_sorted):
            q = quantiles_of_sorted(s_sorted)
            spread = (q[750] - q[250]) or (q[-1] - q[0]) or abs(q[-1]) or 1.0
            decimals = 4 - math.floor(math.log10(spread))
            prof.update(
                min=float(s_sorted[0]),
                max=float(s_sorted[-1]),
                mean=_num(s_sorted.mean()),
                std=_num(s_sorted.std()),
                quantiles=np.round(q, decimals).tolist(),
                quantile_resolution=10.0**-decimals,
            )
        return prof
    missing = s.isna().to_numpy()
    counts = category_counts(s)
    total = int(counts.sum())
    top = counts.iloc[:MAX_CATEGORIES]
    freqs = {str(k): int(v) / total for k, v in top.items()}
    if len(counts) > MAX_CATEGORIES:
        freqs[OTHER] = int(counts.iloc[MAX_CATEGORIES:].sum()) / total
    return {
        "kind": "categorical",
        "dtype": str(s.dtype),
        "count": total,
        "missing_rate": int(missing.sum()) / n if n else 0.0,
        "n_categories": len(counts),
        "frequencies": freqs,
    }


def category_counts(s: pd.Series) -> pd.Series:
    """Counts of non-missing values keyed by ``str(value)``, most frequent first.

    Keys are strings because JSON keys are, and because served requests carry
    categories as strings; ties are ordered by key so profiles are deterministic.
    """
    counts = s.value_counts(dropna=True, sort=False)
    counts = counts[counts.to_numpy() > 0]  # unused categories of a category dtype
    keys = np.array([str(k) for k in counts.index], dtype=object)
    counts = pd.Series(counts.to_numpy(dtype=np.int64), index=keys)
    if len(set(keys)) != len(keys):  # e.g. 1 and "1" in one object column
        counts = counts.groupby(level=0, sort=False).sum()
    order = np.lexsort((counts.index.to_numpy(dtype=object), -counts.to_numpy()))
    return counts.iloc[order]


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
