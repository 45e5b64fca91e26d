"""nbdeploy's own wheel, built from the running package, for build contexts.

nbdeploy is not on a package index, so a container image installs it from a wheel
carried in its build context. Building through hatchling would also rebuild the lab
extension with node; the server needs none of that, so this writes the wheel directly
(PEP 427: the package files, METADATA, WHEEL, entry points and a RECORD of sha256
hashes), with fixed timestamps so the same sources give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _requirements() -> list[str]:
    try:
        return list(metadata.requires("nbdeploy") or [])
    except metadata.PackageNotFoundError:
        return []


def _digest(data: bytes) -> str:
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def build(folder: Path) -> Path:
    """Write ``nbdeploy-VERSION-py3-none-any.whl`` into ``folder``; its path back."""
    import nbdeploy

    root = Path(nbdeploy.__file__).parent
    version = nbdeploy.__version__
    info = f"nbdeploy-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[f"nbdeploy/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    meta = [
        "Metadata-Version: 2.1",
        "Name: nbdeploy",
        f"Version: {version}",
        "Summary: Register, test, deploy, monitor, retrain and audit models from Jupyter.",
        "Requires-Python: >=3.10",
        *(f"Requires-Dist: {r}" for r in _requirements()),
    ]
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: nbdeploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nnbdeploy = nbdeploy.cli:main\n"
    record = [f"{name},{_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"nbdeploy-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            wheel.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return target
