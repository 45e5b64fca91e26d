"""Label-free accuracy estimation: nbdeploy vs NannyML's CBPE, side by side.

    python benchmarks/bench_estimate.py [--quick]

Same reference (labelled held-out data) and the same analysis chunks for both. For
each chunk: the estimated accuracy against the realized one (absolute error) and
whether each method's interval contains the realized value (nbdeploy's are 95%
intervals, NannyML's bands span three sampling errors, so coverage is also given with
every band rescaled to three standard errors); plus the time each took
for all chunks (median of ``--repeats`` runs, each fitting on the reference and
estimating every chunk). Scenarios: NannyML's own bundled datasets (synthetic car loan, US
census employment 2015 vs 2016-18, modified California housing; they load offline),
and synthetic covariate shifts where a logistic model is misspecified (mild mean
shift, a large shift that saturates the score, a variance shift).

NannyML 0.13.1 runs in its own virtual environment (its dependencies clash with the
project's): created on first use under ~/.cache/nbdeploy/nannyml-venv, with
statsmodels (which it imports but does not declare) and usage telemetry off.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: nbdeploy's intervals are 95%: this many standard errors either side
Z = 1.959964
VENV = Path.home() / ".cache" / "nbdeploy" / "nannyml-venv"
PY = VENV / "bin" / "python"
ENV = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}

EXPORT = r"""
import sys, nannyml as nml
out = sys.argv[1]
sets = {
    "car_loan": (nml.load_synthetic_car_loan_dataset, "repaid", "y_pred_proba", "y_pred"),
    "census_employment": (nml.load_us_census_ma_employment_data, "employed",
                          "predicted_probability", "prediction"),
    "california_housing": (nml.load_modified_california_housing_dataset, "clf_target",
                           "y_pred_proba", "y_pred"),
}
for name, (load, target, proba, pred) in sets.items():
    ref, ana, truth = load()
    ana = ana.merge(truth, on="id")
    drop = [c for c in ("id", "timestamp", "year") if c in ref]
    rename = {target: "y_true", proba: "y_pred_proba", pred: "y_pred"}
    ref.drop(columns=drop).rename(columns=rename).to_parquet(f"{out}/{name}.reference.parquet")
    ana.drop(columns=drop).rename(columns=rename).to_parquet(f"{out}/{name}.analysis.parquet")
"""

CBPE = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd, nannyml as nml
ref, ana, chunk = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(int(sys.argv[4])):
    started = time.perf_counter()
    est = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true",
                   metrics=["accuracy"], chunk_size=chunk, problem_type="classification_binary")
    est.fit(ref)
    res = est.estimate(ana.drop(columns=["y_true"])).filter(period="analysis").to_df()
    times.append(time.perf_counter() - started)
acc = res["accuracy"]
print(json.dumps({"value": acc["value"].tolist(), "low": acc["lower_confidence_boundary"].tolist(),
                  "high": acc["upper_confidence_boundary"].tolist(),
                  "seconds": sorted(times)[len(times) // 2]}))
"""


def ensure_venv() -> None:
    if PY.exists():
        return
    print(f"creating {VENV} (NannyML 0.13.1; a few minutes, about 2 GB)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "nannyml==0.13.1", "statsmodels"], check=True, env=ENV)


def synthetic(kind: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A misspecified logistic model on 6 features; the analysis period shifted."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)

    def gen(n: int, shifted: bool) -> pd.DataFrame:
        x = rng.normal(size=(n, 6))
        if shifted and kind == "mild_shift":
            x[:, 0] += 0.5
        if shifted and kind == "large_shift_saturating":
            x[:, 0] += 2.5
            x[:, 1] -= 1.0
        if shifted and kind == "variance_shift":
            x[:, 2] *= 2.0
        logit = 2.0 * x[:, 0] - x[:, 1] + 0.8 * x[:, 2] ** 2 - 1.0 + 0.6 * x[:, 0] * x[:, 3]
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)])
        frame["y_true"] = y
        return frame

    train = gen(10_000, False)
    features = [f"x{i}" for i in range(6)]
    model = LogisticRegression().fit(train[features], train["y_true"])
    out = []
    for frame in (gen(10_000, False), gen(20_000, True)):
        frame["y_pred_proba"] = model.predict_proba(frame[features])[:, 1]
        frame["y_pred"] = (frame["y_pred_proba"] > 0.5).astype(int)
        out.append(frame)
    return out[0], out[1]


def nbdeploy_chunks(ref: pd.DataFrame, ana: pd.DataFrame, chunk: int, weighted: bool) -> dict:
    """Prepared once on the reference, then estimated chunk by chunk, as CBPE's fit and
    estimate; imports happen before the clock starts, as in NannyML's script."""
    import sklearn.isotonic
    import sklearn.linear_model  # noqa: F401

    from nbdeploy.monitoring import estimation

    features = [c for c in ref.columns if c not in ("y_true", "y_pred_proba", "y_pred")]
    started = time.perf_counter()
    encoder = estimation.Encoder({c: ref[c].to_numpy() for c in features}) if weighted else None
    reference = estimation.ClassifierReference(
        ref["y_pred_proba"].to_numpy(float), ref["y_pred"].to_numpy(int),
        ref["y_true"].to_numpy(int),
        encoder.transform({c: ref[c].to_numpy() for c in features}) if encoder else None,
    )  # fmt: skip
    values, lows, highs = [], [], []
    for start in range(0, len(ana), chunk):
        part = ana.iloc[start : start + chunk]
        rows = estimation.fit_rows(len(part))  # all the density ratio reads
        sample = part.iloc[rows]
        cur_x = encoder.transform({c: sample[c].to_numpy() for c in features}) if encoder else None
        est = reference.estimate(
            part["y_pred_proba"].to_numpy(float),
            part["y_pred"].to_numpy(int),
            cur_x,
            x_rows=rows,
            accuracy_only=True,
        )["accuracy"]
        values.append(est.value)
        lows.append(est.ci_low)
        highs.append(est.ci_high)
    return {"value": values, "low": lows, "high": highs, "seconds": time.perf_counter() - started}


def repeated(repeats: int, run: Any, *args: Any) -> dict:
    """The last result of ``run(*args)`` with the median time of ``repeats`` runs."""
    results = [run(*args) for _ in range(repeats)]
    return {**results[-1], "seconds": float(np.median([r["seconds"] for r in results]))}


def nannyml_chunks(ref_path: Path, ana_path: Path, chunk: int, repeats: int) -> dict:
    done = subprocess.run(
        [str(PY), "-c", CBPE, str(ref_path), str(ana_path), str(chunk), str(repeats)],
        capture_output=True, text=True, env=ENV, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def realized(ana: pd.DataFrame, chunk: int) -> np.ndarray:
    return np.array(
        [
            float((ana["y_pred"].iloc[s : s + chunk] == ana["y_true"].iloc[s : s + chunk]).mean())
            for s in range(0, len(ana), chunk)
        ]
    )


def summarize(result: dict, truth: np.ndarray, *, sigmas: float) -> dict:
    """Errors and coverage; ``sigmas``: how many standard errors the method's band spans
    (nbdeploy: a 95% interval, 1.96; NannyML: its sampling error times 3), so coverage
    can also be compared at equal width (each band rescaled to 3 standard errors)."""
    value, low, high = (np.asarray(result[k], float) for k in ("value", "low", "high"))
    scale = 3.0 / sigmas
    wide_low, wide_high = value - (value - low) * scale, value + (high - value) * scale
    return {
        "mae": float(np.mean(np.abs(value - truth))),
        "max_error": float(np.max(np.abs(value - truth))),
        "coverage": float(np.mean((low <= truth) & (truth <= high))),
        "coverage_3se": float(np.mean((wide_low <= truth) & (truth <= wide_high))),
        "seconds": float(result["seconds"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic scenarios only")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs each (median)")
    args = parser.parse_args()
    ensure_venv()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        folder = Path(tmp)
        scenarios: list[tuple[str, int]] = [
            ("mild_shift", 2000), ("large_shift_saturating", 2000), ("variance_shift", 2000),
        ]  # fmt: skip
        for name, _ in scenarios:
            ref, ana = synthetic(name)
            ref.to_parquet(folder / f"{name}.reference.parquet")
            ana.to_parquet(folder / f"{name}.analysis.parquet")
        if not args.quick:
            subprocess.run([str(PY), "-c", EXPORT, tmp], check=True, env=ENV)
            scenarios += [("car_loan", 5000), ("census_employment", 20_000),
                          ("california_housing", 1000)]  # fmt: skip
        for name, chunk in scenarios:
            ref = pd.read_parquet(folder / f"{name}.reference.parquet")
            ana = pd.read_parquet(folder / f"{name}.analysis.parquet")
            ana = ana.iloc[: len(ana) // chunk * chunk].reset_index(drop=True)
            ana_path = folder / f"{name}.analysis.cut.parquet"
            ana.to_parquet(ana_path)
            truth = realized(ana, chunk)
            n = args.repeats
            results = {
                "nbdeploy": repeated(n, nbdeploy_chunks, ref, ana, chunk, True),
                "nbdeploy (no weighting)": repeated(n, nbdeploy_chunks, ref, ana, chunk, False),
                "NannyML CBPE": nannyml_chunks(
                    folder / f"{name}.reference.parquet", ana_path, chunk, n
                ),
            }
            for method, result in results.items():
                sigmas = 3.0 if "NannyML" in method else Z
                row = {"scenario": name, "chunks": len(truth), "chunk_rows": chunk,
                       "method": method, **summarize(result, truth, sigmas=sigmas)}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(
        "| scenario | chunks x rows | method | mean abs. error | max error | coverage "
        "| coverage at ±3 s.e. | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['chunks']} x {r['chunk_rows']} | {r['method']} | "
            f"{r['mae']:.4f} | {r['max_error']:.4f} | {r['coverage']:.0%} | "
            f"{r['coverage_3se']:.0%} | {r['seconds']:.2f} |"
        )


if __name__ == "__main__":
    main()
