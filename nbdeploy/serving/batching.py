"""Micro-batching: concurrent requests share one predict call and one commit.

Requests append to ``pending``; the first one schedules a flush with
``call_soon``, so every request parsed in the same event-loop turn joins the
batch, with no timer and no added latency when traffic is light. The flush
predicts once, writes one audit-log transaction (group commit) and only then
releases the responses, so an acknowledged prediction is durable.

The event loop never waits for the log's write lock. When the writer thread is idle
and the lock is free at once, the loop commits the batch itself (a SQLite commit
without fsync, 0.1-0.15 ms): handing it to another thread and back cost more than
that, and on one core committing here cut a request's CPU by about 13%. Otherwise
the batch goes to one writer thread of its own: when another process holds the lock,
health and every other route keep answering while the batch waits, and after
``wait_s`` its requests get an error (a 503) rather than an answer without its row.
Batches that arrive meanwhile predict and queue behind it; the single writer keeps
the chain in commit order.

A running server follows its alias: a thread polls the registry, loads and warms
up the new version, then swaps one reference. A request remembers the version
whose schema parsed it, and that version answers and logs it, even when the
alias moved between parsing and the batch: columns parsed for one version are
never fed to another.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nbdeploy.auditlog import AuditLog, Record, encode_inputs, encode_payload
from nbdeploy.auditlog.store import ordered_id
from nbdeploy.exceptions import AuditLogError, DeploymentError, NbdeployError, SchemaError
from nbdeploy.serving.adapter import LoadedModel, Output, load


# What a predictor needs from routing (``routing.Policy``, ``routing.ShadowRunner``),
# stated here so that batching never imports routing, which builds on it.
class AnswerPolicy(Protocol):
    def apply(self, out: Output, inputs: Any) -> Output: ...

    def describe(self) -> str: ...


class ShadowSink(Protocol):
    def offer(self, items: list[tuple[Any, str, int]]) -> None: ...


@dataclass
class Pending:
    inputs: np.ndarray | dict[str, Any]
    n_rows: int
    started: float
    future: asyncio.Future[Answer]
    #: the version whose schema parsed ``inputs``: it answers them
    model: LoadedModel
    request_id: str = field(default_factory=lambda: ordered_id(16))  # indexed: see ordered_id


@dataclass
class Answer:
    predictions: Any
    prediction_ids: list[str]
    version: int
    proba: Any = None
    classes: list[Any] | None = None
    fallback: list[bool] | None = None
    reasons: list[str | None] | None = None


def _jsonable(array: np.ndarray) -> Any:
    # orjson serializes numeric and bool arrays natively, not object or text arrays
    return array.tolist() if array.dtype.kind in "OUS" else array


class LogWriter(ThreadPoolExecutor):
    """The one thread that commits to the log, and whether it has work: while it has,
    the event loop must not use the log's connection (the thread may be mid-transaction
    on it) and a batch queues behind it, in chain order.

    Work is submitted from the event loop's thread only, and finished on the writer's:
    each counter is changed by one thread only, so comparing them needs no lock."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="nbdeploy-audit")
        self.submitted = self.finished = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(self._counted, fn, *args, **kwargs)

    def _counted(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            self.finished += 1

    def idle(self) -> bool:
        return self.submitted == self.finished


class Predictor:
    """Gathers requests into micro-batches for the current model version."""

    def __init__(
        self,
        deployment: str,
        model: LoadedModel,
        log: AuditLog,
        *,
        policy: AnswerPolicy | None = None,
        shadows: ShadowSink | None = None,
        writer: LogWriter | None = None,
        wait_s: float = 2.0,
    ) -> None:
        self.deployment = deployment
        self.current = model
        self.log = log
        #: Confidence threshold and fallback applied to this model's answers.
        self.policy = policy
        #: Gets every answered batch after its responses are released.
        self.shadows = shadows
        #: the one thread that commits to the log (None: commit inline, as a script would)
        self.writer = writer
        #: how long a batch may wait for the log before its requests fail
        self.wait_s = wait_s
        self.pending: list[Pending] = []
        self.scheduled = False
        self.stats = {"batches": 0, "predictions": 0, "batch_rows_max": 0}

    async def submit(
        self,
        inputs: np.ndarray | dict[str, Any],
        n_rows: int,
        started: float,
        request_id: str | None = None,
        *,
        model: LoadedModel | None = None,
    ) -> Answer:
        """Answer one request; ``model`` is the version whose schema parsed ``inputs``
        (default: the current one)."""
        loop = asyncio.get_running_loop()
        item = Pending(inputs, n_rows, started, loop.create_future(), model or self.current)
        if request_id:
            item.request_id = request_id
        self.pending.append(item)
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)
        return await item.future

    def flush(self) -> None:
        batch, self.pending, self.scheduled = self.pending, [], False
        groups: dict[int, list[Pending]] = {}
        for item in batch:  # one group, unless the alias moved while requests were parsed
            groups.setdefault(id(item.model), []).append(item)
        for group in groups.values():
            try:
                self._flush(group, group[0].model)
            except BaseException as exc:  # whatever broke, no request may wait forever
                self._broken(group, exc)
                if not isinstance(exc, Exception):
                    raise

    @staticmethod
    def _broken(batch: list[Pending], exc: BaseException) -> None:
        print(f"nbdeploy: batch failed: {type(exc).__name__}", flush=True)
        for item in batch:
            _fail(item.future, exc)

    def _flush(self, batch: list[Pending], model: LoadedModel) -> None:
        outputs = self._predict(model, batch)
        records, answers = [], []
        done = time.perf_counter()
        for i, (item, out) in enumerate(zip(batch, outputs, strict=True)):
            if isinstance(out, BaseException):
                continue
            try:
                payload, inputs = self._payload(model, item.inputs, out)
            except Exception as exc:  # e.g. an output type the log cannot store
                outputs[i] = DeploymentError(
                    f"the model's output could not be logged ({type(exc).__name__}), so no "
                    "prediction was returned; see the deployment log"
                )
                continue
            record = Record(
                request_id=item.request_id,
                deployment=self.deployment,
                model_name=model.name,
                model_version=model.version.version,
                alias=model.alias,
                role="served",
                n_rows=item.n_rows,
                latency_ms=(done - item.started) * 1000.0,
                payload=payload,
                inputs=inputs,
            )
            records.append(record)
            answers.append(
                (
                    item,
                    Answer(
                        _jsonable(out.predictions),
                        record.prediction_ids(),
                        model.version.version,
                        out.proba,
                        model.classes,
                        None if out.fallback is None else out.fallback.tolist(),
                        None if out.reasons is None else out.reasons.tolist(),
                    ),
                )
            )
        error: BaseException | None = None
        try:
            if records and not self._commit_here(records):
                self._queue(batch, outputs, answers, records)  # released once committed
                return
        except AuditLogError as exc:
            error = exc
        self._release(batch, outputs, answers, error)

    def _commit_here(self, records: list[Record]) -> bool:
        """Commit on the event loop's thread if that cannot wait (see the module's
        docstring); False: nothing written, the writer thread must."""
        if self.writer is None:  # a script's predictor: commit here, waiting if need be
            self.log.append(records)
            return True
        return self.writer.idle() and self.log.append_now(records)

    def _queue(
        self,
        batch: list[Pending],
        outputs: list[Output | BaseException],
        answers: list[tuple[Pending, Answer]],
        records: list[Record],
    ) -> None:
        """Hand the commit to the writer thread; the batch is released when it is done."""
        assert self.writer is not None
        deadline = time.monotonic() + self.wait_s
        written = asyncio.get_running_loop().run_in_executor(
            self.writer, self._write, records, deadline
        )

        def release(written: asyncio.Future[None]) -> None:
            try:
                self._release(batch, outputs, answers, written.exception())
            except BaseException as exc:
                self._broken(batch, exc)

        written.add_done_callback(release)

    def _write(self, records: list[Record], deadline: float) -> None:
        """On the writer thread: a batch that already waited its turn too long fails
        without queueing for the lock again, so waits do not add up behind a lock."""
        if time.monotonic() > deadline:
            raise AuditLogError("the audit log stayed locked; nothing was written")
        self.log.append(records)

    def _release(
        self,
        batch: list[Pending],
        outputs: list[Output | BaseException],
        answers: list[tuple[Pending, Answer]],
        error: BaseException | None,
    ) -> None:
        """Answer the batch once its rows are committed (or fail those that were not)."""
        if error is not None:
            for item, _ in answers:
                _fail(item.future, error)
            answers = []
        for item, out in zip(batch, outputs, strict=True):
            if isinstance(out, BaseException):
                _fail(item.future, out)
        for item, answer in answers:
            if not item.future.done():
                item.future.set_result(answer)
        if self.shadows is not None and answers:
            self.shadows.offer([(item.inputs, item.request_id, item.n_rows) for item, _ in answers])
        self.stats["batches"] += 1
        self.stats["predictions"] += sum(item.n_rows for item, _ in answers)
        self.stats["batch_rows_max"] = max(
            self.stats["batch_rows_max"], sum(item.n_rows for item in batch)
        )

    def _predict(self, model: LoadedModel, batch: list[Pending]) -> list[Output | BaseException]:
        """One predict for the whole batch; on failure, isolate the request that broke it."""
        try:
            inputs = _concat(batch, model)
            out = model.predict(inputs)
            if self.policy is not None:
                out = self.policy.apply(out, inputs)
        except Exception:
            if len(batch) == 1:
                return [
                    SchemaError(
                        "the model could not score these rows; check the values "
                        "against what it was trained on"
                    )
                ]
            return [self._predict(model, [item])[0] for item in batch]
        results: list[Output | BaseException] = []
        start = 0
        for item in batch:
            results.append(out.rows(start, start + item.n_rows))
            start += item.n_rows
        return results

    @staticmethod
    def _payload(
        model: LoadedModel, inputs: np.ndarray | dict[str, Any], out: Output
    ) -> tuple[bytes, bytes]:
        """(outputs, inputs) as the log stores them; the model's pii policy applies."""
        body: dict[str, Any] = {
            "columns": model.schema.names,
            "predictions": _jsonable(out.predictions),
        }
        if out.proba is not None:
            body["proba"] = out.proba
            body["classes"] = model.classes
        if out.fallback is not None and out.reasons is not None and out.raw is not None:
            body["fallback"] = out.fallback
            body["fallback_reason"] = out.reasons.tolist()
            body["model_prediction"] = _jsonable(out.raw)
        return encode_payload(body), encode_inputs(
            model.schema.names, inputs, model.meta.get("pii")
        )


def _concat(batch: list[Pending], model: LoadedModel) -> np.ndarray | dict[str, Any]:
    return concat([item.inputs for item in batch], model.schema.names)


def concat(parts: list[np.ndarray | dict[str, Any]], names: list[str]) -> Any:
    """Join the inputs of several requests: one matrix if all are matrices, else columns."""
    if len(parts) == 1:
        return parts[0]
    matrices = [p for p in parts if isinstance(p, np.ndarray)]
    if len(matrices) == len(parts):
        return np.concatenate(matrices)
    return {
        name: np.concatenate([p[:, j] if isinstance(p, np.ndarray) else p[name] for p in parts])
        for j, name in enumerate(names)
    }


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class AliasFollower(threading.Thread):
    """Polls the registry; on an alias move, loads and warms up, then swaps.

    ``columns``: in a deployment of several models, every version must take the same
    columns (requests are parsed once, for all of them); a version that does not is
    refused, and the current one keeps serving. ``on_swap`` runs after each swap.
    """

    #: seconds before an ask that got no answer, or whose version did not load, is
    #: made again though the registry did not change
    retry_s = 30.0

    def __init__(
        self,
        predictor: Any,
        name: str,
        alias: str,
        every: float,
        trust_unverified: bool = False,
        columns: list[str] | None = None,
    ) -> None:
        super().__init__(name="nbdeploy-alias-follower", daemon=True)
        self.predictor, self.model_name, self.alias = predictor, name, alias
        self.every, self.trust, self.columns = every, trust_unverified, columns
        self.stopped = threading.Event()
        self.last_error: str | None = None
        self.on_swap: Any = None
        self._refused: int | None = None

    def run(self) -> None:
        from nbdeploy import registry

        # the version loaded at start-up was resolved just before: nothing to ask until
        # the registry changes (so MLflow is not imported while the first requests run)
        stamp, retry_at = registry.store_stamp(), math.inf
        while not self.stopped.wait(self.every):
            try:
                # An MLflow query holds the GIL for milliseconds, a request's whole budget,
                # and the first one imports MLflow: seconds. A SQLite registry is asked
                # only when its files changed (every write to it changes them); other
                # stores have no files to watch and are asked every time.
                fresh_stamp = registry.store_stamp()
                unchanged = fresh_stamp is not None and fresh_stamp == stamp
                if unchanged and time.monotonic() < retry_at:
                    continue
                # until an ask ends well (an answer, and its version loaded), ask again
                # in ``retry_s`` rather than only at the registry's next write: the store
                # may have been busy, or the alias removed for a while
                stamp, retry_at = fresh_stamp, time.monotonic() + self.retry_s
                holder = registry.alias_holder(self.model_name, self.alias)
                current = self.predictor.current.version.version
                if holder is None:
                    continue
                if holder in (current, self._refused):
                    retry_at = math.inf
                    continue
                fresh = load(
                    f"{self.model_name}/{holder}",
                    trust_unverified=self.trust,
                    runtime=self.predictor.current.runtime,
                )
                if self.columns is not None and fresh.schema.names != self.columns:
                    self._refused = holder
                    raise DeploymentError(
                        f"{self.model_name}/{holder} takes other columns than this deployment; "
                        f"still serving version {current}"
                    )
                fresh.alias = self.alias
                self.predictor.current = fresh  # one reference swap; batches read it once
                self.last_error, retry_at = None, math.inf
                print(
                    f"nbdeploy: {self.model_name}@{self.alias} now serves version {holder}",
                    flush=True,
                )
                if self.on_swap is not None:
                    self.on_swap()
            except NbdeployError as exc:
                self.last_error = str(exc)
                print(f"nbdeploy: alias follow failed: {exc}", flush=True)
            except Exception as exc:  # keep serving the current version whatever happens
                self.last_error = type(exc).__name__
                print(f"nbdeploy: alias follow failed: {self.last_error}", flush=True)
