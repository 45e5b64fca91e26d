"""The hash chain, independent of where the log is stored.

Every entry of the three evidence tables (prediction ``records``, ``feedback``,
``alerts``) is one link of its table's chain::

    hash = MAC(prev_hash || content)        MAC = HMAC-SHA256(NBDEPLOY_AUDIT_KEY), or SHA-256

``content`` is the entry's fields as canonical JSON followed by the digests of its
blobs. A prediction record's blobs are its outputs (``payload``, digested whole) and
its inputs, digested *per row*: the chain covers ``sha256(d_0 || d_1 || ...)`` where
``d_i`` is the digest of row ``i``'s inputs. Erasing a row's inputs keeps ``d_i`` in
the row's place (see :func:`erase_rows`), so the chain and every other row of the
request still verify while the erased values are gone.

With a key, nobody without it can re-hash an edited entry or forge a new one; the
newest hashes are also kept outside the database (:mod:`nbdeploy.auditlog.anchor`),
which catches deleted tails. A storage backend (SQLite today, PostgreSQL next) only
stores ``prev_hash`` and ``hash`` beside the fields and feeds rows to :func:`walk`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import orjson

from nbdeploy.auditlog.payload import decode_payload, encode_payload

GENESIS = "0" * 64
FORMAT = 2
TABLES = ("records", "feedback", "alerts")

#: Columns of each table that its chain covers, in order (``hash``/``prev_hash`` aside).
RECORD_FIELDS = ("record_id", "request_id", "ts", "deployment", "model_name", "model_version",
                 "alias", "role", "n_rows", "latency_ms")  # fmt: skip
FEEDBACK_FIELDS = ("prediction_id", "model_name", "deployment", "ts", "source")
#: ``webhook`` (how delivery went) is not evidence and may be updated after the fact.
ALERT_FIELDS = ("ts", "deployment", "rule", "metric", "op", "threshold", "value", "window_s",
                "message")  # fmt: skip
FLOATS = {"ts", "latency_ms", "threshold", "value", "window_s"}
INTS = {"model_version", "n_rows"}


class Chain:
    """Links entries: HMAC-SHA256 with the audit key, plain SHA-256 without one."""

    def __init__(self, key: str | bytes | None) -> None:
        self._key = key.encode() if isinstance(key, str) else key
        #: Names the key without revealing it (stored in the log and the anchor), "" if none.
        self.key_id = (
            hmac.new(self._key, b"nbdeploy audit key id", hashlib.sha256).hexdigest()[:16]
            if self._key
            else ""
        )

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def link(self, prev: str, content: bytes) -> str:
        data = prev.encode() + content
        if self._key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def mac(self, data: bytes) -> str:
        """A tag over ``data`` (the anchor file), keyed when the chain is."""
        return self.link("anchor", data)


def _scalar(name: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if name in FLOATS:
            number = float(value)
            return None if number != number else number  # NaN is stored as NULL
        if name in INTS:
            return int(value)
    except (TypeError, ValueError):  # edited to another type: hash what is there
        return f"{type(value).__name__}:{value}"
    return str(value)


def content(names: tuple[str, ...], values: Iterable[Any], *digests: bytes) -> bytes:
    """Canonical bytes of one entry: its typed fields as JSON, then its blobs' digests."""
    fields = [_scalar(n, v) for n, v in zip(names, values, strict=True)]
    return b"\x1e".join([orjson.dumps(fields), *digests])


def _digest(blob: Any) -> bytes:
    # a value edited in place may come back as text: it must fail the MAC, not crash
    return hashlib.sha256(blob if isinstance(blob, bytes) else str(blob).encode()).digest()


def record_content(fields: Iterable[Any], payload: bytes, inputs: bytes) -> bytes:
    """Content of a prediction record: fields, outputs digest, per-row inputs digest."""
    try:
        rows = inputs_digest(inputs)
    except Exception:  # not an inputs blob any more: cannot match what was chained
        rows = b"unreadable inputs"
    return content(RECORD_FIELDS, fields, _digest(payload), rows)


def feedback_content(fields: Iterable[Any], label: bytes) -> bytes:
    return content(FEEDBACK_FIELDS, fields, _digest(label))


def alert_content(fields: Iterable[Any]) -> bytes:
    return content(ALERT_FIELDS, fields)


# -- inputs, one digest per row ---------------------------------------------------------


def row_digests(inputs: bytes) -> list[bytes]:
    """The digest of every row of an inputs blob (erased rows: the digest kept for them).

    Computed from the stored form, so the writer and any later verifier agree byte for
    byte: a numeric matrix row is its raw bytes, a row of mixed columns is its JSON.
    """
    return _row_digests(decode_payload(inputs))[1]


def _row_digests(body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """(how the rows are typed, one digest per row) of a decoded inputs blob."""
    erased = {int(i): bytes.fromhex(e[0]) for i, e in body.get("erased", {}).items()}
    digests: list[bytes]
    if "data" in body:
        data = np.ascontiguousarray(body["data"])
        data = data.reshape(len(data), -1)
        kind = b"data " + data.dtype.str.encode()
        # a view with one raw-bytes element per row (tolist() gives bytes): one C call
        # per row hashes it
        width = data.shape[1] * data.dtype.itemsize
        raw = cast(list[bytes], data.view(np.dtype((np.void, width))).ravel().tolist())
        digests = [h.digest() for h in map(hashlib.sha256, raw)]
    elif "columnar" in body:
        kind = b"columnar " + orjson.dumps(body.get("passthrough", []))  # their names too
        columns = zip(*body["columnar"], strict=True)
        digests = [hashlib.sha256(orjson.dumps(row)).digest() for row in columns]
    else:  # every row erased: the typing was kept beside the digests
        kind = str(body.get("kind", "")).encode()
        digests = [b""] * (max(erased) + 1 if erased else 0)
    for i, digest in erased.items():
        digests[i] = digest
    return kind, digests


def inputs_digest(inputs: bytes) -> bytes:
    """sha256 over how the rows are typed and every row's digest."""
    kind, digests = _row_digests(decode_payload(inputs))
    return hashlib.sha256(kind + b"\x1e" + b"".join(digests)).digest()


def erase_rows(inputs: bytes, rows: Iterable[int], when: float, why: str) -> bytes:
    """The inputs blob with ``rows`` removed: values become null (NaN in a numeric
    matrix), and each erased row keeps only its digest, when and why."""
    body = decoded = decode_payload(inputs)
    kind, digests = _row_digests(body)
    erased: dict[str, Any] = dict(body.get("erased", {}))
    wanted = sorted({int(r) for r in rows} - {int(i) for i in erased})
    if not wanted:
        return inputs
    for i in wanted:
        erased[str(i)] = [digests[i].hex(), when, why]
    if "data" in body:
        data = np.array(body["data"])  # same dtype: the other rows' digests stay the same
        data[wanted] = np.nan if data.dtype.kind == "f" else 0
        body = {"kind": kind.decode()} if len(erased) == len(data) else {"data": data}
    elif "columnar" in body:
        columns = [list(c) for c in body["columnar"]]
        for column in columns:
            for i in wanted:
                column[i] = None
        body = {"kind": kind.decode()} if len(erased) == len(digests) else {"columnar": columns}
    if "passthrough" in decoded:  # the names of passthrough columns, stored after the features
        body["passthrough"] = decoded["passthrough"]
    body["erased"] = erased
    return encode_payload(body)


def erasures(inputs: bytes) -> dict[int, tuple[float, str]]:
    """Row -> (when, why) of every erased row of an inputs blob."""
    body = decode_payload(inputs)
    return {int(i): (float(e[1]), str(e[2])) for i, e in body.get("erased", {}).items()}


# -- verification -----------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """One place where the chain does not hold."""

    table: str
    seq: int
    entry: str
    reason: str

    def __str__(self) -> str:
        what = f"{self.table} #{self.seq}" + (f" ({self.entry})" if self.entry else "")
        return f"{what}: {self.reason}"


@dataclass
class TableCheck:
    """What :func:`walk` found in one table."""

    table: str
    entries: int = 0
    breaks: list[Break] = field(default_factory=list)
    unanchored: int = 0
    head: tuple[int, str] | None = None


def walk(
    table: str,
    entries: Iterable[tuple[int, str, str, str, bytes, str]],
    chain: Chain,
    anchored: tuple[int, str] | None,
    *,
    prev: str = GENESIS,
    belongs: Callable[[str], bool] | None = None,
) -> TableCheck:
    """Check a table's chain from ``prev`` on; ``entries`` are (seq, id, prev_hash,
    hash, content, owner) in seq order, ``anchored`` the (seq, hash) kept outside.

    A changed field or blob fails its MAC (keyed: nobody can recompute it); a deleted,
    inserted or moved entry breaks the next entry's link; a deleted tail or a re-hashed
    rewrite no longer contains the anchored hash. Entries after the anchor are counted
    as unanchored (e.g. the last seconds before a crash): intact, but not vouched for.
    ``belongs(owner)``: count only those entries, and report breaks from the first of
    them on (a break before a name's first entry does not touch it).
    """
    check = TableCheck(table)
    seen_anchor, started = False, belongs is None
    for seq, ident, prev_hash, digest, body, owner in entries:
        mine = belongs is None or belongs(owner)
        started = started or mine
        found = []
        if prev_hash != prev:
            found.append("link to the previous entry broken (an entry before it was deleted, "
                         "inserted or moved)")  # fmt: skip
        if chain.link(prev_hash, body) != digest:
            found.append("content does not match its hash (edited, or written without the "
                         "audit key)")  # fmt: skip
        prev = digest
        check.head = (seq, digest)
        if anchored is not None and seq == anchored[0]:
            seen_anchor = True
            if digest != anchored[1]:  # whoever's entry it is: the whole chain was rewritten
                check.breaks.append(
                    Break(table, seq, ident, "differs from the anchored hash (rewritten)")
                )
        if started:
            check.breaks.extend(Break(table, seq, ident, reason) for reason in found)
        if mine:
            check.entries += 1
            if anchored is None or seq > anchored[0]:
                check.unanchored += 1
    if anchored is not None and not seen_anchor:
        last = check.head[0] if check.head else 0
        reason = (
            f"the log ends at #{last} but the anchor vouches for entries up to #{anchored[0]} "
            "(newest entries deleted)"
            if last < anchored[0]
            else "the anchored entry is missing (deleted or renumbered)"
        )
        check.breaks.append(Break(table, anchored[0], "", reason))
    return check
