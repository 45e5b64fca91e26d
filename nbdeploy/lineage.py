"""Where a model came from: notebook, git commit, packages, user, time.

Recorded at registration so that any later prediction can be traced back to the
notebook that trained its model and the exact environment it ran in.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from nbdeploy import config

#: Packages whose versions decide whether a model loads and predicts the same way.
TRACKED = (
    "nbdeploy",
    "mlflow",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "cloudpickle",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
    "shap",
    "onnxruntime",
)


def packages() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in TRACKED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def notebook_path() -> str | None:
    """The notebook this kernel runs, as Jupyter or VS Code tell it."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        for key in ("__session__", "__vsc_ipynb_file__"):
            value = shell.user_ns.get(key)
            if isinstance(value, str) and value.endswith(".ipynb"):
                return value
    return config.settings().session_notebook


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def collect() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else None
    return {
        "user": config.settings().user,
        "time": time.time(),
        "host": platform.node(),
        "notebook": notebook_path(),
        "script": str(Path(script).resolve()) if script else None,
        "cwd": str(Path.cwd()),
        "git_commit": commit,
        "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
        "job_run_id": config.settings().job_run_id,
        "packages": packages(),
    }


def mismatches(recorded: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages whose version differs now from the one recorded: name -> (then, now)."""
    now = packages()
    return {
        name: (then, now[name])
        for name, then in recorded.items()
        if name in now and now[name] != then and name != "nbdeploy"
    }
