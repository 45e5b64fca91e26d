"""The prediction log: every served, shadow and batch prediction, append-only.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed transaction survives
``kill -9`` of the writer, and a commit costs no fsync. The server writes one
transaction per micro-batch (group commit) before it releases the responses.

One row per request ("record") holds its rows columnar in one payload; a
prediction id is ``<record_id>-<row>``. This keeps a 10,000-row request at one
insert while ``logs()`` still returns one row per prediction. Records are
hash-chained, as are feedback labels and fired alerts (each in its own append-only
table), so editing, reordering or deleting an entry afterwards is detectable; with
``NBDEPLOY_AUDIT_KEY`` the chain is keyed and anchored outside the database, so forged
and truncated tails are too (``nd.verify``). Prediction rows are never updated, except
that ``nd.erase`` and retention may remove their inputs (the chain keeps per-row
digests). Rejected requests are counted per minute and code.

``chain`` hashes and checks entries and ``anchor`` keeps the newest hashes outside,
whatever the storage; ``store`` (writes) and ``reading`` (reads) are the SQLite
storage, all of its SQL; ``payload`` encodes a record's outputs and inputs; ``queries``
turns records into DataFrames; ``verifying`` checks the whole log; ``privacy`` holds pii
policies, erasure and retention; ``maintenance`` anchors, checkpoints and expires in the
background. A PostgreSQL backend is one more module with the methods of
``store.AuditLog``.
"""

from nbdeploy.auditlog.chain import GENESIS
from nbdeploy.auditlog.payload import (
    decode_inputs,
    decode_payload,
    decode_record,
    encode_inputs,
    encode_payload,
)
from nbdeploy.auditlog.privacy import erase
from nbdeploy.auditlog.queries import (
    META_COLUMNS,
    LogTail,
    feedback,
    labels,
    logs,
    parse_time,
)
from nbdeploy.auditlog.store import AuditLog, Record, parse_prediction_id, shared
from nbdeploy.auditlog.verifying import VerifyReport, verify

__all__ = [
    "GENESIS",
    "META_COLUMNS",
    "AuditLog",
    "LogTail",
    "Record",
    "VerifyReport",
    "decode_inputs",
    "decode_payload",
    "decode_record",
    "encode_inputs",
    "encode_payload",
    "erase",
    "feedback",
    "labels",
    "logs",
    "parse_prediction_id",
    "parse_time",
    "shared",
    "verify",
]
