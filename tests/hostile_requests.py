"""A catalogue of hand-written hostile requests, each with the answer it must get.

Beside the generated ones (``benchmarks/bench_fuzz.py``, schemathesis driven by
``/openapi.json``), these are the requests a reviewer or an attacker would try
first. :func:`check` sends one to a live server and asserts its status and code,
a JSON error body, and that the answer echoes nothing of what was sent (every
payload carries :data:`MARK`). ``tests/test_http_hardening.py`` runs them all;
the fuzz benchmark runs them too, before and after its generated traffic.

The server under test must have a token, ``NBDEPLOY_MAX_ROWS`` of :data:`MAX_ROWS`
and ``NBDEPLOY_MAX_BODY_BYTES`` of :data:`MAX_BODY`, and serve the churn model
(columns :data:`COLUMNS`).
"""

from __future__ import annotations

import json
import select
import socket
from dataclasses import dataclass, field
from typing import Any

MARK = "HOSTILE-7f3e"
MAX_ROWS = 50
MAX_BODY = 64 * 1024
COLUMNS = ["tenure_months", "monthly_charges", "support_calls", "contract"]
ROW = [12, 70.5, 1, MARK]
RECORD = dict(zip(COLUMNS, ROW, strict=True))
JSON = "application/json"


@dataclass(frozen=True)
class Hostile:
    name: str
    status: int
    code: str
    method: str = "POST"
    path: str = "/invocations"
    body: bytes = b""
    ctype: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)
    #: send the right token (False: the case is about authentication itself)
    auth: bool = True


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _csv(rows: int) -> bytes:
    lines = [",".join(COLUMNS)] + [f"12,70.5,1,{MARK}"] * rows
    return ("\n".join(lines) + "\n").encode()


CASES: list[Hostile] = [
    # cross-site requests: a web page can send these without a preflight
    Hostile("no-content-type", 415, "unsupported_media_type", body=_j({"instances": [RECORD]}),
            ctype=None),
    Hostile("form-post", 415, "unsupported_media_type", body=f"x={MARK}".encode(),
            ctype="application/x-www-form-urlencoded"),
    Hostile("multipart", 415, "unsupported_media_type", body=MARK.encode(),
            ctype="multipart/form-data; boundary=x"),
    Hostile("text-plain", 415, "unsupported_media_type", body=_j({"instances": [RECORD]}),
            ctype="text/plain"),
    Hostile("feedback-text-plain", 415, "unsupported_media_type", path="/feedback",
            body=_j({"prediction_ids": [MARK], "labels": [1]}), ctype="text/plain"),
    Hostile("feedback-no-content-type", 415, "unsupported_media_type", path="/feedback",
            body=_j({"prediction_ids": [MARK], "labels": [1]}), ctype=None),
    Hostile("retire-form", 415, "unsupported_media_type", path="/admin/retire",
            body=f"ref={MARK}".encode(), ctype="application/x-www-form-urlencoded"),
    Hostile("retire-no-content-type", 415, "unsupported_media_type", path="/admin/retire",
            body=_j({"ref": MARK}), ctype=None),
    Hostile("v2-csv", 415, "unsupported_media_type", path="/v2/models/churn/infer",
            body=_csv(1), ctype="text/csv"),
    # DNS rebinding: a name that resolves to 127.0.0.1 but is not a loopback name
    Hostile("rebound-host", 400, "bad_request", body=_j({"instances": [RECORD]}),
            headers={"host": "attacker.example"}),
    Hostile("rebound-host-get", 400, "bad_request", method="GET", path="/info",
            headers={"host": "attacker.example:80"}),
    Hostile("empty-host", 400, "bad_request", method="GET", path="/metrics",
            headers={"host": ""}),
    # authentication
    Hostile("no-token", 401, "unauthorized", body=_j({"instances": [RECORD]}), auth=False),
    Hostile("wrong-token", 401, "unauthorized", body=_j({"instances": [RECORD]}), auth=False,
            headers={"authorization": f"Bearer {MARK}"}),
    Hostile("basic-auth", 401, "unauthorized", body=_j({"instances": [RECORD]}), auth=False,
            headers={"authorization": "Basic SE9TVElMRS03ZjNlOng="}),
    Hostile("token-in-query", 401, "unauthorized", method="GET", path="/info?token=x",
            auth=False),
    Hostile("openapi-needs-token", 401, "unauthorized", method="GET", path="/openapi.json",
            auth=False),
    # limits: bytes, rows (counted while parsing), nesting
    Hostile("declared-huge-body", 413, "payload_too_large", body=_j({"instances": [RECORD]}),
            headers={"content-length": str(10**12)}),
    Hostile("body-over-limit", 413, "payload_too_large",
            body=_j({"instances": [RECORD] * 2000})),
    Hostile("split-too-many-rows", 413, "payload_too_large",
            body=_j({"dataframe_split": {"columns": COLUMNS, "data": [ROW] * (MAX_ROWS + 1)}})),
    Hostile("records-too-many-rows", 413, "payload_too_large",
            body=_j({"dataframe_records": [RECORD] * (MAX_ROWS + 1)})),
    Hostile("columns-too-many-rows", 413, "payload_too_large",
            body=_j({"inputs": {c: [v] * (MAX_ROWS + 1) for c, v in RECORD.items()}})),
    Hostile("csv-too-many-rows", 413, "payload_too_large", body=_csv(MAX_ROWS + 1),
            ctype="text/csv"),
    Hostile("v2-too-many-rows", 413, "payload_too_large", path="/v2/models/churn/infer",
            body=_j({"inputs": [{"name": c, "shape": [MAX_ROWS + 1], "datatype": "BYTES",
                                 "data": [v] * (MAX_ROWS + 1)} for c, v in RECORD.items()]})),
    # rows are counted while reading: the limit answers before the malformed tail is seen
    Hostile("csv-too-many-rows-then-garbage", 413, "payload_too_large", ctype="text/csv",
            body=_csv(MAX_ROWS * 20) + b"\xff\xfe,,,,,\n"),
    Hostile("json-too-many-rows-then-garbage", 413, "payload_too_large",
            body=_j({"dataframe_split": {"columns": COLUMNS, "data": [ROW] * (MAX_ROWS + 1)}})[:-3]
            + b", [}}}"),
    Hostile("top-level-array", 400, "bad_request", body=_j([RECORD] * 3)),
    Hostile("deep-nesting", 400, "bad_request",
            body=b'{"instances": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
    Hostile("deep-nesting-nan", 400, "bad_request",
            body=b'{"instances": ' + b"[" * 5_000 + b"NaN" + b"]" * 5_000 + b"}"),
    # malformed bodies
    Hostile("nul-bytes", 400, "bad_request", body=b'{"instances": [\x00' + MARK.encode() + b"]}"),
    Hostile("truncated-json", 400, "bad_request", body=_j({"instances": [RECORD]})[:-3]),
    Hostile("lone-surrogate", 400, "bad_request",
            body=b'{"instances": [{"contract": "\\ud800' + MARK.encode() + b'"}]}'),
    Hostile("two-formats", 400, "bad_request",
            body=_j({"instances": [RECORD], "dataframe_records": [RECORD]})),
    Hostile("csv-open-quote", 400, "bad_request", ctype="text/csv",
            body=(",".join(COLUMNS) + f'\n12,70.5,1,"{MARK}\n').encode()),
    Hostile("csv-not-utf8", 400, "bad_request", ctype="text/csv",
            body=(",".join(COLUMNS) + "\n12,70.5,1,").encode() + b"\xff\xfe" + MARK.encode()),
    Hostile("csv-duplicate-header", 400, "bad_request", ctype="text/csv",
            body=(",".join([*COLUMNS, "contract"]) + f"\n12,70.5,1,{MARK},x\n").encode()),
    Hostile("v2-negative-shape", 400, "bad_request", path="/v2/models/churn/infer",
            body=_j({"inputs": [{"name": "contract", "shape": [-1], "datatype": "BYTES",
                                 "data": [MARK]}]})),
    # schema
    Hostile("huge-number", 400, "bad_request",
            body=b'{"instances": [{"tenure_months": 1e999, "monthly_charges": 1, '
            b'"support_calls": 1, "contract": "' + MARK.encode() + b'"}]}'),
    Hostile("text-in-number", 422, "schema_violation",
            body=_j({"instances": [{**RECORD, "tenure_months": MARK}]})),
    Hostile("extra-column", 422, "schema_violation",
            body=_j({"instances": [{**RECORD, "x": MARK}]})),
    Hostile("csv-missing-column", 422, "schema_violation", ctype="text/csv",
            body=(",".join(COLUMNS[:3]) + "\n12,70.5,1\n").encode()),
    # routes and methods
    Hostile("get-invocations", 405, "method_not_allowed", method="GET"),
    Hostile("put-feedback", 405, "method_not_allowed", method="PUT", path="/feedback",
            body=_j({"prediction_ids": [MARK], "labels": [1]})),
    Hostile("path-traversal", 404, "not_found", method="GET", path="/v2/models/../../etc/passwd"),
    Hostile("unknown-model", 404, "not_found", path="/v2/models/other/infer",
            body=_j({"inputs": []})),
    Hostile("retire-unknown", 404, "not_found", path="/admin/retire", body=_j({"ref": MARK})),
    Hostile("feedback-malformed-id", 400, "bad_request", path="/feedback",
            body=_j({"prediction_ids": [MARK + "-\u00b2"], "labels": [1]})),
    Hostile("feedback-unknown-id", 422, "schema_violation", path="/feedback",
            body=_j({"prediction_ids": ["0123456789abcdef0123-0"], "labels": [MARK]})),
]  # fmt: skip


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def send(url: str, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
    """One request over a raw socket: exactly these headers go out (no client adds a
    content type or fixes a Host or a Content-Length), and the connection closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sent = {"host": f"{host}:{port}", "content-length": str(len(body)), **headers}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + b"connection: close\r\n\r\n")
        # a large body may be refused on its headers alone, and the server then closes:
        # look for that answer first, or sending the body would reset the connection
        early = len(body) > 65536 and select.select([sock], [], [], 1.0)[0]
        if not early and int(sent["content-length"]) == len(body):
            sock.sendall(body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    raw_head, _, payload = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
    if fields.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return Answer(int(lines[0].split()[1]), fields, payload.decode("utf-8", "replace"))


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2 :]
    return out


def check(url: str, case: Hostile, token: str) -> Answer:
    """Send ``case`` to the server at ``url``; assert the answer it must get."""
    headers = {"content-type": case.ctype} if case.ctype else {}
    if case.auth:
        headers["authorization"] = f"Bearer {token}"
    headers.update(case.headers)
    response = send(url, case.method, case.path, headers, case.body)
    where = f"{case.name}: {response.status} {response.text[:200]}"
    assert response.status == case.status, where
    assert response.headers["content-type"] == "application/json", where
    error = response.json()["error"]
    if case.path.startswith("/v2/"):
        assert isinstance(error, str) and error, where  # OIP's error shape
    else:
        assert error["code"] == case.code, where
    assert MARK not in response.text, f"{case.name}: the answer echoes the payload"
    assert token not in response.text, f"{case.name}: the answer echoes the token"
    assert not any(k.startswith("access-control-") for k in response.headers), where
    return response
