"""Webhooks against a real receiver on 127.0.0.1 that fails its first attempts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nbdeploy import config, webhooks
from nbdeploy.exceptions import ConfigError


@pytest.fixture
def flaky() -> Iterator[tuple[str, list[dict], list[int]]]:
    """A receiver answering with the statuses in ``plan`` (then 204), keeping every body."""
    received: list[dict] = []
    plan: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(plan.pop(0) if plan else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/SECRET-TOKEN", received, plan
    server.shutdown()
    server.server_close()


def test_failed_attempts_are_retried_with_back_off(flaky):
    url, received, plan = flaky
    plan += [500, 503, 429]
    outcome = webhooks.send(url, {"text": "hello"}, backoff_s=0.01)
    assert outcome == "sent (204) after 4 attempts"
    assert received == [{"text": "hello"}] * 4


def test_a_receiver_that_keeps_failing_or_refuses_gives_up_without_the_url(flaky):
    url, received, plan = flaky
    plan += [502] * 5
    outcome = webhooks.send(url, {"text": "x"}, attempts=3, backoff_s=0.01)
    assert outcome == "failed after 3 attempts (last: HTTP 502)" and len(received) == 3
    plan[:] = [404]
    assert webhooks.send(url, {"text": "x"}, backoff_s=0.01) == "refused (HTTP 404)"
    assert len(received) == 4  # a 4xx is the receiver's answer: not retried


def test_an_unreachable_receiver_gives_up_without_the_url():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/SECRET-TOKEN"
    outcome = webhooks.send(url, {"text": "x"}, attempts=2, backoff_s=0.01)
    assert outcome.startswith("failed after 2 attempts") and "SECRET" not in outcome


@pytest.mark.parametrize(
    "url", ["hooks.example/SECRET-TOKEN", "ftp://h/SECRET-TOKEN", "file:///SECRET-TOKEN",
            "http:///SECRET-TOKEN", "javascript:SECRET-TOKEN", "http://[SECRET-TOKEN"],
)  # fmt: skip
def test_urls_other_than_http_are_refused_when_given_and_never_echoed(url, monkeypatch):
    with pytest.raises(ConfigError) as caught:
        webhooks.check_url(url)
    assert "http:// or https://" in str(caught.value) and "SECRET" not in str(caught.value)
    monkeypatch.setenv("NBDEPLOY_ALERT_WEBHOOK", url)
    config.reset()
    try:
        with pytest.raises(ConfigError, match="NBDEPLOY_ALERT_WEBHOOK") as caught:
            config.settings()
        assert "SECRET" not in str(caught.value)
    finally:
        monkeypatch.delenv("NBDEPLOY_ALERT_WEBHOOK")
        config.reset()
