"""Personal data in the log: per-column policies, erasure, retention.

``nd.register(..., pii={"email": "hash", "name": "drop"})`` stores the policy with the
version (in its verified metadata); the server applies it when it builds a record, so
the log never holds those values:

- ``"hash"`` keeps ``HMAC-SHA256(k, value)`` (32 hex digits): equal values still
  group and join, but a small domain (ages, postcodes) cannot be enumerated back
  without ``k``. ``k`` derives from ``NBDEPLOY_AUDIT_KEY``, else from a random secret
  made once per home (``$NBDEPLOY_HOME/pii.key``, mode 600).
- ``"drop"`` keeps nothing (null).

``nd.erase(ids)`` removes logged inputs afterwards (a data subject's request); the
retention setting does the same to everything older than N days. Both keep the rows'
digests, so the hash chain still verifies (:func:`nbdeploy.auditlog.chain.erase_rows`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from nbdeploy import config
from nbdeploy.exceptions import AuditLogError, ConfigError

MODES = ("hash", "drop")


def check_policy(pii: Any, columns: list[str]) -> dict[str, str] | None:
    """A valid policy for a model taking ``columns``, or a one-line :class:`ConfigError`."""
    if pii is None:
        return None
    if not isinstance(pii, dict) or not all(isinstance(k, str) for k in pii):
        raise ConfigError('pii maps column names to "hash" or "drop", e.g. {"email": "hash"}')
    unknown = sorted(set(pii) - set(columns))
    if unknown:
        raise ConfigError(
            f"pii names {unknown[0]!r}, which is not a column of X; columns: "
            + ", ".join(columns[:20])
        )
    for column, mode in pii.items():
        if mode not in MODES:
            raise ConfigError(f"pii[{column!r}] must be 'hash' or 'drop', not {str(mode)[:20]!r}")
    return dict(pii)


@functools.lru_cache(maxsize=4)
def _key(audit_key: str | None, home: Path) -> bytes:
    if audit_key:
        base = audit_key.encode()
    else:
        path = home / "pii.key"
        try:  # made once; O_EXCL: two processes starting together agree on one secret
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        except FileExistsError:
            pass
        base = path.read_text().strip().encode()
        if not base:
            raise AuditLogError(f"{path} is empty; delete it to make a new one")
    return hmac.new(base, b"nbdeploy pii hash", hashlib.sha256).digest()


def pseudonym(value: Any) -> str | None:
    """The keyed hash the log keeps of a ``"hash"`` column's value (None stays None)."""
    if value is None:
        return None
    s = config.settings()
    data = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return hmac.new(_key(s.audit_key, s.home), data, hashlib.sha256).hexdigest()[:32]


def apply(
    pii: dict[str, str], names: list[str], inputs: np.ndarray | dict[str, Any]
) -> dict[str, Any]:
    """``inputs`` as the log may keep them: columns, with the policy applied."""
    if isinstance(inputs, np.ndarray):
        columns = {n: inputs[:, j] for j, n in enumerate(names)}
    else:
        columns = {n: inputs[n] for n in names}
    for column, mode in pii.items():
        values = np.asarray(columns[column]).tolist()
        kept = [None] * len(values) if mode == "drop" else [pseudonym(v) for v in values]
        columns[column] = np.array(kept, dtype=object)
    return columns


def erase(prediction_ids: Any) -> int:
    """Remove the logged inputs of these predictions, and nothing else.

    Outputs, model version and the other rows of the same request stay, and the hash
    chain still verifies (each row's digest stays in its place). ``nd.audit`` then
    shows ``inputs=None, erased=True``. Returns how many predictions were erased now
    (ids erased before count once). Unknown ids: nothing is erased.
    """
    from nbdeploy.auditlog.store import parse_prediction_id, shared

    ids = [prediction_ids] if isinstance(prediction_ids, str) else list(prediction_ids)
    if not ids:
        raise AuditLogError("no prediction ids given")
    rows: dict[str, set[int]] = {}
    for pid in ids:
        record, row = parse_prediction_id(pid)
        rows.setdefault(record, set()).add(row)
    return shared().erase(rows, why=f"nd.erase by {config.settings().user}")


def expire() -> int:
    """Apply ``NBDEPLOY_RETENTION_DAYS`` now (servers also do it every ten minutes);
    returns how many records had inputs erased."""
    from nbdeploy.auditlog.maintenance import expire as run
    from nbdeploy.auditlog.store import shared

    days = config.settings().retention_days
    if not days:
        raise ConfigError("set NBDEPLOY_RETENTION_DAYS to the days inputs are kept")
    return run(shared(), days)
