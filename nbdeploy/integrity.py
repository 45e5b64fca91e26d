"""Artifact integrity: a sha256 manifest written at registration, checked before loading.

``nd.register`` hashes every file of a model folder into ``nbdeploy.manifest.json``
and stores the manifest's own hash as a version tag in the registry. Before anything
is deserialized, :func:`read_verified` reads every file of the folder once into
memory and checks those bytes: the manifest against the registered hash, every file,
and no other, against the manifest. Loading then uses exactly these bytes, never the
disk again, so a writer on the artifact store or the local cache can neither edit a
file beforehand nor swap one between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbdeploy.exceptions import IntegrityError

MANIFEST = "nbdeploy.manifest.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def write_manifest(path: Path) -> str:
    files = {rel: _sha256(data) for rel, data in _read_all(path).items()}
    data = json.dumps({"sha256": files}).encode()
    (path / MANIFEST).write_bytes(data)
    return _sha256(data)


@dataclass(frozen=True)
class Verified:
    """A model folder's files as read, once, and checked: what loading reads from."""

    #: where the files were read (for messages; never read again)
    path: Path
    #: relative path -> content, the manifest excluded
    files: dict[str, bytes] = field(repr=False)

    def json(self, rel: str) -> Any:
        return json.loads(self.files[rel])

    def materialize(self) -> Path:
        """The files in a new private folder, for loaders that only take a folder
        (MLflow's pyfunc): only this process can write there. Removed with ``self``."""
        folder = Path(tempfile.mkdtemp(prefix="nbdeploy-verified-"))  # mode 0700
        for rel, data in self.files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as fh:  # never through a link already there
                fh.write(data)
        weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        return folder


def read_verified(
    path: Path, manifest_sha: str | None, *, what: str, trust_unverified: bool = False
) -> Verified:
    """Every file under ``path``, read once; ``IntegrityError`` unless they match the manifest.

    Without a recorded manifest the folder is refused, unless ``trust_unverified``.
    """
    files = _read_all(path)
    manifest = files.pop(MANIFEST, None)
    if not manifest_sha:
        if trust_unverified:
            return Verified(path, files)
        raise IntegrityError(
            f"{what} was not registered by nbdeploy (no recorded artifact hashes), so it "
            "is not trusted; re-register it with nd.register, or opt in with "
            "trust_unverified=True (NBDEPLOY_TRUST_UNVERIFIED=1) if you trust its source"
        )
    if manifest is None or _sha256(manifest) != manifest_sha:
        raise IntegrityError(
            f"the artifact manifest of {what} was changed after registration; refusing to load it"
        )
    expected = json.loads(manifest)["sha256"]
    if set(files) != set(expected):
        raise IntegrityError(
            f"files of {what} were added or removed after registration; refusing to load it"
        )
    for rel, sha in expected.items():
        if _sha256(files[rel]) != sha:
            raise IntegrityError(
                f"{rel} of {what} does not match its registered sha256; refusing to load it"
            )
    return Verified(path, files)


def verify(path: Path, manifest_sha: str | None, *, what: str) -> None:
    """Raise ``IntegrityError`` unless every file under ``path`` matches the manifest
    (for copies of the folder; loading uses :func:`read_verified`)."""
    read_verified(path, manifest_sha, what=what)
