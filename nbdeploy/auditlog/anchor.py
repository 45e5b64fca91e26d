"""The newest hash of each chain, kept outside the database.

Anyone who can write the database can delete its newest entries, or (without the
audit key) rewrite the whole chain consistently. The anchor file records the newest
(seq, hash) of each table, tagged with the chain's MAC; :func:`nbdeploy.auditlog.chain.walk`
then reports an anchored entry that is gone or different. Every process that writes the
log refreshes the anchor every ``NBDEPLOY_AUDIT_ANCHOR_S`` seconds and when it stops
cleanly, so only the last seconds before a crash stay unanchored.

Put the file where the database's writers cannot rewrite history (another volume, a
write-once mount) with ``NBDEPLOY_AUDIT_ANCHOR``: beside the database it only defeats
someone who edits the database alone. Anchors only move forward: a writer never
replaces a head with an older one.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from nbdeploy.auditlog.chain import FORMAT, Chain


@dataclass(frozen=True)
class Anchor:
    #: table -> (seq, hash) of its newest anchored entry
    heads: dict[str, tuple[int, str]]
    written: float
    key_id: str


def _signed(heads: dict[str, tuple[int, str]], written: float, key_id: str) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "key_id": key_id,
            "written": written,
            "heads": {t: list(h) for t, h in sorted(heads.items())},
        }
    )


def read(path: Path, chain: Chain) -> tuple[Anchor | None, str | None]:
    """(anchor, problem): no file gives (None, None); a file that does not check out
    with this chain's key gives (None, what is wrong with it)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"the anchor {path} cannot be read ({exc.strerror})"
    try:
        doc = orjson.loads(raw)
        heads = {str(t): (int(h[0]), str(h[1])) for t, h in doc["heads"].items()}
        anchor = Anchor(heads, float(doc["written"]), str(doc["key_id"]))
        tag = str(doc["mac"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None, f"the anchor {path} is not an nbdeploy anchor file"
    if anchor.key_id != chain.key_id:
        return None, (
            f"the anchor {path} was written "
            + ("with another audit key" if anchor.key_id else "without an audit key")
            + ("" if chain.key_id else "; set NBDEPLOY_AUDIT_KEY to check it")
        )
    if tag != chain.mac(_signed(anchor.heads, anchor.written, anchor.key_id)):
        return None, f"the anchor {path} was altered (its tag does not match)"
    return anchor, None


def write(
    path: Path,
    heads: dict[str, tuple[int, str]],
    chain: Chain,
    holds: Callable[[str, int, str], bool] | None = None,
) -> None:
    """Record ``heads`` atomically, never moving a table's anchor back.

    ``holds(table, seq, hash)``: whether the log still has that entry. A table's anchor
    moves forward only while its anchored entry holds: otherwise entries appended after a
    cut tail (or a rewrite) would be vouched for, and the cut would vanish from
    ``verify``; the old anchor stays as the evidence.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes anchor one log
        old, problem = read(path, chain)
        if problem is not None:
            return  # keep the evidence: verify reports it; never paper over it
        merged = dict(old.heads) if old else {}
        for table, head in heads.items():
            kept = merged.get(table)
            if kept is None or (head[0] > kept[0] and (holds is None or holds(table, *kept))):
                merged[table] = head
        if old is not None and merged == old.heads:
            return
        written = time.time()
        doc = orjson.loads(_signed(merged, written, chain.key_id))
        doc["mac"] = chain.mac(_signed(merged, written, chain.key_id))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
