"""Webhooks: POST one JSON event to a URL, retrying with back-off, never showing the URL.

Used for fired alerts (``monitoring.alerting``) and meant for any other event (job
runs): ``check_url`` when the URL is given (a setting or an argument), ``send`` when
the event happens. A webhook URL often is the secret (chat webhooks carry their token
in the path), so neither function puts it into an error, an outcome or a log line.

``send`` never raises: the caller records the event first and stores the outcome
(``"sent (204)"``, ``"failed after 4 attempts (last: HTTP 503)"``). Connection errors,
timeouts, 429 and 5xx answers are retried after 0.5, 1, 2 s (doubling); other 4xx
answers mean the receiver refuses this event, so they are not.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from nbdeploy.exceptions import ConfigError


def check_url(url: str, *, what: str = "the webhook URL") -> str:
    """``url`` when it is ``http://`` or ``https://`` with a host; else a ConfigError."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. a malformed port or IPv6 literal
        ok = False
    if not ok:
        raise ConfigError(
            f"{what} must start with http:// or https:// and name a host, e.g. "
            "https://hooks.example.com/...; its value is not shown, as it may hold a secret"
        )
    return url


def send(
    url: str,
    event: dict[str, Any],
    *,
    attempts: int = 4,
    backoff_s: float = 0.5,
    timeout_s: float = 5.0,
) -> str:
    """POST ``event`` as JSON; returns what happened, in words without the URL."""
    body = json.dumps(event, default=str).encode()
    last = ""
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                status = int(answer.status)
            return f"sent ({status})" + (f" after {attempt} attempts" if attempt > 1 else "")
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                return f"refused ({last})"
        except urllib.error.URLError as exc:  # the reason only: its text may quote the URL
            last = type(exc.reason).__name__ if not isinstance(exc.reason, str) else "URLError"
        except Exception as exc:  # a receiver's failure must never lose the event
            last = type(exc).__name__
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    return f"failed after {attempts} attempts (last: {last})"
