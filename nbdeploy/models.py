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
    #: The job run (``nd.jobs()``'s ``run_id``) whose notebook registered this version.
    job_run_id: str | None = None

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
        cell = "style='text-align:left;padding:2px 12px 2px 0'"
        head = "".join(f"<th {cell}>{h}</th>" for h in ("check", "value", "required", "result"))
        rows = []
        for check in self.checks.itertuples(index=False):
            value = f"{check.value:.4g}" if isinstance(check.value, float) else str(check.value)
            required = "–" if check.threshold in (None, "none") else str(check.threshold)
            verdict = _badge("pass" if check.passed else "FAIL", bool(check.passed))
            rows.append(
                f"<tr><td {cell}>{html.escape(str(check.check))}</td>"
                f"<td {cell}>{html.escape(value)}</td><td {cell}>{html.escape(required)}</td>"
                f"<td {cell}>{verdict}</td></tr>"
            )
        verdict = _badge("passed" if self.passed else "failed", self.passed)
        title = html.escape(f"nd.test {self.name}/{self.version}")
        return (
            f"<div><b>{title}</b> {verdict}<table style='{_STYLE}'><tr>{head}</tr>"
            f"{''.join(rows)}</table></div>"
        )

    def __repr__(self) -> str:
        state = "passed" if self.passed else "failed"
        return (
            f"<TestReport {self.name}/{self.version} {state}>\n{self.checks.to_string(index=False)}"
        )


@dataclass(frozen=True)
class Comparison:
    """Champion and challengers of one deployment, side by side (``nd.compare``)."""

    name: str
    champion_version: int
    champion_alias: str | None
    metric: str
    #: one row per model: version, role, rows, agreement, latency, fallback rate,
    #: the metric on labelled rows with its 95% interval, and the verdict
    table: pd.DataFrame = field(repr=False)
    #: share of each predicted value (or decile) per model
    distributions: pd.DataFrame = field(repr=False)
    #: challenger version -> "challenger is better" / "... worse" / "not yet known (...)"
    verdicts: dict[int, str] = field(default_factory=dict)

    def _repr_html_(self) -> str:
        def number(value: Any, digits: int = 3) -> str:
            return "–" if value is None or value != value else f"{value:.{digits}f}"

        head = (
            "<tr>"
            + "".join(
                f"<th style='padding:2px 8px'>{h}</th>"
                for h in (
                    "version",
                    "role",
                    "rows",
                    "agreement",
                    "p50 ms",
                    "fallback",
                    self.metric,
                    "95% CI",
                    "verdict",
                )
            )
            + "</tr>"
        )
        body = []
        for r in self.table.itertuples(index=False):
            verdict = str(r.verdict)
            ok = True if "better" in verdict else False if "worse" in verdict else None
            body.append(
                "<tr>"
                + "".join(
                    f"<td style='padding:2px 8px'>{c}</td>"
                    for c in (
                        f"v{r.model_version}",
                        html.escape(str(r.role)),
                        r.rows,
                        number(r.agreement),
                        number(r.latency_ms_p50, 2),
                        number(r.fallback_rate),
                        number(getattr(r, self.metric)),
                        f"[{number(r.ci_low)}, {number(r.ci_high)}]",
                        _badge(verdict, ok) if verdict != "reference" else "reference",
                    )
                )
                + "</tr>"
            )
        bars = []
        for value, shares in self.distributions.iterrows():
            cells = "".join(
                f"<td style='padding:1px 6px'><div style='background:#0969da;height:9px;"
                f"width:{100 * share:.0f}px;display:inline-block'></div> {100 * share:.0f}%</td>"
                for share in shares
            )
            bars.append(
                f"<tr><th style='text-align:left;padding:1px 6px'>"
                f"{html.escape(str(value))}</th>{cells}</tr>"
            )
        dist_head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.distributions.columns)
        return (
            f"<div><b>compare {html.escape(self.name)}</b> (champion v{self.champion_version})"
            f"<table style='{_STYLE}'>{head}{''.join(body)}</table>"
            f"<div style='margin-top:6px;color:#555'>prediction distribution</div>"
            f"<table style='{_STYLE}'><tr><th></th>{dist_head}</tr>{''.join(bars)}</table>"
            "</div>"
        )


@dataclass(frozen=True)
class JobRun:
    """One run of a parameterized notebook (``nd.run_job``), recorded as an MLflow run."""

    run_id: str
    notebook: str
    #: ``"succeeded"`` or ``"failed"`` (a timeout is a failure).
    status: str
    #: The executed notebook (kept on failure too, marked where it stopped).
    output_path: str | None
    #: Which cell failed and why; None on success.
    error: str | None
    #: What the notebook reported with ``nbdeploy.runner.report``.
    results: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    kernel: str = ""
    started: float = 0.0
    duration_s: float = 0.0
    #: Model versions the job registered (``name/version``).
    produced: tuple[str, ...] = ()
    failed_cell: int | None = None
    #: The schedule's name when the scheduler started it.
    name: str | None = None
    #: Alias moves the job made when it succeeded (``name/version@alias``).
    promoted: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def _repr_html_(self) -> str:
        results = ", ".join(f"{k}={v!r}" for k, v in self.results.items())
        params = ", ".join(f"{k}={v!r}" for k, v in self.parameters.items())
        return _table(
            f"job {self.name or self.notebook.rsplit('/', 1)[-1]}",
            [
                ("run", html.escape(self.run_id)),
                ("parameters", html.escape(params) or "none"),
                ("results", html.escape(results) or "none"),
                ("produced", html.escape(", ".join(self.produced)) or "nothing"),
                ("promoted", html.escape(", ".join(self.promoted)) or "nothing"),
                (
                    "error",
                    f"<span style='color:#cf222e'>{html.escape(self.error)}</span>"
                    if self.error
                    else "none",
                ),
                ("executed notebook", f"<code>{html.escape(self.output_path or '')}</code>"),
                ("kernel", html.escape(self.kernel)),
                ("started", _when(self.started)),
                ("duration", f"{self.duration_s:.1f} s"),
            ],
            _badge(self.status, self.succeeded),
        )


@dataclass(frozen=True)
class ScheduledJob:
    """A recurring job stored for the embedded scheduler (``nd.schedule``)."""

    name: str
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    every_s: float | None = None
    cron: str | None = None
    cwd: str = ""
    timeout: float | None = None
    kernel: str | None = None
    created: float = 0.0
    #: Next scheduled time (epoch seconds) after now.
    next_run: float = 0.0
    #: Not run at its times until resumed.
    paused: bool = False
    #: Times missed while no scheduler ran are run later, oldest first.
    catchup: bool = False
    #: Times before this one are never caught up (creation, or the last resume).
    since: float = 0.0

    @property
    def when(self) -> str:
        return f"cron {self.cron}" if self.cron else f"every {self.every_s:g} s"

    def _repr_html_(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.parameters.items())
        return _table(
            f"scheduled job {self.name}",
            [
                ("notebook", f"<code>{html.escape(self.notebook)}</code>"),
                ("when", html.escape(self.when)),
                ("parameters", html.escape(params) or "none"),
                ("next run", _when(self.next_run)),
                (
                    "runs",
                    "with <code>nbdeploy scheduler</code> (or "
                    "<code>nbdeploy.scheduler.start()</code>)",
                ),
            ],
        )


@dataclass(frozen=True)
class AuditRecord:
    """Everything known about one logged prediction (``nd.audit``)."""

    prediction_id: str
    timestamp: float
    model_name: str
    model_version: int
    #: The alias the answering version held at that time (from the promotion history).
    alias: str | None
    #: The MLflow run that registered the version.
    run_id: str
    data_fingerprint: str
    training_notebook: str | None
    #: The logged inputs; None once erased (``nd.erase`` or retention).
    inputs: dict[str, Any] | None
    output: Any
    #: Per-feature contributions (``feature -> value``), largest magnitude first.
    explanation: dict[str, float]
    #: The audit log's hash chain checks out for this prediction's record.
    verified: bool
    role: str = ""
    request_id: str = ""
    #: Class probabilities when the model gives them.
    proba: dict[str, float] | None = None
    #: How the explanation was computed ("linear", "shapley", "shap").
    explanation_method: str = ""
    #: Re-scoring the logged input with the recorded version gives the logged output.
    reproduced: bool | None = None
    #: The job run that trained the version, if a job did.
    job_run_id: str | None = None
    git_commit: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The inputs were erased; ``erasure`` says when, why and what was kept.
    erased: bool = False
    erasure: str | None = None

    def _repr_html_(self) -> str:
        inputs = (
            ", ".join(f"{k}={v!r}" for k, v in self.inputs.items())
            if self.inputs is not None
            else self.erasure or "erased"
        )
        top = list(self.explanation.items())[:8]
        bars = "".join(f"<div><code>{html.escape(k)}</code> {v:+.4g}</div>" for k, v in top)
        reproduced = {None: "not checked", True: "yes", False: "NO"}[self.reproduced]
        return _table(
            f"audit {self.prediction_id}",
            [
                ("time", _when(self.timestamp)),
                (
                    "model",
                    html.escape(
                        f"{self.model_name} v{self.model_version}"
                        + (f" @{self.alias}" if self.alias else "")
                    ),
                ),
                ("role", html.escape(self.role)),
                ("inputs", html.escape(inputs)),
                (
                    "output",
                    html.escape(repr(self.output))
                    + (f" {html.escape(repr(self.proba))}" if self.proba else ""),
                ),
                ("explanation", f"{bars}<i>{html.escape(self.explanation_method)}</i>"),
                ("reproduces", _badge(reproduced, self.reproduced)),
                ("registered by run", html.escape(self.run_id)),
                ("training notebook", html.escape(self.training_notebook or "unknown")),
                ("job run", html.escape(self.job_run_id or "none")),
                ("git commit", html.escape(self.git_commit or "none")),
                ("data fingerprint", html.escape(self.data_fingerprint)),
            ],
            _badge("log verified" if self.verified else "LOG TAMPERED", self.verified),
        )


class Stopped(list[str]):
    """What ``nd.stop`` returns: the names of the deployments it stopped (a list),
    shown as a sentence rather than a bare ``['churn']``."""

    def __repr__(self) -> str:
        if not self:
            return "no deployment was running"
        names = ", ".join(self)
        return f"stopped deployment{'s' * (len(self) > 1)} {names}"

    def _repr_html_(self) -> str:
        return f"<span>{html.escape(repr(self))}</span>"
