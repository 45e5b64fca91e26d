"""Prometheus counters for one server, rendered as text on ``/metrics``."""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.buckets = [0] * (len(_BUCKETS) + 1)
        self.seconds = 0.0
        self.observed = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = (
            path
            if path in ("/invocations", "/feedback")
            else ("/v2/infer" if path.endswith("/infer") else "other")
        )
        self.requests[(route, status)] += 1
        if route != "other":
            self.buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
            self.seconds += seconds
            self.observed += 1

    def rejected(self, code: str) -> None:
        self.errors[code] += 1

    def counts(self) -> dict[str, int]:
        return {
            "requests": sum(n for (route, _), n in self.requests.items() if route != "other"),
            "rejected": sum(self.errors.values()),
        }

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-able values (what a worker shares with the others)."""
        return {
            "requests": [[route, status, n] for (route, status), n in self.requests.items()],
            "errors": dict(self.errors),
            "buckets": list(self.buckets),
            "seconds": self.seconds,
            "observed": self.observed,
        }

    @classmethod
    def total(cls, snapshots: list[dict[str, Any]]) -> Metrics:
        """The sum of several snapshots (every worker of one deployment)."""
        total = cls()
        for snap in snapshots:
            for route, status, n in snap.get("requests", []):
                total.requests[(route, int(status))] += int(n)
            total.errors.update({k: int(v) for k, v in snap.get("errors", {}).items()})
            for i, n in enumerate(snap.get("buckets", [])[: len(total.buckets)]):
                total.buckets[i] += int(n)
            total.seconds += float(snap.get("seconds", 0.0))
            total.observed += int(snap.get("observed", 0))
        return total

    def render(self, model: Any, stats: dict[str, int]) -> str:
        lines = [
            "# HELP nbdeploy_requests_total HTTP requests by route and status.",
            "# TYPE nbdeploy_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'nbdeploy_requests_total{{route="{route}",status="{status}"}} {n}')
        lines += [
            "# HELP nbdeploy_rejected_total Rejected requests by error code.",
            "# TYPE nbdeploy_rejected_total counter",
        ]
        for code, n in sorted(self.errors.items()):
            lines.append(f'nbdeploy_rejected_total{{code="{code}"}} {n}')
        lines += [
            "# HELP nbdeploy_request_seconds Time to answer prediction requests.",
            "# TYPE nbdeploy_request_seconds histogram",
        ]
        running = 0
        for bound, n in zip((*_BUCKETS, float("inf")), self.buckets, strict=True):
            running += n
            label = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'nbdeploy_request_seconds_bucket{{le="{label}"}} {running}')
        lines += [
            f"nbdeploy_request_seconds_sum {self.seconds:.6f}",
            f"nbdeploy_request_seconds_count {self.observed}",
            "# TYPE nbdeploy_predictions_total counter",
            f"nbdeploy_predictions_total {stats['predictions']}",
            "# TYPE nbdeploy_batches_total counter",
            f"nbdeploy_batches_total {stats['batches']}",
            "# TYPE nbdeploy_model_version gauge",
            f'nbdeploy_model_version{{model="{model.name}"}} {model.version.version}',
        ]
        return "\n".join(lines) + "\n"
