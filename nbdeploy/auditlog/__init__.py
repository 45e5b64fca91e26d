"""The prediction log: every served, shadow and batch prediction, append-only.

SQLite in WAL mode with ``synchronous=NORMAL``: a committed transaction survives
``kill -9`` of the writer, and a commit costs no fsync. The server writes one
transaction per micro-batch (group commit) before it releases the responses.

One row per request ("record") holds its rows columnar in one payload; a
prediction id is ``<record_id>-<row>``. This keeps a 10,000-row request at one
insert while ``logs()`` still returns one row per prediction. Records are
hash-chained (each hash covers the previous one), so editing or deleting a row
afterwards is detectable. Feedback labels and rejected-request counts live in
their own append-only tables; prediction rows are never updated.

``store`` writes and reads records (SQLite); ``payload`` encodes a record's rows;
``queries`` turns records into DataFrames. Every query of predictions, feedback and
rejections lives in this package, the place to port when the log moves to PostgreSQL.
"""

from nbdeploy.auditlog.payload import decode_inputs, decode_payload, encode_payload
from nbdeploy.auditlog.queries import META_COLUMNS, feedback, labels, logs, parse_time
from nbdeploy.auditlog.store import GENESIS, AuditLog, Record, shared

__all__ = [
    "GENESIS",
    "META_COLUMNS",
    "AuditLog",
    "Record",
    "decode_inputs",
    "decode_payload",
    "encode_payload",
    "feedback",
    "labels",
    "logs",
    "parse_time",
    "shared",
]
