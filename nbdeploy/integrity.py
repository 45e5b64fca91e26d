"""Artifact integrity: a sha256 manifest written at registration, checked before loading.

``nd.register`` hashes every file of a model folder into ``nbdeploy.manifest.json``
and stores the manifest's own hash as a version tag in the registry. Before anything
is deserialized, :func:`verify` checks that the manifest is the registered one and
that every file, and no other, matches it: an artifact edited, added or removed in
the artifact store or the local cache is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nbdeploy.exceptions import IntegrityError

MANIFEST = "nbdeploy.manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path) -> str:
    files = {
        p.relative_to(path).as_posix(): _sha256(p) for p in sorted(path.rglob("*")) if p.is_file()
    }
    (path / MANIFEST).write_text(json.dumps({"sha256": files}))
    return _sha256(path / MANIFEST)


def verify(path: Path, manifest_sha: str | None, *, what: str) -> None:
    """Raise ``IntegrityError`` unless every file under ``path`` matches the manifest."""
    if not manifest_sha:
        raise IntegrityError(
            f"{what} was not registered by nbdeploy (no recorded artifact hashes), so it "
            "is not trusted; re-register it with nd.register, or opt in with "
            "trust_unverified=True (NBDEPLOY_TRUST_UNVERIFIED=1) if you trust its source"
        )
    manifest = path / MANIFEST
    if not manifest.is_file() or _sha256(manifest) != manifest_sha:
        raise IntegrityError(
            f"the artifact manifest of {what} was changed after registration; refusing to load it"
        )
    expected = json.loads(manifest.read_text())["sha256"]
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    present.discard(MANIFEST)
    if present != set(expected):
        raise IntegrityError(
            f"files of {what} were added or removed after registration; refusing to load it"
        )
    for rel, sha in expected.items():
        if _sha256(path / rel) != sha:
            raise IntegrityError(
                f"{rel} of {what} does not match its registered sha256; refusing to load it"
            )
