"""What monitoring reads: a window of a deployment's traffic and its reference profile.

Everything comes from two places that already exist once a model is served: the
audit log (predictions, feedback labels, rejected-request counts) and the profile
``nd.register`` stored next to the model. No training data is ever reloaded.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbdeploy import auditlog, config, durations
from nbdeploy.exceptions import NbdeployError

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.models import ModelVersion
    from nbdeploy.monitoring.driftstats import DriftReport

#: the windows the monitor panel offers, label -> seconds (None: everything logged)
WINDOWS: dict[str, float | None] = {
    "15m": 900.0, "1h": 3600.0, "6h": 21600.0, "24h": 86400.0, "7d": 604800.0, "all": None,
}  # fmt: skip
#: newest rows a window reads at most, so a busy deployment stays cheap to monitor
MAX_ROWS = 200_000
#: name -> its window's rows, kept between reads (see :func:`keep_windows`)
_TAILS: dict[str, auditlog.LogTail] | None = None


def keep_windows() -> None:
    """Keep each window's decoded rows in this process, so that reading the same
    window again decodes only what was logged since (the alert child reads its hour
    every minute). Not for notebooks: a window of 200,000 rows holds about 140 MB."""
    global _TAILS
    _TAILS = {}


def window_seconds(window: str | float | None) -> float | None:
    """``"15m"``, ``"1h"``, ``"7d"``, seconds as a number, or ``"all"``/None."""
    if window is None or window == "all":
        return None
    if isinstance(window, int | float):
        return float(window)
    span = durations.seconds(window)
    if span is None:
        raise NbdeployError(f"window {window!r} is not a duration like '15m', '1h', '7d' or 'all'")
    return span


def engine() -> Any:
    """The drift engine module (``nbdeploy.monitoring.driftstats``)."""
    return importlib.import_module("nbdeploy.monitoring.driftstats")


@functools.lru_cache(maxsize=32)
def _profile(tracking_uri: str, name: str, version: int) -> dict[str, Any]:
    from nbdeploy import registry

    return registry.load_profile(f"{name}/{version}")


def reference_profile(ref: str | ModelVersion) -> dict[str, Any]:
    """The profile stored at registration (cached per version: versions never change)."""
    from nbdeploy import registry

    mv = registry.resolve(ref)
    return _profile(config.settings().tracking_uri, mv.name, mv.version)


def drift(reference: Any, current: pd.DataFrame, **kw: Any) -> DriftReport:
    """Drift of ``current`` against ``reference``: a DataFrame, a profile, or a model ref.

    A ref (``churn@champion``, ``churn/3``, ``models:/churn/3``, a ``ModelVersion``)
    uses the profile stored when that version was registered, so no training data
    is reloaded. Keyword arguments (``drift_share``, ``thresholds``, ``methods``) are
    those of :func:`nbdeploy.monitoring.driftstats.drift`, whose docstring lists the statistics.
    ``current`` may be a folder or glob of Parquet files, streamed in record batches
    (``batch_rows=``, ``progress=``; see :mod:`nbdeploy.monitoring.streamdrift`).
    """
    from nbdeploy.models import ModelVersion

    if isinstance(reference, str | ModelVersion):
        reference = reference_profile(reference)
    if isinstance(current, str | os.PathLike):  # Parquet files: streamed
        return _drift_files(reference, current, **kw)
    if not hasattr(current, "columns") or isinstance(reference, dict):
        current = _named_like(reference, current)
    try:
        report: DriftReport = engine().drift(reference, current, **kw)
    except NbdeployError as exc:  # mismatched data: no frames from the engine
        raise exc.with_traceback(None) from None
    return report


def _drift_files(reference: Any, data: Any, **kw: Any) -> DriftReport:
    """Drift of a folder or glob of Parquet files, streamed in record batches: memory
    holds one batch and a fixed-size summary per column (``streamdrift``)."""
    from nbdeploy.daskscore import parquet_files
    from nbdeploy.monitoring.streamdrift import drift_files

    try:
        return drift_files(reference, parquet_files(data), **kw)
    except NbdeployError as exc:  # bad files or options: one line, no frames
        raise exc.with_traceback(None) from None


def _named_like(reference: Any, current: Any) -> pd.DataFrame:
    """``current`` as a DataFrame named like the reference: a model trained on an array
    profiles its columns as f0, f1, ...; an array (or a frame with positional column
    labels) of the same width is compared column by column."""
    import numpy as np
    import pandas as pd

    names = (
        list(reference["columns"])
        if isinstance(reference, dict)
        else [str(c) for c in reference.columns]
    )
    frame = current if isinstance(current, pd.DataFrame) else pd.DataFrame(np.asarray(current))
    positional = all(isinstance(c, int) for c in frame.columns)
    if positional and frame.shape[1] == len(names) and set(map(str, frame.columns)) != set(names):
        frame = frame.set_axis(names, axis=1)
    return frame


@dataclass
class Window:
    """One deployment's traffic between ``since`` and ``until`` (epoch seconds)."""

    name: str
    since: float | None
    until: float
    served: pd.DataFrame
    shadow: pd.DataFrame
    labels: pd.DataFrame
    rejections: pd.DataFrame
    ref: str | None
    profile: dict[str, Any] | None = field(repr=False, default=None)
    #: the alias the champion answers under (None: a deployment of a fixed version)
    alias: str | None = None

    @property
    def current(self) -> pd.DataFrame:
        """The served rows of the version answering now (``ref``): what drift judges,
        each version's traffic against its own training profile."""
        if self.ref is None or not len(self.served):
            return self.served
        model, version = self.ref.rsplit("/", 1)
        mine = (self.served["model_name"] == model) & (self.served["model_version"] == int(version))
        return self.served[mine]

    def role(self, version_ref: str, alias: Any) -> str:
        """Of served rows: ``champion`` (the version answering now), ``replaced`` (answered
        under the same alias before a promotion or rollback) or ``canary``."""
        return role(version_ref, alias, self.ref, self.alias)

    def others(self) -> list[tuple[str, pd.DataFrame]]:
        """Every other version that answered in the window: (``"model/2"``, its rows)."""
        if not len(self.served):
            return []
        keys = self.served["model_name"] + "/" + self.served["model_version"].astype(str)
        groups = self.served.groupby(keys, sort=False)
        return [(str(k), rows) for k, rows in groups if k != self.ref]

    @property
    def features(self) -> list[str]:
        return list((self.profile or {}).get("columns", {}))

    def feature_frame(
        self, rows: pd.DataFrame | None = None, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """The logged feature columns under their training names."""
        rows = self.served if rows is None else rows
        out = {}
        for column in self.features if columns is None else columns:
            logged = f"feature.{column}" if f"feature.{column}" in rows else column
            if logged in rows:
                out[column] = rows[logged]
        import pandas as pd

        return pd.DataFrame(out, index=rows.index)

    @property
    def is_classifier(self) -> bool:
        prof = self.profile or {}
        predictions = prof.get("predictions") or {}
        return (
            prof.get("scores") is not None
            or "score" in self.served
            or predictions.get("kind") == "categorical"
        )


def load_window(
    name: str, window: str | float | None = "1h", *, now: float | None = None
) -> Window:
    """Read ``name``'s traffic of the last ``window`` from the audit log."""
    import pandas as pd

    until = time.time() if now is None else now
    span = window_seconds(window)
    since = None if span is None else until - span
    if _TAILS is not None and now is None:
        rows = _TAILS.setdefault(name, auditlog.LogTail(name)).read(since, MAX_ROWS)
    else:
        rows = auditlog.logs(name, since=since, limit=MAX_ROWS)
    served = rows[rows["role"] == "served"].reset_index(drop=True)
    shadow = rows[rows["role"] == "shadow"].reset_index(drop=True)
    ref, alias = champion(name, served)
    labels = auditlog.labels(name)
    if ref is not None and ref.split("/")[0] != name:
        labels = pd.concat([labels, auditlog.labels(ref.split("/")[0])], ignore_index=True)
        labels = labels.sort_values("ts").drop_duplicates("prediction_id", keep="last")
    rejections = pd.DataFrame(
        auditlog.shared().rejections(name, since), columns=["ts", "code", "status", "count"]
    )
    profile = reference_profile(ref) if ref else None
    return Window(name, since, until, served, shadow, labels, rejections, ref, profile, alias)


def role(version_ref: str, alias: Any, champion_ref: str | None, champion_alias: str | None) -> str:
    """See :meth:`Window.role`."""
    logged = alias if isinstance(alias, str) and alias else None
    if logged != (champion_alias or None):
        return "canary"
    return "champion" if version_ref == champion_ref else "replaced"


def champion(name: str, served: pd.DataFrame) -> tuple[str | None, str | None]:
    """The version answering for ``name`` now (``"model/3"``) and the alias it answers under.

    The alias's holder in the registry now, not the version that answered last: after
    a rollback the newest rows may still be the replaced version's. The alias is the
    running deployment's; for a stopped one, the alias most served rows carried (a
    canary's rows carry their own alias, or none).
    """
    from nbdeploy import registry
    from nbdeploy.exceptions import ModelNotFoundError
    from nbdeploy.serving.process import _read_state

    state = _read_state(name)
    alias: str | None = None
    if state is not None:
        model, version, alias = registry.parse_ref(state["ref"])
        if not alias:
            return f"{model}/{version}", None
    if not len(served):
        served = auditlog.logs(name, limit=1, role="served")
    if alias is None and len(served):
        aliases = served["alias"].dropna()
        aliases = aliases[aliases != ""]
        alias = str(aliases.value_counts().index[0]) if len(aliases) else None
    if state is not None:
        model = registry.parse_ref(state["ref"])[0]
    elif len(served):
        model = str(served["model_name"].iloc[-1])
    else:
        return None, None
    if alias is not None:
        try:
            mv = registry.resolve(f"{model}@{alias}")
            return f"{mv.name}/{mv.version}", alias
        except ModelNotFoundError:  # the alias was removed since: its last holder in the log
            served = served[served["alias"] == alias]
    if not len(served):
        return None, alias
    last = served.iloc[-1]
    return f"{last['model_name']}/{int(last['model_version'])}", alias
