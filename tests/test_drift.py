"""Drift engine: right verdicts, no false alarms, statistics that agree with scipy."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring.driftstats import DriftReport, drift
from nbdeploy.profiling import build_profile


def sample(n: int, seed: int, *, shift: float = 0.0, cities=("Oslo", "Lima", "Pune")):
    """Training-like data: continuous, skewed, integer, boolean, categorical, missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0 + shift, 2.0, size=n)
    x[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "x": x,
            "income": rng.lognormal(10, 0.8, size=n),
            "age": rng.integers(18, 90, size=n),
            "visits": rng.poisson(2.0, size=n),
            "member": rng.random(n) < 0.3,
            "city": pd.Series(rng.choice(cities, size=n, p=[0.5, 0.3, 0.2])).where(
                rng.random(n) > 0.02
            ),
        }
    )


def flagged(report: DriftReport) -> list[str]:
    return list(report.columns.index[report.columns["drifted"]])


def both(reference: pd.DataFrame, current: pd.DataFrame, **kw) -> tuple[DriftReport, ...]:
    """The same comparison from the DataFrame and from its stored (JSON) profile."""
    profile = orjson.loads(orjson.dumps(build_profile(reference)))
    return drift(reference, current, **kw), drift(profile, current, **kw)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_current", [200, 5000])
def test_no_false_alarm_on_training_distribution(seed, n_current):
    reference = sample(20_000, seed)
    current = sample(n_current, seed + 100)
    for report in both(reference, current):
        assert flagged(report) == [], report.columns[["statistic", "threshold"]]
        assert not report.drifted


@pytest.mark.parametrize("seed", range(3))
def test_shift_in_one_column_flags_exactly_that_column(seed):
    reference = sample(20_000, seed)
    current = sample(5000, seed + 100, shift=1.0)  # half a standard deviation
    for report in both(reference, current):
        assert flagged(report) == ["x"]
        assert not report.drifted and report.n_drifted == 1
        assert report.columns.loc["x", "wasserstein"] == pytest.approx(0.5, abs=0.05)


def test_scale_change_and_categorical_drift_are_flagged():
    reference = sample(20_000, 0)
    current = sample(5000, 1, cities=("Pune", "Lima", "Rome"))  # shares move, one new city
    current["income"] *= 1.5
    for report in both(reference, current):
        assert sorted(flagged(report)) == ["city", "income"]
        city = report.columns.loc["city"]
        assert city["method"] == "jensen_shannon" and city["unseen_categories"] == 1
        assert city["psi"] > 0.2


def test_dataset_verdict_follows_drift_share():
    reference = sample(10_000, 0)
    current = sample(3000, 1, shift=2.0)
    current["income"] *= 2
    current["age"] = current["age"] + 20
    report = drift(reference, current)
    assert sorted(flagged(report)) == ["age", "income", "x"]
    assert report.drifted  # 3 of 6 columns reach the default 0.5
    assert not drift(reference, current, drift_share=0.6).drifted


def test_ks_and_wasserstein_agree_with_scipy():
    rng = np.random.default_rng(7)
    cases = [
        (rng.normal(size=30_000), rng.normal(0.05, size=12_345)),
        (rng.integers(0, 6, 5000).astype(float), rng.integers(0, 7, 4000).astype(float)),
        (rng.exponential(size=1000), rng.exponential(1.3, size=1000)),
        (rng.lognormal(size=200_000), rng.lognormal(size=50_000)),  # heavy upper tail
    ]
    for ref, cur in cases:
        reference, current = pd.DataFrame({"v": ref}), pd.DataFrame({"v": cur})
        exact = drift(reference, current).columns.loc["v"]
        ks = stats.ks_2samp(ref, cur).statistic
        assert abs(exact["ks"] - ks) < 1e-3
        w = stats.wasserstein_distance(ref, cur) / ref.std()
        assert exact["wasserstein"] == pytest.approx(w, rel=1e-3, abs=1e-4)
        # From the 1001-quantile profile: within the documented 1e-3 + 2/n bound.
        approx = drift(build_profile(reference), current).columns.loc["v"]
        assert abs(approx["ks"] - ks) <= 1e-3 + 2 / len(ref)
        assert approx["wasserstein"] == pytest.approx(w, abs=0.01)


def test_jensen_shannon_agrees_with_scipy():
    reference = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    current = pd.DataFrame({"c": ["a"] * 20 + ["b"] * 30 + ["d"] * 10})
    row = drift(reference, current).columns.loc["c"]
    expected = jensenshannon([0.5, 0.3, 0.2, 0.0], [2 / 6, 3 / 6, 0.0, 1 / 6])
    assert row["jensen_shannon"] == pytest.approx(expected)
    assert row["unseen_categories"] == 1


def test_missing_values_are_reported_not_mistaken_for_drift():
    reference = sample(20_000, 0)
    current = sample(5000, 1)
    current.loc[current.index[::3], "income"] = np.nan
    current["visits"] = np.nan
    for report in both(reference, current):
        cols = report.columns
        assert cols.loc["income", "cur_missing_rate"] == pytest.approx(1 / 3, abs=1e-3)
        assert cols.loc["x", "ref_missing_rate"] == pytest.approx(0.05, abs=0.01)
        assert not cols.loc["income", "drifted"]
        assert cols.loc["visits", "drifted"]  # nothing left to compare: a total change
        assert flagged(report) == ["visits"]


def test_thresholds_and_methods_are_configurable():
    reference, current = sample(20_000, 0), sample(5000, 1, shift=1.0)
    assert flagged(drift(reference, current, thresholds={"wasserstein": 1.0})) == []
    by_psi = drift(reference, current, methods={"numeric": "psi"}).columns
    assert by_psi.loc["x", "method"] == "psi" and by_psi.loc["x", "threshold"] == 0.2
    with pytest.raises(NbdeployError, match="method"):
        drift(reference, current, methods={"categorical": "ks"})


def test_errors_name_the_problem():
    reference = sample(1000, 0)
    with pytest.raises(NbdeployError, match="income"):
        drift(reference, reference.drop(columns="income"))
    with pytest.raises(NbdeployError, match="no rows"):
        drift(reference, reference.iloc[:0])


def test_report_renders_offline_html_sorted_by_drift():
    reference = sample(5000, 0).rename(columns={"city": "<city>"})
    current = sample(3000, 1, shift=2.0).rename(columns={"city": "<city>"})
    report = drift(reference, current)
    page = report._repr_html_()
    assert "&lt;city&gt;" in page and "<svg" in page
    assert "http" not in page and "<script" not in page
    assert page.index("<td>x</td>") < page.index("<td>age</td>")
    assert "drifted=False" in repr(report) and "1/6 columns" in repr(report)
