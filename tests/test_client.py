"""The ``Deployment`` handle: what a notebook shows of a server is escaped text."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nbdeploy.serving.client import Deployment

HOSTILE = "<script>alert(1)</script>"


class _Hostile(BaseHTTPRequestHandler):
    """A server (or anything at its URL) answering /info with markup in every field."""

    def do_GET(self) -> None:
        info = {"status": HOSTILE, "model_version": HOSTILE, "requests": HOSTILE,
                "predictions": {"x": HOSTILE}, "warnings": [HOSTILE, 3]}  # fmt: skip
        body = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_repr_html_escapes_what_the_server_sends():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        page = Deployment(name="churn", ref="churn@champion", url=url, pid=1)._repr_html_()
    finally:
        server.shutdown()
        server.server_close()
    assert "<script" not in page and "&lt;script&gt;" in page
    assert page.count("&lt;script&gt;") == 5  # status, version, requests, predictions, warning
