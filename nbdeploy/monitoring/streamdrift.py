"""Drift of Parquet files larger than memory: one pass, one record batch at a time.

Each column of the files is reduced, batch by batch, to a summary whose size is set by
the reference, not by the data, and the drift engine (``driftstats``) computes its
usual statistics from the summaries, so memory holds one batch plus the summaries.

- Numeric: counts of current values below and at every point of a grid built from the
  reference (the KS knots and PSI deciles the engine evaluates, each gap split to make
  about ``FINE_BINS`` bins, and a log-spaced grid around the median so that no bin is
  wide where the reference is sparse), two tail histograms beyond the reference's range
  whose ``TAIL_BINS`` equal bins double in width as new extremes arrive, and the exact
  current minimum and maximum (~600 KB a column). The KS statistic and PSI read the
  current CDF at grid points, so they equal the in-memory values exactly. Wasserstein
  needs current quantiles: they are interpolated linearly inside a bin, which moves the
  normalised distance by far less than the bins are wide (measured: <= 2e-5; bound:
  the width of the bins the current values fall in, over the reference std).
- Categorical: counts per category. Past ``MAX_UNSEEN`` distinct categories the
  reference lacks, further new ones are counted together as one: the statistics are
  unchanged (the engine puts every unseen category in one bin anyway), but
  ``unseen_categories`` then reads ``MAX_UNSEEN + 1``, a lower bound.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import driftstats
from nbdeploy.profiling import as_float, category_counts, load_profile

#: bins of the grid inside the reference range (at least; a large reference gives more)
FINE_BINS = 4096
#: points per doubling of the distance to the reference median, and doublings covered
LOG_STEPS, LOG_OCTAVES = 256, 40
#: bins of each tail histogram beyond the reference range
TAIL_BINS = 2048
#: distinct unseen categories counted one by one per column
MAX_UNSEEN = 10_000
#: rows per record batch read from the files
BATCH_ROWS = 65_536
_OTHER_UNSEEN = "\x00unseen beyond the cap"


class _Tail:
    """Counts of distances beyond one end of the reference range in equal bins; when a
    value falls past the last bin, neighbouring bins merge in pairs (the width doubles)."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.counts = np.zeros(TAIL_BINS, dtype=np.int64)

    def add(self, d: np.ndarray) -> None:
        if not len(d):
            return
        far = min(float(d.max()), 1e300)  # a finite bound even for e.g. 1e308 - (-1e308)
        while far >= self.width * TAIL_BINS:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([merged, np.zeros(TAIL_BINS // 2, dtype=np.int64)])
            self.width *= 2
        bins = np.minimum(d / self.width, TAIL_BINS - 1).astype(np.intp)  # inf: the last
        self.counts += np.bincount(bins, minlength=TAIL_BINS)

    def beyond(self) -> tuple[np.ndarray, np.ndarray]:
        """Distances j * width (j = 1 .. last used bin + 1) and the counts at or past them."""
        used = np.flatnonzero(self.counts)
        last = int(used[-1]) + 1 if len(used) else 0
        at_or_past = np.cumsum(self.counts[::-1])[::-1]
        j = np.arange(1, last + 1)
        return j * self.width, np.append(at_or_past, 0)[j]


class NumericSummary(driftstats.Sorted):
    """A numeric column of the stream, as :class:`driftstats.Sorted` reads it."""

    def __init__(self, ref: Mapping[str, Any]) -> None:
        knots = np.asarray(ref.get("quantiles", []), dtype=np.float64)
        s = ref.get("sorted")
        if s is not None and len(s):  # a reference DataFrame: the engine's KS knots
            grid = np.linspace(0, len(s) - 1, min(len(s), driftstats._KS_GRID + 1))
            knots = np.concatenate([knots, s[grid.astype(np.intp)]])
        self.edges = np.unique(np.concatenate([_split(np.unique(knots)), _log_grid(ref)]))
        self.right = np.zeros(len(self.edges), dtype=np.int64)  # values <= edge
        self.left = np.zeros(len(self.edges), dtype=np.int64)  # values < edge
        span = float(self.edges[-1] - self.edges[0]) if len(self.edges) else 0.0
        width = (span or max(abs(float(self.edges[0])), 1.0)) if len(self.edges) else 1.0
        self.under, self.over = _Tail(width / TAIL_BINS), _Tail(width / TAIL_BINS)
        self.m = self.n_nan = 0
        self.lo, self.hi = np.inf, -np.inf
        self._points: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        b = np.sort(values[finite])
        self.n_nan += int(np.isnan(values).sum())
        self.m += len(b)
        if not len(b) or not len(self.edges):
            return
        self.right += np.searchsorted(b, self.edges, side="right")
        self.left += np.searchsorted(b, self.edges, side="left")
        self.lo, self.hi = min(self.lo, float(b[0])), max(self.hi, float(b[-1]))
        first, last = self.edges[0], self.edges[-1]
        self.under.add(first - b[: np.searchsorted(b, first, side="left")])
        self.over.add(b[np.searchsorted(b, last, side="right") :] - last)
        self._points = None

    def __len__(self) -> int:
        return self.m

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The current CDF as a polyline: (counts, values), both non-decreasing; a tie
        at a grid point is a vertical step (counts below it, then at or below it)."""
        if self._points is None:
            d_under, n_under = self.under.beyond()
            d_over, n_over = self.over.beyond()
            first, last = self.edges[0], self.edges[-1]
            x = np.concatenate([first - d_under[::-1], np.repeat(self.edges, 2), last + d_over])
            c = np.concatenate([
                n_under[::-1], np.column_stack([self.left, self.right]).ravel(),
                self.right[-1] + int(self.over.counts.sum()) - n_over,
            ])  # fmt: skip
            # the smallest and the largest value are known exactly: one count each
            top = max(self.m - 1, 1)
            x = np.concatenate([[self.lo] * 2, np.clip(x, self.lo, self.hi), [self.hi] * 2])
            c = np.concatenate([[0, 1], np.clip(c, 1, top), [top, self.m]])
            self._points = c.astype(np.float64), x
        return self._points

    def cdf(self, x: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
        """Exact at grid points (all the engine asks for), interpolated elsewhere."""
        at = np.minimum(np.searchsorted(self.edges, x), len(self.edges) - 1)
        counts, values = self.points()
        exact = (self.right if side == "right" else self.left)[at]
        return np.where(self.edges[at] == x, exact, np.interp(x, values, counts)) / self.m

    def order(self, k: slice | np.ndarray) -> np.ndarray:
        """The k-th smallest values, interpolated inside the bin holding each of them."""
        if isinstance(k, slice):
            k = np.arange(*k.indices(self.m))
        counts, values = self.points()
        return np.interp(np.asarray(k) + 0.5, counts, values)


def _split(edges: np.ndarray) -> np.ndarray:
    """``edges`` with every gap split evenly so that there are about FINE_BINS bins."""
    parts = -(-FINE_BINS // max(len(edges) - 1, 1))
    if len(edges) < 2 or parts < 2:
        return edges
    steps = np.arange(parts) / parts
    inner = edges[:-1, None] + np.diff(edges)[:, None] * steps
    return np.unique(np.append(inner.ravel(), edges[-1]))


def _log_grid(ref: Mapping[str, Any]) -> np.ndarray:
    """Points around the reference median spaced ``2 ** (1 / LOG_STEPS)`` apart in
    distance, from 1e-3 to ~1e9 reference stds: a bin is never wider than 0.3% of its
    distance to the median, however sparse the reference is there (outliers)."""
    q = ref.get("quantiles")
    if q is None or not len(q):
        return np.empty(0)
    std, mean = ref.get("std") or 0.0, ref.get("mean") or 0.0
    unit = 1e-3 * (std if std > 0 else max(abs(mean), 1.0) * 1e-3)
    steps = unit * np.exp2(np.arange(LOG_STEPS * LOG_OCTAVES) / LOG_STEPS)
    center = float(q[len(q) // 2])
    return np.concatenate([center - steps[::-1], [center], center + steps])


class CategorySummary:
    """A categorical column of the stream: counts per category (see module docstring)."""

    def __init__(self, ref: Mapping[str, Any]) -> None:
        self.known = set(ref["frequencies"])
        self.counts: dict[str, int] = {}
        self.unseen = 0

    def add(self, values: pd.Series) -> None:
        for key, n in category_counts(values).items():
            if key in self.counts:
                self.counts[key] += int(n)
            elif key in self.known or self.unseen < MAX_UNSEEN:
                self.counts[key] = int(n)
                self.unseen += key not in self.known
            else:
                self.counts[_OTHER_UNSEEN] = self.counts.get(_OTHER_UNSEEN, 0) + int(n)

    def series(self) -> pd.Series:
        return pd.Series(self.counts, dtype=np.int64)


def drift_files(
    reference: pd.DataFrame | Mapping[str, Any],
    files: list[Path],
    *,
    drift_share: float = 0.5,
    thresholds: Mapping[str, float] | None = None,
    methods: Mapping[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: bool = True,
) -> driftstats.DriftReport:
    """:func:`driftstats.drift` of the rows of ``files`` (Parquet), read in record batches."""
    import pyarrow.parquet as pq

    from nbdeploy.progress import Progress

    thr, meth = driftstats.options(thresholds, methods)
    if isinstance(reference, pd.DataFrame):
        refs = {str(c): driftstats.reference_column(reference[c]) for c in reference.columns}
        n_ref = len(reference)
    else:
        profile = load_profile(dict(reference))
        refs, n_ref = dict(profile["columns"]), int(profile["n_rows"])
    total = 0
    for f in files:
        try:
            meta = pq.ParquetFile(f)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise NbdeployError(f"{f.name} is not a readable Parquet file ({exc})") from None
        names = meta.schema_arrow.names
        lacking = [c for c in refs if c not in names]
        if lacking:
            extra = [c for c in names if c not in refs]
            raise NbdeployError(f"{f.name}: {driftstats._absent_message(lacking, extra)}")
        total += meta.metadata.num_rows
    if not total:
        raise NbdeployError("Current data has no rows; pass at least one row to compare.")
    summaries: dict[str, Any] = {
        c: NumericSummary(r) if r["kind"] == "numeric" else CategorySummary(r)
        for c, r in refs.items()
    }

    def add(frame: pd.DataFrame, name: str) -> None:
        summary = summaries[name]
        summary.add(as_float(frame[name]) if isinstance(summary, NumericSummary) else frame[name])

    desc = f"drift over {len(files)} Parquet file{'s' * (len(files) > 1)}"
    workers = min(4, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(workers) as pool,
        Progress(
            total=total, unit="rows", desc=desc, disable=not progress or total <= batch_rows
        ) as bar,
    ):
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=list(refs)):
                frame = batch.to_pandas()
                list(pool.map(add, repeat(frame), refs))
                bar.update(len(frame))
                del frame, batch
    rows = {}
    for name, summary in summaries.items():
        if isinstance(summary, NumericSummary):
            cur, missing = summary, summary.n_nan / total
        else:
            cur = summary.series()
            missing = 1.0 - int(cur.sum()) / total
        rows[name] = driftstats.column_verdict(refs[name], cur, missing, thr, meth)
    return driftstats.report(rows, drift_share, n_ref, total)
