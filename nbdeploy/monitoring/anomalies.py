"""Unusual feature vectors: a detector fitted at registration, scored off the request path.

Schema checks catch a wrong type or a NaN; they let through a row whose every value
is plausible but whose combination the model never saw (a two-year contract with a
one-month tenure). ``nd.register`` fits an isolation forest on the training rows:
numeric columns as they are (missing as the training median, plus a missing flag),
categorical ones as their training frequency (a category training never had is 0,
the rarest possible). Its score is raised by how far a row lies beyond the training
range (which a forest cannot see: its splits lie inside it). A share of the training
rows is held out of the fit and the threshold set where it flags ``fpr`` of them (1%
by default), so "anomalous" means
"rarer than all but 1% of training rows", a rate one can alert on.

The detector is pickled into the model folder before the artifact manifest is
written, so it is hash-verified like every other artifact before it is loaded.
Columns the log keeps only hashed or dropped (``pii=``) are left out, with a note.
``nd.anomalies`` scores logged rows in the caller's process, never in the server.
For each anomalous row it names the features that make it so: the values furthest
in the tails of their training distribution (or rarest categories).
"""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import NbdeployError
from nbdeploy.monitoring import logged

if TYPE_CHECKING:
    import pandas as pd

DETECTOR = "anomaly_detector.pkl"
#: fewer than sklearn's 100 trees: fitting costs ~5 ms a tree, and the path lengths of
#: 64 trees rank rows nearly as well (the threshold is calibrated on held-out rows anyway)
N_TREES = 64
#: rows the forest is fitted on (each tree draws 256 of them) and held-out rows the
#: threshold is set on, at most: more adds time, not accuracy
MAX_FIT, MAX_HELD_OUT = 4096, 5000


class Detector:
    """Encoder + isolation forest + threshold, as stored with a model version."""

    def __init__(self, fpr: float = 0.01, seed: int = 0) -> None:
        self.fpr, self.seed = fpr, seed

    def fit(self, X: pd.DataFrame, exclude: dict[str, str] | None = None) -> Detector:
        from sklearn.ensemble import IsolationForest

        from nbdeploy.profiling import as_float, category_counts, is_numeric

        started = time.perf_counter()
        self.excluded_ = {str(c): str(v) for c, v in (exclude or {}).items() if c in X}
        self.columns_ = [str(c) for c in X.columns if str(c) not in self.excluded_]
        self.numeric_: dict[str, tuple[float, np.ndarray]] = {}
        self.frequencies_: dict[str, dict[str, float]] = {}
        for c in self.columns_:
            if is_numeric(X[c].dtype):
                values = as_float(X[c])
                finite = values[np.isfinite(values)]
                sorted_ = np.sort(finite) if len(finite) else np.zeros(1)
                self.numeric_[c] = (
                    float(np.median(sorted_)),
                    sorted_[:: max(len(sorted_) // 2000, 1)],
                )
            else:
                counts = category_counts(X[c])
                self.frequencies_[c] = (counts / max(int(counts.sum()), 1)).to_dict()
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(X))
        n_held = min(max(len(X) // 5, 1), MAX_HELD_OUT)
        held, fit = order[:n_held], order[n_held:][:MAX_FIT]
        if len(fit) < 10:
            raise NbdeployError("anomaly detection needs at least 12 training rows")
        matrix = self.encode(X)
        self.forest_ = IsolationForest(n_estimators=N_TREES, random_state=self.seed).fit(
            matrix[fit]
        )
        held_scores = -self.forest_.score_samples(matrix[held]) + self.beyond(X.iloc[held])
        self.threshold_ = float(np.quantile(held_scores, 1.0 - self.fpr))
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        from nbdeploy.profiling import as_float

        parts = []
        for c in self.columns_:
            if c in self.numeric_:
                values = as_float(X[c]) if c in X else np.full(len(X), np.nan)
                missing = ~np.isfinite(values)
                parts += [np.where(missing, self.numeric_[c][0], values), missing.astype(float)]
            else:
                freq = self.frequencies_[c]
                keys = X[c].astype(object) if c in X else [None] * len(X)
                parts.append(np.array([freq.get(str(v), 0.0) if v is not None and v == v
                                       else -1.0 for v in keys]))  # fmt: skip
        return np.column_stack(parts) if parts else np.zeros((len(X), 0))

    def score(self, X: pd.DataFrame) -> np.ndarray:
        """Higher is more unusual; above ``threshold_`` is anomalous."""
        return -self.forest_.score_samples(self.encode(X)) + self.beyond(X)

    def beyond(self, X: pd.DataFrame) -> np.ndarray:
        """How far a row lies outside anything training saw: per numeric value, the
        distance beyond the training range in interquartile ranges (at most 10), plus 1
        per category training never had. An isolation forest cannot see this itself:
        its splits lie within the training range, so 10x the maximum isolates no
        faster than the maximum does."""
        from nbdeploy.profiling import as_float

        total = np.zeros(len(X))
        for c in self.columns_:
            if c not in X:
                continue
            if c in self.numeric_:
                grid = self.numeric_[c][1]
                lo, hi = grid[0], grid[-1]
                q1, q3 = np.quantile(grid, [0.25, 0.75])
                spread = (q3 - q1) or (hi - lo) or 1.0
                values = as_float(X[c])
                excess = np.maximum(values - hi, 0) + np.maximum(lo - values, 0)
                total += np.minimum(np.nan_to_num(excess / spread, posinf=10.0), 10.0)
            else:
                freq = self.frequencies_[c]
                total += [v is not None and v == v and str(v) not in freq for v in X[c]]
        return total

    def reasons(self, X: pd.DataFrame, top: int = 3) -> list[str]:
        """Per row, the features furthest in their training tails, most surprising first."""
        from nbdeploy.profiling import as_float

        surprise, labels = [], []
        for c in self.columns_:
            if c in self.numeric_:
                grid = self.numeric_[c][1]
                values = as_float(X[c]) if c in X else np.full(len(X), np.nan)
                cdf = np.searchsorted(grid, values, side="right") / len(grid)
                tail = np.minimum(cdf, 1.0 - cdf + 1.0 / len(grid))
                tail = np.where(np.isfinite(values), np.clip(tail, 0.5 / len(grid), 0.5), 0.5)
                surprise.append(-np.log(tail * 2))
                labels.append([f"{c}={v:.4g}" if v == v else f"{c} missing" for v in values])
            else:
                freq = self.frequencies_[c]
                keys = X[c].astype(object).tolist() if c in X else [None] * len(X)
                share = np.array([freq.get(str(v), 0.0) for v in keys])
                surprise.append(-np.log(np.clip(share, 1e-6, 1.0)))
                labels.append([f"{c}={v}" + ("" if str(v) in freq else " (unseen)") for v in keys])
        if not surprise:
            return [""] * len(X)
        matrix = np.column_stack(surprise)
        out = []
        for i, row in enumerate(matrix):
            best = [j for j in np.argsort(-row)[:top] if row[j] > 0.5]
            out.append(", ".join(labels[j][i] for j in best))
        return out


def fit_and_store(
    frame: pd.DataFrame, path: Path, *, fpr: float = 0.01, exclude: dict[str, str] | None = None
) -> dict[str, Any]:
    """Fit on the training features and pickle into the model folder (before hashing)."""
    if not 0 < fpr < 1:
        raise NbdeployError(f"anomaly_fpr must be between 0 and 1, not {fpr!r}")
    detector = Detector(fpr=fpr).fit(frame, exclude)
    (path / DETECTOR).write_bytes(pickle.dumps(detector))
    return {
        "fpr": fpr,
        "threshold": detector.threshold_,
        "excluded": sorted(detector.excluded_),
        "seconds": round(detector.fit_seconds_, 4),
    }


def load(version: logged.Version) -> Detector | None:
    """The version's detector, from its hash-verified folder (None: registered without)."""
    file = version.path / DETECTOR
    if not file.is_file():
        return None
    detector: Detector = pickle.loads(file.read_bytes())
    return detector


def score_rows(frame: pd.DataFrame, *, top: int = 3) -> pd.DataFrame:
    """``anomaly_score``, ``anomalous`` and ``anomaly_features`` for logged rows."""
    import pandas as pd

    score = np.full(len(frame), np.nan)
    anomalous = np.zeros(len(frame), bool)
    reasons = np.full(len(frame), "", dtype=object)
    found = False
    keys = frame["model_name"].astype(str) + "/" + frame["model_version"].astype(int).astype(str)
    for ref, idx in frame.groupby(keys).groups.items():
        detector = load(logged.version_of(str(ref)))
        if detector is None:
            continue
        found = True
        part = frame.loc[idx]
        features = pd.DataFrame(
            {
                c: part[f"feature.{c}"] if f"feature.{c}" in part else part.get(c)
                for c in detector.columns_
            },
            index=part.index,
        )
        at = frame.index.get_indexer(idx)
        score[at] = detector.score(features)
        anomalous[at] = score[at] > detector.threshold_
        flagged = np.flatnonzero(anomalous[at])
        if len(flagged):
            reasons[at[flagged]] = detector.reasons(features.iloc[flagged], top)
    if not found:
        raise NbdeployError(
            "these predictions come from versions registered without an anomaly detector; "
            "re-register the model (nd.register fits one) to score its traffic"
        )
    out = frame.copy()
    out["anomaly_score"], out["anomalous"], out["anomaly_features"] = score, anomalous, reasons
    return out


def anomalies(name: str, since: Any = None) -> pd.DataFrame:
    """``name``'s logged rows with ``prediction_id``, ``anomaly_score`` and ``anomalous``.

    Scored against the detector fitted when the answering version was registered; its
    threshold flags 1% of held-out training rows (``nd.register(..., anomaly_fpr=)``), so
    a rate well above that means traffic unlike the training data. ``anomaly_features``
    names the values that make an anomalous row unusual.
    """
    frame = logged.rows(name, since, labels=False)
    return score_rows(frame)


def rate(scored: pd.DataFrame) -> float:
    valid = scored["anomaly_score"].notna()
    return float(scored.loc[valid, "anomalous"].mean()) if valid.any() else math.nan
