"""The HTTP face of a deployment: a small ASGI app, no framework.

A framework's routing, request objects and validation layers cost more than the
predict itself for single rows, so this app reads the body, parses it with
orjson and hands column arrays straight to the batcher. Bad input gets a JSON
error with a code and a message that names the column but never echoes values;
it is counted (without payload) and never reaches the log or the model.

Before any route runs, a request passes the gates a server on a network needs:
its Host header must be one this server answers to (a web page cannot rebind a
name to 127.0.0.1 and read answers), the bearer token, a per-token rate limit
(429), a bound on requests in flight (503 at once rather than an endless queue),
and a POST must say ``application/json`` or ``text/csv`` (a cross-site form
cannot). Bodies must arrive within ``body_timeout_s``; large ones are parsed on a
thread, so a 60 MiB request does not stop health checks or small requests. No
CORS header is ever sent.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import os
import sqlite3
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

from nbdeploy.auditlog import AuditLog, parse_prediction_id
from nbdeploy.exceptions import AuditLogError, SchemaError
from nbdeploy.serving import wire
from nbdeploy.serving.batching import AliasFollower, Predictor
from nbdeploy.serving.metrics import Metrics
from nbdeploy.serving.openapi import openapi
from nbdeploy.serving.routing import Router, ShadowRunner, retire

_JSON = [(b"content-type", b"application/json")]
# health answers without a token: Kubernetes and KServe probe readiness with a plain GET
_OPEN = {"/health", "/ping", "/v2/health/live", "/v2/health/ready"}
_MEDIA = ("application/json", "text/csv")
#: bodies up to this size are parsed on the event loop; larger ones on a thread
_INLINE_BYTES = 256 * 1024
_STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "schema_violation": 422,
    "too_many_requests": 429,
    "unavailable": 503,
}
_EXTRA_HEADERS = {
    408: [(b"connection", b"close")],
    429: [(b"retry-after", b"1")],
    503: [(b"retry-after", b"1")],
}


class HttpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, _STATUS[code]


class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second, bursts of ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, max(1.0, rate)
        self.buckets: dict[bytes, tuple[float, float]] = {}

    def allow(self, key: bytes) -> bool:
        now = time.monotonic()
        if len(self.buckets) > 10_000:  # anonymous callers by address: keep memory bounded
            self.buckets.clear()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class App:
    """ASGI application serving one deployment."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        token: str | None = None,
        follower: AliasFollower | None = None,
        max_body_bytes: int,
        max_rows: int,
        ref: str = "",
        router: Router | None = None,
        shadows: ShadowRunner | None = None,
        on_change: Callable[[], None] | None = None,
        allowed_hosts: frozenset[str] | None = None,
        max_concurrent: int = 256,
        rate_limit: float = 0.0,
        body_timeout_s: float = 30.0,
        writer: Executor | None = None,
        counters: Callable[[Metrics, dict[str, int]], tuple[Metrics, dict[str, int]]] | None = None,
    ) -> None:
        """``allowed_hosts``: Host header names accepted (None: any); ``writer``: the
        thread that writes to the audit log (None: write inline)."""
        self.predictor = predictor
        self.router = router or Router(predictor, [])
        self.shadows = shadows
        self.on_change = on_change
        #: adds the other workers' counters to this one's (``--workers N``)
        self.counters = counters
        self.token = f"Bearer {token}".encode() if token else None
        self.follower = follower
        self.max_body, self.max_rows = max_body_bytes, max_rows
        self.ref = ref
        self.metrics = Metrics()
        self.started = time.time()
        self.log: AuditLog = predictor.log
        self._rejections: list[tuple[float, str, str, str, int]] = []
        self.allowed_hosts = allowed_hosts
        self.max_concurrent = max_concurrent
        self.active = 0
        self.limiter = RateLimiter(rate_limit) if rate_limit > 0 else None
        self.body_timeout_s = body_timeout_s
        self.writer = writer
        #: turns a parser's refusals into HTTP errors (stateless: one for every request)
        self._refusals = _ParseErrors(self)
        # at most two large bodies are parsed at once: each may hold a lot of memory
        self.parser = ThreadPoolExecutor(2, thread_name_prefix="nbdeploy-parse")

    @property
    def model(self) -> Any:
        return self.predictor.current

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        path: str = scope["path"]
        oip = path.startswith("/v2/")
        gated = path not in _OPEN
        if gated:
            self.active += 1
        try:
            if gated:
                self._admit(scope)
            status, body, headers = await self._route(scope, receive, path, started)
        except HttpError as exc:
            status, headers = exc.status, _JSON + _EXTRA_HEADERS.get(exc.status, [])
            body = orjson.dumps(
                {"error": exc.message}
                if oip
                else {"error": {"code": exc.code, "message": exc.message}}
            )
            self.metrics.rejected(exc.code)
            if path in ("/invocations", "/feedback") or oip:
                self._count_rejection(exc)
        except Exception as exc:  # a bug must not take the server down or leak details
            # where, but not the message: it may quote the submitted values
            where = "".join(traceback.format_tb(exc.__traceback__))
            print(f"nbdeploy: internal error on {path}: {type(exc).__name__}\n{where}", flush=True)
            status, headers = 500, _JSON
            body = orjson.dumps(
                {"error": {"code": "internal", "message": "internal error; see the deployment log"}}
            )
        finally:
            if gated:
                self.active -= 1
        self.metrics.observe(path, status, time.perf_counter() - started)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _stats(self) -> dict[str, int]:
        """Batch and prediction counts over every model that answers (canaries included)."""
        predictors = self.router.predictors()
        return {key: sum(p.stats[key] for p in predictors) for key in ("batches", "predictions")}

    def totals(self) -> tuple[Metrics, dict[str, int]]:
        """This process's counters, or every worker's when the deployment has several."""
        stats = self._stats()
        return self.counters(self.metrics, stats) if self.counters else (self.metrics, stats)

    def _count_rejection(self, exc: HttpError) -> None:
        """Queue a rejection count; one commit per 0.2 s writes them, so a flood of bad
        requests costs the event loop one transaction, not one per request."""
        self._rejections.append(
            (time.time(), self.predictor.deployment, self.model.name, exc.code, exc.status)
        )
        if len(self._rejections) == 1:
            asyncio.get_running_loop().call_later(0.2, self._write_rejections)

    def _write_rejections(self) -> None:
        rows, self._rejections = self._rejections, []
        if self.writer is not None:
            self.writer.submit(self.log.reject, rows)
        else:
            self.log.reject(rows)

    def _admit(self, scope: dict[str, Any]) -> None:
        """The gates every route but health passes, cheapest first; no message echoes
        what the client sent."""
        headers = scope["headers"]
        if self.allowed_hosts is not None:
            host = next((v for k, v in headers if k == b"host"), b"")
            if _hostname(host) not in self.allowed_hosts:
                raise HttpError(
                    "bad_request",
                    "this server does not answer to that Host header; "
                    "a server bound beyond loopback accepts the hosts in NBDEPLOY_ALLOWED_HOSTS",
                )
        credential = next((v for k, v in headers if k == b"authorization"), None)
        if self.token is not None and not hmac.compare_digest(credential or b"", self.token):
            raise HttpError(
                "unauthorized",
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
            )
        if self.limiter is not None:
            client = scope.get("client") or ("",)
            if not self.limiter.allow(credential or str(client[0]).encode()):
                raise HttpError("too_many_requests", "over the rate limit; retry in a second")
        if self.active > self.max_concurrent:
            raise HttpError(
                "unavailable",
                f"the server is busy ({self.max_concurrent} requests in flight); retry shortly",
            )
        if scope["method"] == "POST" and _content_type(scope) not in _MEDIA:
            raise HttpError(
                "unsupported_media_type",
                "send the body as application/json (or text/csv to /invocations)",
            )

    async def _in_thread(self, work: Callable[[], Any], size: int) -> Any:
        """Run CPU-heavy parsing of a large body off the event loop."""
        if size <= _INLINE_BYTES:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self.parser, work)

    async def _route(
        self, scope: dict[str, Any], receive: Any, path: str, started: float
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method = scope["method"]
        if path == "/invocations":
            _allow(method, "POST")
            return await self._invocations(scope, receive, started)
        if path in ("/health", "/ping", "/v2/health/live", "/v2/health/ready"):
            return 200, orjson.dumps({"status": "ready"}), _JSON
        if path == "/metrics":
            metrics, stats = self.totals()
            text = metrics.render(self.model, stats)
            return 200, text.encode(), [(b"content-type", b"text/plain; version=0.0.4")]
        if path == "/info":
            return 200, orjson.dumps(self.info()), _JSON
        if path == "/openapi.json":
            return 200, orjson.dumps(openapi(self.model, self.predictor.deployment)), _JSON
        if path == "/feedback":
            _allow(method, "POST")
            return await self._feedback(scope, receive)
        if path == "/admin/retire":
            _allow(method, "POST")
            return await self._retire(scope, receive)
        if path.startswith("/v2/models/"):
            return await self._oip(scope, receive, path, started)
        raise HttpError(
            "not_found",
            f"no route {path}; see /invocations, /v2/models/"
            f"{self.model.name}/infer, /health, /metrics",
        )

    def info(self) -> dict[str, Any]:
        model = self.model
        metrics, stats = self.totals()
        counts = metrics.counts()
        return {
            "status": "ready",
            "deployment": self.predictor.deployment,
            "ref": self.ref,
            "model_name": model.name,
            "model_version": model.version.version,
            "alias": model.alias,
            "pid": os.getpid(),
            "started": self.started,
            "requests": counts["requests"],
            "rejected": counts["rejected"],
            "predictions": stats["predictions"],
            "warnings": model.warnings
            + (
                [f"alias follow: {self.follower.last_error}"]
                if self.follower and self.follower.last_error
                else []
            ),
            "split": {
                ref: {"version": p.current.version.version, "fraction": fraction}
                for ref, p, fraction in self.router.splits
            },
            "shadow": {
                s.ref: {"version": s.current.version.version, "failures": s.failures}
                for s in (self.shadows.shadows if self.shadows else [])
            },
            "shadow_stats": dict(self.shadows.stats) if self.shadows else {},
            "policy": self.predictor.policy.describe() if self.predictor.policy else None,
        }

    async def _retire(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        data = parse_json(await self._body(scope, receive))
        if not isinstance(data, dict) or not isinstance(data.get("ref"), str):
            raise HttpError("bad_request", 'send {"ref": "name@alias or name/version"}')
        if not retire(self.router, self.shadows, data["ref"]):
            raise HttpError("not_found", "that model is not a challenger of this deployment")
        if self.on_change is not None:
            self.on_change()
        return 200, orjson.dumps({"retired": data["ref"]}), _JSON

    async def _body(self, scope: dict[str, Any], receive: Any) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise HttpError(
                    "payload_too_large",
                    f"the body is over {self.max_body} bytes; "
                    "score large data with nd.score instead",
                )
        # a deadline for the whole body, not per read: a byte a second keeps no slot
        task = asyncio.current_task()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            if task is not None:
                task.cancel()

        timer = asyncio.get_running_loop().call_later(self.body_timeout_s, expire)
        chunks, size = [], 0
        try:
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise HttpError(
                        "payload_too_large",
                        f"the body is over {self.max_body} bytes; "
                        "score large data with nd.score instead",
                    )
                chunks.append(chunk)
                if not message.get("more_body"):
                    return b"".join(chunks) if len(chunks) != 1 else chunks[0]
        except asyncio.CancelledError:
            if not expired:
                raise
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            raise HttpError(
                "request_timeout", f"the body did not arrive within {self.body_timeout_s:g} s"
            ) from None
        finally:
            timer.cancel()

    async def _invocations(
        self, scope: dict[str, Any], receive: Any, started: float
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        kind = _content_type(scope)
        body = await self._body(scope, receive)
        predictor = self._choose(scope)
        model = predictor.current  # this version's schema parses the body, and it answers
        parse = functools.partial(self._parse_invocation, model.schema, kind, body)
        inputs, n = await self._in_thread(parse, len(body))
        answer = await self._submit(predictor, model, inputs, n, started)
        out: dict[str, Any] = {
            "predictions": answer.predictions,
            "prediction_ids": answer.prediction_ids,
            "model_version": str(answer.version),
        }
        if answer.fallback is not None:
            out["fallback"] = answer.fallback
            out["fallback_reason"] = answer.reasons
        return 200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), _JSON

    def _parse_invocation(self, schema: Any, kind: str, body: bytes) -> tuple[Any, int]:
        """Parse and check an ``/invocations`` body, counting rows as it goes."""
        with self._refusals:
            if kind == "text/csv":
                inputs = wire.from_csv(schema, body, max_rows=self.max_rows)
            else:
                wire.check_json_rows(body, self.max_rows)
                booleans = b"true" in body or b"false" in body  # memchr-fast; see from_rows
                inputs = wire.from_mlflow_json(schema, parse_json(body), may_hold_booleans=booleans)
        return inputs, self._counted(inputs)

    def _counted(self, inputs: Any) -> int:
        n = _rows(inputs)
        if n > self.max_rows:
            raise self._too_many()
        return n

    def _too_many(self) -> HttpError:
        return HttpError(
            "payload_too_large",
            f"over the limit of {self.max_rows} rows per request; "
            "score large data with nd.score instead",
        )

    def _choose(self, scope: dict[str, Any]) -> Predictor:
        key = None
        if self.router.splits:
            key = next((v for k, v in scope["headers"] if k == b"x-routing-key"), None)
        return self.router.choose(key)

    async def _submit(
        self, predictor: Predictor, model: Any, inputs: Any, n: int, started: float
    ) -> Any:
        try:
            return await predictor.submit(inputs, n, started, model=model)
        except SchemaError as exc:
            raise HttpError(exc.code, str(exc)) from None
        except AuditLogError:
            raise HttpError(
                "unavailable",
                "the audit log cannot be written, so no prediction was made; retry later",
            ) from None

    async def _feedback(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        data = parse_json(await self._body(scope, receive))
        if not isinstance(data, dict) or set(data) != {"prediction_ids", "labels"}:
            raise HttpError("bad_request", 'send {"prediction_ids": [...], "labels": [...]}')
        ids, labels = data["prediction_ids"], data["labels"]
        if not isinstance(ids, list) or not isinstance(labels, list):
            raise HttpError("bad_request", "prediction_ids and labels must be lists")
        add = functools.partial(
            self.log.add_feedback, self.model.name, [str(i) for i in ids], labels, source="http"
        )
        try:
            for pid in ids:  # a malformed id is a bad request, not an unknown prediction
                parse_prediction_id(pid)
        except AuditLogError as exc:
            raise HttpError("bad_request", str(exc)) from None
        try:
            if self.writer is None:
                recorded = add()
            else:  # the log's connection lives on the writer thread, and it may wait
                recorded = await asyncio.get_running_loop().run_in_executor(self.writer, add)
        except AuditLogError as exc:
            if isinstance(exc.__cause__, sqlite3.Error):
                raise HttpError(
                    "unavailable", "the audit log cannot be written now; retry later"
                ) from None
            raise HttpError("schema_violation", str(exc)) from None
        return 200, orjson.dumps({"recorded": recorded}), _JSON

    async def _oip(
        self, scope: dict[str, Any], receive: Any, path: str, started: float
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        parts = path.strip("/").split("/")  # v2 models NAME [versions V] [infer|ready]
        model = self.model
        if len(parts) < 3 or parts[2] not in (model.name, self.predictor.deployment):
            raise HttpError(  # the name in the URL is not echoed: it is the client's text
                "not_found", f"that model is not served here; this server serves {model.name!r}"
            )
        action = parts[-1] if len(parts) in (4, 6) else ""
        if action == "ready":
            return 200, orjson.dumps({"name": model.name, "ready": True}), _JSON
        if action != "infer":
            return 200, orjson.dumps(wire.oip_metadata(model)), _JSON
        _allow(scope["method"], "POST")
        if _content_type(scope) != "application/json":
            raise HttpError("unsupported_media_type", "send application/json")
        body = await self._body(scope, receive)
        predictor = self._choose(scope)
        model = predictor.current
        parse = functools.partial(self._parse_oip, model.schema, body)
        data, inputs, n = await self._in_thread(parse, len(body))
        answer = await self._submit(predictor, model, inputs, n, started)
        request_id = data.get("id") if isinstance(data.get("id"), str) else None
        return (
            200,
            orjson.dumps(
                wire.oip_response(model.name, answer, request_id), option=orjson.OPT_SERIALIZE_NUMPY
            ),
            _JSON,
        )

    def _parse_oip(self, schema: Any, body: bytes) -> tuple[Any, Any, int]:
        with self._refusals:
            wire.check_json_rows(body, self.max_rows * max(len(schema.columns), 1), oip=True)
            data = parse_json(body)
            booleans = b"true" in body or b"false" in body  # as in _invocations
            inputs = wire.from_oip(schema, data, may_hold_booleans=booleans)
        return data, inputs, self._counted(inputs)


class _ParseErrors:
    """A parser's refusals as HTTP errors: too many rows, a schema error (a plain class,
    not a generator-based context manager: this is on every request's path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, wire.TooManyRows):
            raise self.app._too_many() from None
        if isinstance(exc, SchemaError):
            raise HttpError(exc.code, str(exc)) from None


def parse_json(body: bytes) -> Any:
    """orjson first; MLflow's client sends NaN/Infinity tokens, which only json takes."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise HttpError("bad_request", "the JSON is nested too deeply") from None
        if b"NaN" not in body and b"Infinity" not in body:
            raise HttpError("bad_request", "the body is not valid JSON") from None
    try:
        data = json.loads(body)
        orjson.dumps(data)  # refuses lone surrogates, which SQLite would refuse later
    except RecursionError:
        raise HttpError("bad_request", "the JSON is nested too deeply") from None
    except (ValueError, TypeError, orjson.JSONEncodeError):
        raise HttpError("bad_request", "the body is not valid JSON") from None
    return data


def _content_type(scope: dict[str, Any]) -> str:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower().decode("latin-1")
    return ""


def _hostname(host: bytes) -> str:
    """The name in a Host header, without the port: ``[::1]:80`` -> ``[::1]``."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[: text.find("]") + 1]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _allow(method: str, expected: str) -> None:
    if method != expected:
        raise HttpError("method_not_allowed", f"use {expected} on this route")


def _rows(inputs: Any) -> int:
    if isinstance(inputs, np.ndarray):
        return int(inputs.shape[0])
    return len(next(iter(inputs.values())))
