"""Public value types. Small frozen dataclasses; methods delegate to the API.

Each has a ``_repr_html_`` so that the object a magic returns is its own rich
summary in the notebook.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_STYLE = "font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;border-collapse:collapse"


def _table(title: str, rows: list[tuple[str, Any]], badge: str = "") -> str:
    cells = "".join(
        f"<tr><th style='text-align:left;padding:2px 12px 2px 0;color:#555'>{html.escape(k)}"
        f"</th><td style='text-align:left;padding:2px 0'>{v}</td></tr>"
        for k, v in rows
    )
    return f"<div><b>{html.escape(title)}</b> {badge}<table style='{_STYLE}'>{cells}</table></div>"


def _badge(text: str, ok: bool | None) -> str:
    color = {True: "#1a7f37", False: "#cf222e", None: "#6e7781"}[ok]
    return (
        f"<span style='background:{color};color:white;border-radius:8px;padding:0 6px;"
        f"font-size:11px'>{html.escape(text)}</span>"
    )


def _when(seconds: float) -> str:
    if not seconds:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    run_id: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    created: float = 0.0
    flavor: str = ""
    task: str = ""
    fingerprint: str = ""
    #: Outcome of the last ``nd.test``; None when never tested.
    test_passed: bool | None = None
    source: str = field(default="", repr=False)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def _repr_html_(self) -> str:
        test = {None: "not tested", True: "passed", False: "failed"}[self.test_passed]
        badges = " ".join(_badge("@" + a, None) for a in self.aliases)
        return _table(
            f"{self.name} v{self.version}",
            [
                ("uri", html.escape(self.uri)),
                ("aliases", badges or "none"),
                ("last test", _badge(test, self.test_passed)),
                ("flavor / task", html.escape(f"{self.flavor} / {self.task}")),
                ("run", html.escape(self.run_id)),
                ("registered", _when(self.created)),
                ("data fingerprint", html.escape(self.fingerprint[:23] + "…")),
            ],
        )


@dataclass(frozen=True)
class TestReport:
    """The outcome of ``nd.test``: one row per check."""

    __test__ = False  # not a pytest class

    name: str
    version: int
    passed: bool
    checks: pd.DataFrame = field(repr=False)
    metric: str = ""
    score: float | None = None

    def _repr_html_(self) -> str:
        rows = []
        for check in self.checks.itertuples(index=False):
            rows.append(
                (
                    str(check.check),
                    f"{_badge('pass' if check.passed else 'FAIL', bool(check.passed))} "
                    f"{html.escape(str(check.value))} "
                    f"<span style='color:#6e7781'>{html.escape(str(check.threshold))}</span>",
                )
            )
        verdict = _badge("passed" if self.passed else "failed", self.passed)
        return _table(f"nd.test {self.name}/{self.version}", rows, verdict)

    def __repr__(self) -> str:
        state = "passed" if self.passed else "failed"
        return (
            f"<TestReport {self.name}/{self.version} {state}>\n{self.checks.to_string(index=False)}"
        )


@dataclass(frozen=True)
class Deployment:
    """A running (or stopped) model server."""

    name: str
    ref: str
    url: str
    pid: int
    version: int | None = None
    token: str | None = field(default=None, repr=False)

    def predict(self, X: Any) -> pd.DataFrame:
        """Send rows to the server; returns predictions with their ids."""
        from nbdeploy.serving import client

        return client.predict(self, X)

    def status(self) -> dict[str, Any]:
        from nbdeploy.serving import client

        return client.status(self)

    def stop(self) -> None:
        from nbdeploy.serving.process import stop

        stop(self.name)

    def _repr_html_(self) -> str:
        state = self.status()
        live = state.get("status") == "ready"
        return _table(
            f"deployment {self.name}",
            [
                ("url", f"<code>{html.escape(self.url)}</code>"),
                ("serves", html.escape(f"{self.ref} (version {state.get('model_version', '?')})")),
                ("pid", str(self.pid)),
                ("requests", str(state.get("requests", ""))),
                ("predictions logged", str(state.get("predictions", ""))),
                ("warnings", html.escape("; ".join(state.get("warnings", []))) or "none"),
            ],
            _badge(state.get("status", "unknown"), live),
        )
