"""Jupyter server extension: the authenticated REST API behind the JupyterLab panel.

Enabled on install (``jupyter-config/server-config/nbdeploy.json``), it adds::

    GET  /nbdeploy/api/models                       models, versions, aliases, tests, history
    GET  /nbdeploy/api/deployments                  status, URL, version, traffic, errors
    POST /nbdeploy/api/models/{name}/promote        {"version": 2, "alias": "champion"}
    POST /nbdeploy/api/models/{name}/rollback       {"alias": "champion"}
    POST /nbdeploy/api/deployments/{name}/stop
    GET  /nbdeploy/api/jobs                         schedules (next run, last status), runs
    POST /nbdeploy/api/schedules                    {"notebook", "every"|"cron", "parameters",
                                                     "name"}
    GET  /nbdeploy/api/schedules/preview?every=|cron=   the next three run times
    GET  /nbdeploy/api/notebooks/parameters?path=   a notebook's parameters cell, typed
    POST /nbdeploy/api/jobs/{name}/run              start a run now: {"run_id"} at once
    POST /nbdeploy/api/jobs/{name}/pause, /resume
    DELETE /nbdeploy/api/jobs/{name}                unschedule (past runs stay)
    POST /nbdeploy/api/runs/{run_id}/open           the executed notebook, as a path the
                                                     lab can open (copied in when outside)

Every handler is ``@tornado.web.authenticated`` and calls one function: the two
summaries below (plain Python, usable without Jupyter; the deployments one adds
the alerts ``nbdeploy.monitoring`` recorded, and flags drift when one of them is a drift
rule) or ``nd.promote``,
``nd.rollback``, ``nd.stop``. MLflow and the model servers are slow next to an event
loop, so that call runs in a thread. Errors are JSON ``{"message": ...}``: 4xx for
what the user can fix (unknown model, gate not passed, bad body), 500 otherwise, and
never a traceback (that goes to the server log).

The server process resolves ``NBDEPLOY_HOME`` like any other (``config.py``), so start
JupyterLab where your notebooks are, or set the variable, to see the same registry.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from nbdeploy import config
from nbdeploy.exceptions import (
    DeploymentError,
    JobError,
    ModelNotFoundError,
    NbdeployError,
    PromotionError,
)

#: Versions per model whose stored test report is read (newest first); older ones
#: still list their pass/fail state.
MAX_TESTED_VERSIONS = 50

# Any segment reaches the handler, which the API's naming rule answers with a clear 400.
_NAME = r"(?P<name>[^/]+)"


# -- what the handlers call ------------------------------------------------------------


def models_summary() -> dict[str, Any]:
    """Every registered model: versions with aliases and last test, and alias history."""
    from nbdeploy import registry

    models = []
    for name in registry.model_names():
        versions = registry.versions(name)
        history = registry.history(name)
        aliases = {a: mv.version for mv in versions for a in mv.aliases}
        newest = {mv.version for mv in versions[-MAX_TESTED_VERSIONS:]}
        rows = []
        for mv in reversed(versions):
            summary = registry.test_summary(mv) if mv.version in newest else None
            rows.append(
                {
                    "version": mv.version,
                    "aliases": sorted(a for a, v in aliases.items() if v == mv.version),
                    "created": mv.created,
                    "flavor": mv.flavor,
                    "task": mv.task,
                    "description": mv.description,
                    "test": _test(mv.test_passed, summary),
                    "job_run": mv.job_run_id,
                }
            )
        models.append(
            {
                "name": name,
                "aliases": dict(sorted(aliases.items())),
                "versions": rows,
                "history": _history(history),
            }
        )
    return {"home": str(config.settings().home), "models": models}


def deployments_summary() -> dict[str, Any]:
    """Every deployment of this home, with what its server reports on ``/info``."""
    from nbdeploy.serving import client, process

    rows = []
    for row in process.deployments().to_dict("records"):
        info: dict[str, Any] = {}
        if row["status"] == "running":
            info = client.status(process.deployment(str(row["name"])))
        requests, rejected = info.get("requests"), info.get("rejected")
        alerts = _recent_alerts(str(row["name"]))
        rows.append(
            {
                "name": row["name"],
                "ref": row["ref"],
                "url": row["url"],
                "pid": int(row["pid"]),
                "status": row["status"] if not info.get("error") else "unreachable",
                "error": info.get("error"),
                "version": info.get("model_version", _int(row["version"])),
                "alias": info.get("alias"),
                "requests": requests,
                "rejected": rejected,
                "predictions": info.get("predictions"),
                "error_rate": rejected / requests if requests and rejected is not None else None,
                "split": info.get("split") or {},
                "shadow": sorted(info.get("shadow") or {}),
                "warnings": info.get("warnings") or [],
                # flagged by a recorded drift alert; otherwise unknown, never "fine"
                "drift": True if any(a["drift"] for a in alerts) else None,
                "alerts": alerts,
            }
        )
    return {"home": str(config.settings().home), "deployments": rows}


#: Alert metrics that are about drift (``nbdeploy.monitoring.DEFAULT_RULES``).
DRIFT_METRICS = ("max_feature_psi", "dataset_drift", "prediction_psi")


def _recent_alerts(name: str, limit: int = 5) -> list[dict[str, Any]]:
    """Alerts recorded for ``name`` within the alert window, newest first."""
    from nbdeploy import monitoring

    since = time.time() - config.settings().alert_window_s
    try:
        frame = monitoring.alerts(name, limit=limit)
    except NbdeployError:  # no log yet: nothing recorded
        return []
    return [
        {
            "time": row["ts"].timestamp(),
            "rule": row["rule"],
            "message": row["message"],
            "drift": row["metric"] in DRIFT_METRICS or "drift" in str(row["metric"]),
        }
        for row in frame.to_dict("records")
        if row["ts"].timestamp() >= since
    ]


def _test(passed: bool | None, summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if passed is None and summary is None:
        return None
    summary = summary or {}
    failed = [str(c.get("check")) for c in summary.get("checks", []) if not c.get("passed")]
    return {
        "passed": passed,
        "metric": summary.get("metric"),
        "score": _number(summary.get("score")),
        "time": _number(summary.get("time")),
        "failed_checks": failed,
    }


def _history(frame: Any) -> list[dict[str, Any]]:
    events = []
    for event in frame.to_dict("records"):
        events.append(
            {
                "time": event["time"].timestamp(),
                "alias": event["alias"],
                "from_version": _int(event["from_version"]),
                "to_version": _int(event["to_version"]),
                "user": event["user"],
                "reason": event["reason"],
                "action": event["action"],
            }
        )
    return events


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value != value else int(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# -- handlers ------------------------------------------------------------------------


class _Handler(APIHandler):
    """Runs one blocking call off the event loop and answers with JSON."""

    async def _answer(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, lambda: call(*args, **kwargs))
        except NbdeployError as exc:
            self._error(_status(exc), str(exc))
            return
        except Exception as exc:  # logged with its traceback here, not sent to the browser
            self.log.exception("nbdeploy: %s failed", self.request.path)
            self._error(
                500,
                f"nbdeploy failed unexpectedly ({type(exc).__name__}); see the Jupyter server log",
            )
            return
        self.finish(json.dumps(result, default=str))

    def _error(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message}))

    def _body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "send a JSON object") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "send a JSON object")
        return body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado's own errors (bad body, 403 when not logged in): a message, no traceback
        reason = kwargs.get("exc_info", (None, None))[1]
        message = getattr(reason, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))


def _status(exc: NbdeployError) -> int:
    """404 for what does not exist, 409 for a refused alias move or a taken or busy job,
    400 for other mistakes."""
    text = str(exc)
    if isinstance(exc, ModelNotFoundError) or (
        isinstance(exc, DeploymentError | JobError)
        and ("no deployment named" in text or "no scheduled job named" in text)
    ):
        return 404
    if isinstance(exc, JobError) and ("already" in text):
        return 409
    return 409 if isinstance(exc, PromotionError) else 400


class ModelsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self._answer(models_summary)


class DeploymentsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self._answer(deployments_summary)


class PromoteHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        body = self._body()
        version, alias = body.get("version"), body.get("alias", "champion")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise tornado.web.HTTPError(400, 'send {"version": <number>, "alias": "champion"}')
        if not isinstance(alias, str) or not alias:
            raise tornado.web.HTTPError(400, "alias must be a non-empty string")
        from nbdeploy.registry import promote

        await self._answer(
            lambda: _version_json(
                promote(f"{name}/{version}", to=alias, force=body.get("force") is True)
            )
        )


class RollbackHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        alias = self._body().get("alias", "champion")
        if not isinstance(alias, str):
            raise tornado.web.HTTPError(400, "alias must be a word like 'champion'")
        from nbdeploy.registry import rollback

        await self._answer(lambda: _version_json(rollback(name, alias)))


class StopHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        from nbdeploy.serving.process import stop

        await self._answer(lambda: {"stopped": stop(name)})


class JobsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        from nbdeploy import jobboard

        await self._answer(jobboard.summary)


class SchedulesHandler(_Handler):
    @tornado.web.authenticated
    async def post(self) -> None:
        from nbdeploy import jobboard

        body, root = self._body(), self.contents_manager.root_dir
        await self._answer(lambda: jobboard.create(root, body))


class PreviewHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        from nbdeploy import jobboard

        every, cron = self.get_query_argument("every", ""), self.get_query_argument("cron", "")
        await self._answer(lambda: jobboard.preview(every or None, cron or None))


class ParametersHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        from nbdeploy import jobboard

        path, root = self.get_query_argument("path", ""), self.contents_manager.root_dir
        await self._answer(lambda: jobboard.parameters(root, path))


class JobActionHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str, action: str | None) -> None:
        from nbdeploy import scheduler

        if action is None:
            raise tornado.web.HTTPError(405, "POST to /jobs/NAME/run, /pause or /resume")
        if action == "run":
            await self._answer(lambda: {"run_id": scheduler.start_run(name)})
        else:
            change = scheduler.pause if action == "pause" else scheduler.resume
            await self._answer(lambda: {"name": name, "paused": change(name).paused})

    @tornado.web.authenticated
    async def delete(self, name: str, action: str | None) -> None:
        if action:
            raise tornado.web.HTTPError(405, "DELETE /nbdeploy/api/jobs/NAME unschedules a job")
        await self._answer(lambda: {"unscheduled": _unschedule(name)})


class OpenRunHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, run_id: str) -> None:
        from nbdeploy import jobboard

        root = self.contents_manager.root_dir
        await self._answer(lambda: jobboard.open_run(root, run_id))


def _unschedule(name: str) -> str:
    from nbdeploy import scheduler

    scheduler.unschedule(name)
    return name


def _version_json(mv: Any) -> dict[str, Any]:
    return {"name": mv.name, "version": mv.version, "aliases": list(mv.aliases)}


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server (see ``nbdeploy._jupyter_server_extension_points``)."""
    base = url_path_join(serverapp.web_app.settings["base_url"], "nbdeploy", "api")
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "models"), ModelsHandler),
            (url_path_join(base, "deployments"), DeploymentsHandler),
            (url_path_join(base, "models", _NAME, "promote"), PromoteHandler),
            (url_path_join(base, "models", _NAME, "rollback"), RollbackHandler),
            (url_path_join(base, "deployments", _NAME, "stop"), StopHandler),
            (url_path_join(base, "jobs"), JobsHandler),
            (url_path_join(base, "schedules"), SchedulesHandler),
            (url_path_join(base, "schedules", "preview"), PreviewHandler),
            (url_path_join(base, "notebooks", "parameters"), ParametersHandler),
            (
                url_path_join(base, "jobs", _NAME + r"(?:/(?P<action>run|pause|resume))?"),
                JobActionHandler,
            ),
            (url_path_join(base, "runs", r"(?P<run_id>[0-9a-f]{32})", "open"), OpenRunHandler),
        ],
    )
    serverapp.log.info("nbdeploy: REST API at %s (home %s)", base, config.settings().home)
