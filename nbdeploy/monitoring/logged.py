"""Logged predictions joined with their feedback labels, and the version that made them.

Fairness, anomaly scoring, label-free estimates and segments all start from the same
rows: what a deployment (or model) answered in a time range, served and batch roles
(shadow rows are a challenger's, not what users got), with the latest label per
prediction where one arrived. ``column`` finds a logged column by the name a user
knows (a feature, a passthrough column, an output) and says what to do when it was
never logged; columns the log keeps only hashed or dropped (``pii=``) are refused.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbdeploy import auditlog, config
from nbdeploy.exceptions import NbdeployError

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd


@dataclass(frozen=True)
class Version:
    """What monitoring needs to know about the version that answered."""

    name: str
    version: int
    task: str  # classification | regression | unknown
    classes: tuple[str, ...]
    features: tuple[str, ...]
    passthrough: tuple[str, ...]
    #: column -> "hash" | "drop" | ... : what the log keeps of it (the hardening issue)
    pii: dict[str, str]
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@functools.lru_cache(maxsize=32)
def _version(tracking_uri: str, name: str, version: int) -> Version:
    from nbdeploy import registry

    mv = registry.resolve(f"{name}/{version}")
    path = registry.fetch_model(mv)
    meta = json.loads((path / registry.METADATA).read_text())
    schema = meta["schema"]
    return Version(
        name=name,
        version=version,
        task=meta.get("task") or mv.task or "unknown",
        classes=tuple(str(c) for c in (meta.get("classes") or ())),
        features=tuple(c["name"] for c in schema["columns"]),
        passthrough=tuple(schema.get("passthrough") or ()),
        pii={str(k): str(v) for k, v in (meta.get("pii") or {}).items()},
        path=path,
    )


def version_of(ref: str) -> Version:
    """The (cached: versions never change) facts of ``name/version``."""
    name, _, number = ref.rpartition("/")
    return _version(config.settings().tracking_uri, name, int(number))


def rows(name: str, since: Any = None, *, labels: bool = True) -> pd.DataFrame:
    """Served and batch predictions of ``name`` since ``since`` (+ ``label`` column)."""
    import pandas as pd

    frame = auditlog.logs(name, since=since)
    frame = frame[frame["role"] != "shadow"].reset_index(drop=True) if len(frame) else frame
    if not len(frame):
        raise NbdeployError(
            f"no logged predictions for {name!r}"
            + (f" since {since!r}" if since is not None else "")
            + "; serve or score the model first (nd.serve, nd.score)"
        )
    if labels:
        known = [auditlog.labels(name)]
        for model in set(frame["model_name"]) - {name}:
            known.append(auditlog.labels(model))
        table = pd.concat(known, ignore_index=True).sort_values("ts")
        table = table.drop_duplicates("prediction_id", keep="last")
        truth = dict(zip(table["prediction_id"], table["label"], strict=True))
        frame["label"] = frame["prediction_id"].map(truth)
    return frame


def latest_version(frame: pd.DataFrame) -> Version:
    last = frame.iloc[-1]
    return version_of(f"{last['model_name']}/{int(last['model_version'])}")


def column(frame: pd.DataFrame, by: str, name: str, version: Version | None = None) -> pd.Series:
    """The logged column ``by`` (a feature, passthrough column or output) of ``frame``."""
    if not isinstance(by, str) or not by:
        raise NbdeployError("by must be the name of a logged column, e.g. by='region'")
    if version is not None and by in version.pii:
        raise NbdeployError(
            f"column {by!r} is kept only as {version.pii[by]!r} in the log (pii=), so it "
            "cannot be sliced by; register a coarser passthrough column (e.g. an age band)"
        )
    for logged in (by, f"passthrough.{by}", f"feature.{by}"):
        if logged in frame:
            return frame[logged]
    raise NbdeployError(
        f"column {by!r} was never logged for {name!r}; slice by a feature or register "
        f"it as passthrough (nd.register(..., passthrough=[{by!r}])) and send it with requests"
    )


def label_text(values: Any) -> Any:
    """Labels and predictions as comparable text (1, 1.0 and "1" are one class)."""
    from nbdeploy.monitoring.metrics import label_text as one

    # a window holds few distinct labels but many rows: convert each distinct one once
    items = values.to_numpy(dtype=object) if hasattr(values, "to_numpy") else values
    memo: dict[tuple[type, Any], str] = {}
    out: list[str | None] = []
    for v in items:
        if v is None or v != v:
            out.append(None)
            continue
        key = (type(v), v)
        text = memo.get(key)
        if text is None:
            text = memo[key] = one(v)
        out.append(text)
    return out
