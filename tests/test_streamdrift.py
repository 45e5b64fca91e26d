"""nd.drift over Parquet files, streamed in record batches, against the in-memory engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy.monitoring import streamdrift
from nbdeploy.profiling import build_profile, column_profile

#: statistics the stream reads exactly off its grid, and Wasserstein's tolerance
EXACT = ["psi", "ks", "jensen_shannon", "threshold", "cur_missing_rate", "ref_missing_rate"]
W_TOL = 1e-3


def _frame(rng: np.random.Generator, n: int, *, drifted: bool) -> pd.DataFrame:
    scale, missing = (3, 0.2) if drifted else (2, 0.05)
    nan = np.where(rng.random(n) < missing, np.nan, rng.exponential(scale, n))
    nan[:3] = [np.inf, -np.inf, np.inf]  # infinities: left out of the statistics, not missing
    start = pd.Timestamp("2026-01-01") + pd.Timedelta(days=30 if drifted else 0)
    cats = ["a", "b", "c"] + [f"new{i}" for i in range(40)] * drifted
    return pd.DataFrame({
        "normal": rng.normal(0, 1, n),
        "shifted": rng.normal(0.4 if drifted else 0, 1, n),
        # heavy tails: drifted values reach far beyond the reference's min and max
        "heavy": rng.standard_t(2, n) * (5 if drifted else 1),
        "with_nan": nan,
        "ties": rng.integers(0, 8, n),
        "when": start + pd.to_timedelta(rng.integers(0, 86400 * 60, n), unit="s"),
        "plan": rng.choice(cats, n),
    })  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A reference of 20,000 rows and 90,000 drifted rows split over three files."""
    rng = np.random.default_rng(7)
    ref = _frame(rng, 20_000, drifted=False)
    cur = _frame(rng, 90_000, drifted=True)
    folder = tmp_path_factory.mktemp("parts")
    for i, rows in enumerate(np.array_split(np.arange(len(cur)), 3)):
        cur.iloc[rows].to_parquet(folder / f"part-{i}.parquet", index=False)
    return ref, cur, folder


def _agree(streamed: nd.DriftReport, in_memory: nd.DriftReport) -> None:
    a, b = streamed.columns, in_memory.columns
    assert list(a.index) == list(b.index)
    assert (a["drifted"] == b["drifted"]).all() and streamed.drifted == in_memory.drifted
    assert (a["kind"] == b["kind"]).all() and (a["method"] == b["method"]).all()
    assert streamed.n_current == in_memory.n_current
    assert streamed.n_reference == in_memory.n_reference
    np.testing.assert_allclose(
        a[EXACT].to_numpy(float), b[EXACT].to_numpy(float), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        a["wasserstein"].to_numpy(float), b["wasserstein"].to_numpy(float), atol=W_TOL
    )
    assert list(a["unseen_categories"]) == list(b["unseen_categories"])


@pytest.mark.parametrize("as_profile", [True, False], ids=["profile", "dataframe"])
def test_streamed_drift_agrees_with_in_memory(data, as_profile):
    ref, cur, folder = data
    reference = build_profile(ref) if as_profile else ref
    streamed = nd.drift(reference, str(folder / "*.parquet"), batch_rows=5_000)
    in_memory = nd.drift(reference, cur)
    _agree(streamed, in_memory)
    # the data really drifted, in the columns made to drift, and not in the others
    drifted = set(streamed.columns.query("drifted").index)
    assert {"shifted", "heavy", "with_nan", "when", "plan"} <= drifted
    assert "normal" not in drifted and "ties" not in drifted
    assert streamed.columns.loc["plan", "unseen_categories"] == 40
    # the stream saw values beyond the reference range and still matched
    assert cur["heavy"].max() > ref["heavy"].max() and cur["heavy"].min() < ref["heavy"].min()


def test_no_drift_agrees_too_and_batch_size_changes_nothing(tmp_path):
    rng = np.random.default_rng(3)
    ref, cur = _frame(rng, 20_000, drifted=False), _frame(rng, 20_000, drifted=False)
    cur.to_parquet(tmp_path / "same.parquet", index=False)
    # equal sizes: the engine's exact Wasserstein path pairs order statistics one to one
    in_memory = nd.drift(ref, cur)
    small = nd.drift(ref, str(tmp_path), batch_rows=777)
    large = nd.drift(ref, str(tmp_path), batch_rows=100_000)
    _agree(small, in_memory)
    assert not small.drifted and not small.columns["drifted"].any()
    pd.testing.assert_frame_equal(small.columns, large.columns)


def test_summary_cdf_is_exact_on_its_grid_and_quantiles_stay_in_their_bin():
    rng = np.random.default_rng(5)
    ref = pd.Series(rng.lognormal(0, 1, 5_000))
    values = np.concatenate([rng.lognormal(0.5, 1.5, 30_000), [-50.0, 1e9]])  # both tails
    summary = streamdrift.NumericSummary(column_profile(ref))
    for part in np.array_split(rng.permutation(values), 7):
        summary.add(part)
    ordered = np.sort(values)
    edges = summary.edges
    for side in ("left", "right"):
        expected = np.searchsorted(ordered, edges, side=side) / len(ordered)
        np.testing.assert_array_equal(summary.cdf(edges, side), expected)
    k = np.arange(len(ordered))
    approx = summary.order(k)
    assert approx[0] == -50.0 and approx[-1] == 1e9  # exact extremes
    # each interpolated order statistic lies in the grid bin (or tail bin) of the true one
    inside = (ordered >= edges[0]) & (ordered <= edges[-1])
    at = np.searchsorted(edges, ordered[inside], side="right")
    low, high = edges[np.maximum(at - 1, 0)], edges[np.minimum(at, len(edges) - 1)]
    assert np.all((approx[inside] >= low) & (approx[inside] <= high))
    np.testing.assert_array_equal(summary.order(slice(0, 10)), approx[:10])
    # the largest finite doubles: their distance to the grid overflows to inf, still counted
    summary.add(np.array([-1.7e308, 1.7e308]))
    assert summary.order(np.array([0, len(values) + 1])).tolist() == [-1.7e308, 1.7e308]
    assert summary.under.counts.sum() == 1 and summary.over.counts.sum() == 1


def test_tail_doubles_its_bins_and_keeps_every_count():
    tail = streamdrift._Tail(1.0)
    tail.add(np.array([0.5, 3.5, 100.0]))
    assert tail.width == 1.0 and tail.counts[[0, 3, 100]].tolist() == [1, 1, 1]
    tail.add(np.array([5000.0]))  # past 2048 bins of 1: the width doubles to 4
    assert tail.width == 4.0 and tail.counts.sum() == 4
    assert tail.counts[[0, 25, 1250]].tolist() == [2, 1, 1]
    distances, at_or_past = tail.beyond()
    assert distances[-1] == 4.0 * 1251 and at_or_past[0] == 2 and at_or_past[-1] == 0


def test_categories_beyond_the_cap_are_counted_together(data, monkeypatch):
    ref, cur, folder = data
    monkeypatch.setattr(streamdrift, "MAX_UNSEEN", 10)
    reference = build_profile(ref[["plan"]])
    streamed = nd.drift(reference, str(folder), batch_rows=5_000)
    in_memory = nd.drift(reference, cur[["plan"]])
    # the statistics are those of the exact counts; only the unseen count is a lower bound
    for stat in ("jensen_shannon", "psi", "threshold", "cur_missing_rate"):
        assert streamed.columns.loc["plan", stat] == pytest.approx(
            in_memory.columns.loc["plan", stat], rel=1e-12
        )
    assert in_memory.columns.loc["plan", "unseen_categories"] == 40
    assert streamed.columns.loc["plan", "unseen_categories"] == 11


def test_errors_are_one_line(data, tmp_path):
    ref, cur, folder = data
    cur.rename(columns={"shifted": "shift"}).to_parquet(tmp_path / "renamed.parquet")
    with pytest.raises(nd.NbdeployError) as e:
        nd.drift(ref, str(tmp_path))
    assert str(e.value) == (
        "renamed.parquet: the current data lacks the reference's column 'shifted'; "
        "it has 'shift' instead: rename it to 'shifted'"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(nd.NbdeployError, match=r"x\.parquet is not a readable Parquet file"):
        nd.drift(ref, str(broken))
    empty = tmp_path / "empty"
    empty.mkdir()
    cur.iloc[:0].to_parquet(empty / "none.parquet", index=False)
    with pytest.raises(nd.NbdeployError, match="no rows"):
        nd.drift(ref, str(empty))
    with pytest.raises(nd.NbdeployError, match="does not apply"):
        nd.drift(ref, str(folder), methods={"numeric": "jensen_shannon"})
    with pytest.raises(nd.NbdeployError, match="no Parquet files"):
        nd.drift(ref, str(tmp_path / "nothing*.parquet"))
