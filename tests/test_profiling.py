"""Reference profiles and fingerprints: what the registry stores and audit relies on."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import orjson
import pandas as pd
import pytest

from nbdeploy.exceptions import NbdeployError
from nbdeploy.profiling import build_profile, fingerprint, load_profile


def training_frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[::50] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "age": rng.integers(18, 90, size=n),
            "flag": rng.random(n) < 0.3,
            "city": pd.Series(rng.choice(["Oslo", "Lima", "Pune"], size=n)).where(
                rng.random(n) > 0.05
            ),
            "tier": pd.Categorical(rng.choice(["gold", "silver"], size=n)),
        }
    )


# ---------------------------------------------------------------- fingerprint

FP_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests.test_profiling import training_frame
    from nbdeploy.profiling import fingerprint
    X = training_frame()
    print(fingerprint(X, X["flag"].to_numpy()))
    """
)


def test_fingerprint_is_stable_across_calls_and_processes():
    X = training_frame()
    y = X["flag"].to_numpy()
    first = fingerprint(X, y)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert fingerprint(X.copy(), y.copy()) == first
    assert fingerprint(X.set_index("age"), y) != first  # a column moved into the index
    assert fingerprint(X.reset_index(drop=True).rename(index=lambda i: i + 7), y) == first
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", FP_SCRIPT.format(root=root)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert out.stdout.strip() == first


def test_fingerprint_changes_when_data_changes():
    X = training_frame()
    base = fingerprint(X)
    one_value = X.copy()
    one_value.loc[10, "x"] += 1e-9
    one_label = X.copy()
    one_label.loc[3, "city"] = "Rome"
    renamed = X.rename(columns={"age": "years"})
    retyped = X.astype({"age": "float64"})
    reordered = X.iloc[::-1]
    fps = {base, *(fingerprint(d) for d in (one_value, one_label, renamed, retyped, reordered))}
    assert len(fps) == 6
    assert fingerprint(X, [0, 1] * 1000) != fingerprint(X, [1, 0] * 1000) != base


def test_fingerprint_treats_missing_values_consistently():
    a = pd.DataFrame({"v": [1.0, np.nan], "s": ["a", None]})
    b = pd.DataFrame({"v": [1.0, float("nan")], "s": ["a", np.nan]})
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(pd.DataFrame({"s": ["None"]})) != fingerprint(pd.DataFrame({"s": [None]}))
    assert fingerprint(pd.DataFrame({"s": ["1"]}, dtype=object)) != fingerprint(
        pd.DataFrame({"s": [1]}, dtype=object)
    )


def test_fingerprint_covers_nullable_datetime_and_category_columns():
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "t": pd.to_datetime(["2024-01-01", None, "2024-03-01"]),
            "c": pd.Categorical(["a", "b", None]),
        }
    )
    assert fingerprint(frame) == fingerprint(frame.copy())
    filled = frame.assign(n=frame["n"].fillna(0))
    later = frame.assign(t=frame["t"] + pd.Timedelta(seconds=1))
    assert len({fingerprint(frame), fingerprint(filled), fingerprint(later)}) == 3
    profile = build_profile(frame)
    orjson.dumps(profile)
    assert profile["columns"]["t"]["kind"] == "numeric"  # epoch seconds
    assert profile["columns"]["c"]["frequencies"] == {"a": 0.5, "b": 0.5}


def test_fingerprint_of_numpy_arrays():
    arr = np.arange(12, dtype=np.float64).reshape(4, 3)
    assert fingerprint(arr) == fingerprint(arr.copy(order="F"))
    assert fingerprint(arr) != fingerprint(arr.reshape(3, 4))
    assert fingerprint(arr) != fingerprint(arr.astype(np.float32))
    assert fingerprint(arr, np.array([0, 1, 0, 1])) != fingerprint(arr)


# ---------------------------------------------------------------- profiles


def test_profile_is_small_json_and_round_trips():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.lognormal(size=(50_000, 20)), columns=[f"f{i}" for i in range(20)])
    profile = build_profile(X, predictions=rng.integers(0, 2, 50_000), scores=rng.random(50_000))
    raw = orjson.dumps(profile)
    assert len(raw) < 200_000
    assert load_profile(raw) == profile
    assert load_profile(raw.decode()) == profile
    assert profile["n_rows"] == 50_000 and list(profile["columns"]) == list(X.columns)


def test_numeric_profile_matches_numpy():
    X = training_frame(5000)
    col = build_profile(X)["columns"]["x"]
    values = X["x"].dropna().to_numpy()
    assert col["kind"] == "numeric" and col["count"] == len(values)
    assert col["missing_rate"] == pytest.approx(X["x"].isna().mean())
    expected = np.quantile(values, np.linspace(0, 1, 1001))
    assert len(col["quantiles"]) == 1001
    np.testing.assert_allclose(col["quantiles"], expected, rtol=0, atol=col["quantile_resolution"])
    assert col["min"] == values.min() and col["max"] == values.max()
    assert col["mean"] == pytest.approx(values.mean()) and col["std"] == pytest.approx(values.std())
    assert build_profile(X)["columns"]["flag"]["kind"] == "numeric"


def test_categorical_profile_counts_categories_and_missing():
    X = training_frame(5000)
    profile = build_profile(X)
    city = profile["columns"]["city"]
    assert city["kind"] == "categorical"
    assert city["missing_rate"] == pytest.approx(X["city"].isna().mean())
    expected = X["city"].value_counts(normalize=True)
    assert city["frequencies"] == pytest.approx(expected.to_dict())
    assert list(profile["columns"]["tier"]["frequencies"]) in (
        ["gold", "silver"],
        ["silver", "gold"],
    )


def test_many_categories_keep_the_top_1000_and_an_other_share():
    values = [f"c{i}" for i in range(1500)] + ["c0"] * 100
    freqs = build_profile(pd.DataFrame({"c": values}))["columns"]["c"]["frequencies"]
    assert len(freqs) == 1001 and next(iter(freqs)) == "c0"
    assert freqs["__other__"] == pytest.approx(500 / 1600)
    assert sum(freqs.values()) == pytest.approx(1.0)


def test_infinities_and_empty_columns_do_not_break_the_profile():
    X = pd.DataFrame({"v": [1.0, np.inf, 2.0, -np.inf], "empty": [np.nan] * 4})
    profile = build_profile(X)
    orjson.dumps(profile)  # NaN would be written as null; nothing else may leak
    v, empty = profile["columns"]["v"], profile["columns"]["empty"]
    assert v["has_inf"] and v["inf_rate"] == 0.5 and v["max"] == 2.0
    assert empty["count"] == 0 and empty["missing_rate"] == 1.0 and empty["quantiles"] == []


def test_predictions_and_scores_are_profiled():
    X = training_frame(1000)
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([1, 1, 1], size=1000)
    labels = np.array(["a", "b", "c"])[proba.argmax(axis=1)]
    profile = build_profile(X, predictions=labels, scores=proba)
    assert profile["predictions"]["kind"] == "categorical"
    assert profile["scores"]["min"] >= 1 / 3 and profile["scores"]["max"] <= 1
    assert build_profile(X)["predictions"] is None


def test_load_profile_rejects_other_versions():
    with pytest.raises(NbdeployError, match="version"):
        load_profile({"version": 99, "n_rows": 1, "columns": {}})
    with pytest.raises(NbdeployError, match="JSON"):
        load_profile(b"{not json")
