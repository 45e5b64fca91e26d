"""Several models on one deployment: canary split, shadows, confidence fallbacks.

- ``Router`` picks which predictor answers a request: a split sends a fraction
  of traffic to a challenger, sticky per ``X-Routing-Key`` (a hash of the key, so
  the same key always lands on the same model) and random otherwise.
- ``ShadowRunner`` scores every answered batch with each shadow model on a thread
  of its own, after the responses were released: a slow or failing shadow never
  delays or breaks a response. When it falls behind, it drops work (counted)
  rather than grow without bound: the queue is bounded in bytes of inputs, not
  in batches, since one batch may hold one row or a million. Shadow rows share
  the request id of the answer.
- ``Policy`` replaces answers whose top-class probability is below a threshold
  by a constant, another model's answer, or ``None`` ("abstain": route to a human).
"""

from __future__ import annotations

import hashlib
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.auditlog import AuditLog, Record
from nbdeploy.serving.adapter import LoadedModel, Output
from nbdeploy.serving.batching import Predictor, concat

if TYPE_CHECKING:
    from nbdeploy.serving.batching import AliasFollower

ABSTAIN = "abstain"


@dataclass
class Policy:
    threshold: float
    #: a constant, or ``"abstain"``; ignored when ``model`` is set
    fallback: Any = ABSTAIN
    model: LoadedModel | None = None

    def describe(self) -> str:
        if self.model is not None:
            return f"{self.model.name}/{self.model.version.version}"
        return "abstain" if self.fallback == ABSTAIN else f"value {self.fallback!r}"

    def apply(self, out: Output, inputs: Any) -> Output:
        if out.proba is None:
            return out
        low = out.proba.max(axis=1) < self.threshold
        answer = out.predictions.astype(object)
        reasons = np.full(len(low), None, dtype=object)
        if low.any():
            if self.model is not None:
                rows = (
                    inputs[low]
                    if isinstance(inputs, np.ndarray)
                    else {name: values[low] for name, values in inputs.items()}
                )
                answer[low] = self.model.predict(rows).predictions
                why = f"confidence below {self.threshold}: answered by {self.describe()}"
            elif self.fallback == ABSTAIN:
                answer[low] = None
                why = f"confidence below {self.threshold}: abstained, route to human review"
            else:
                answer[low] = self.fallback
                why = f"confidence below {self.threshold}: fallback value"
            reasons[low] = why
        return Output(answer, out.proba, low, reasons, out.predictions)


class Router:
    """Chooses the predictor that answers a request."""

    def __init__(self, primary: Predictor, splits: list[tuple[str, Predictor, float]]) -> None:
        self.primary = primary
        self.splits = splits  # (ref, predictor, fraction)

    def choose(self, routing_key: bytes | None) -> Predictor:
        if not self.splits:
            return self.primary
        if routing_key:
            digest = hashlib.blake2b(routing_key, digest_size=8).digest()
            u = int.from_bytes(digest, "big") / 2.0**64
        else:
            u = random.random()
        edge = 0.0
        for _, predictor, fraction in self.splits:
            edge += fraction
            if u < edge:
                return predictor
        return self.primary

    def predictors(self) -> list[Predictor]:
        return [self.primary, *(p for _, p, _ in self.splits)]


class Shadow:
    """One shadow model slot; ``current`` is swapped by its alias follower."""

    def __init__(self, ref: str, model: LoadedModel) -> None:
        self.ref = ref
        self.current = model
        self.follower: AliasFollower | None = None
        self.failures = 0


class ShadowRunner(threading.Thread):
    """Scores answered batches with every shadow, off the response path."""

    def __init__(
        self,
        deployment: str,
        shadows: list[Shadow],
        names: list[str],
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(name="nbdeploy-shadows", daemon=True)
        self.deployment = deployment
        self.shadows = shadows
        self.names = names
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._lock = threading.Lock()
        self.queue: queue.Queue[tuple[list[tuple[Any, str, int]], int]] = queue.Queue()
        self.stats: Counter[str] = Counter()

    def offer(self, items: list[tuple[Any, str, int]]) -> None:
        if not self.shadows:
            return
        size = sum(_nbytes(inputs) for inputs, _, _ in items)
        with self._lock:
            if self.queued_bytes + size > self.max_bytes:
                self.stats["dropped_rows"] += sum(n for _, _, n in items)
                return
            self.queued_bytes += size
        self.queue.put_nowait((items, size))

    def run(self) -> None:
        log = AuditLog()  # its own connection: SQLite connections stay on one thread
        while True:
            items, size = self.queue.get()
            for shadow in list(self.shadows):
                try:
                    inputs = concat([i for i, _, _ in items], self.names)
                    self._score(log, shadow, inputs, items)
                except Exception as exc:  # this thread must outlive any one bad batch
                    self.stats["failures"] += 1
                    print(f"nbdeploy: shadow {shadow.ref} failed: {type(exc).__name__}", flush=True)
            with self._lock:  # only now are the inputs free
                self.queued_bytes -= size

    def _score(
        self, log: AuditLog, shadow: Shadow, inputs: Any, items: list[tuple[Any, str, int]]
    ) -> None:
        model = shadow.current
        started = time.perf_counter()
        try:
            out = model.predict(inputs)
        except Exception as exc:
            shadow.failures += 1
            self.stats["failures"] += 1
            if shadow.failures <= 3:
                print(f"nbdeploy: shadow {shadow.ref} failed: {type(exc).__name__}", flush=True)
            return
        per_row_ms = (time.perf_counter() - started) * 1000.0 / max(len(out.predictions), 1)
        records, start = [], 0
        for rows, request_id, n in items:
            payload, logged = Predictor._payload(model, rows, out.rows(start, start + n))
            records.append(
                Record(
                    request_id=request_id,
                    deployment=self.deployment,
                    model_name=model.name,
                    model_version=model.version.version,
                    alias=model.alias,
                    role="shadow",
                    n_rows=n,
                    latency_ms=per_row_ms * n,
                    payload=payload,
                    inputs=logged,
                )
            )
            start += n
        try:
            log.append(records)
            self.stats["rows"] += start
        except Exception as exc:  # the answer was already given; count and go on
            self.stats["failures"] += 1
            print(f"nbdeploy: shadow log write failed: {type(exc).__name__}", flush=True)

    def remove(self, ref: str) -> bool:
        for shadow in list(self.shadows):
            if _matches(ref, shadow.ref, shadow.current):
                self.shadows.remove(shadow)
                if shadow.follower is not None:
                    shadow.follower.stopped.set()
                return True
        return False


def _nbytes(inputs: Any) -> int:
    """Memory held by parsed inputs; a Python object in a column counts 64 bytes."""
    arrays = inputs.values() if isinstance(inputs, dict) else [inputs]
    return sum(a.nbytes * (8 if a.dtype.kind == "O" else 1) for a in map(np.asarray, arrays))


def _matches(ref: str, slot_ref: str, model: LoadedModel) -> bool:
    short = ref.removeprefix("models:/")
    version = f"{model.name}/{model.version.version}"
    return short in (slot_ref.removeprefix("models:/"), version)


def retire(router: Router, runner: ShadowRunner | None, ref: str) -> bool:
    """Take a challenger out of traffic: from the shadows or from the split."""
    if runner is not None and runner.remove(ref):
        return True
    for entry in list(router.splits):
        slot_ref, predictor, _ = entry
        if _matches(ref, slot_ref, predictor.current):
            router.splits.remove(entry)
            return True
    return False
