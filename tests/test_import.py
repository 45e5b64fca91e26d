"""``import nbdeploy`` stays cheap, and the public API is exactly what DESIGN §1 pins."""

from __future__ import annotations

import json
import subprocess
import sys

import nbdeploy

HEAVY = ("mlflow", "sklearn", "papermill", "ipywidgets", "pandas", "fairlearn")

EXPECTED_ALL = [
    "AuditLogError",
    "AuditRecord",
    "Comparison",
    "ConfigError",
    "Deployment",
    "DeploymentError",
    "DriftReport",
    "Estimate",
    "FairnessReport",
    "IntegrityError",
    "JobRun",
    "ModelNotFoundError",
    "ModelVersion",
    "NbdeployError",
    "PerformanceEstimate",
    "PromotionError",
    "RegistryError",
    "SchemaError",
    "SignatureError",
    "TestReport",
    "VerifyReport",
    "anomalies",
    "audit",
    "compare",
    "deployments",
    "drift",
    "erase",
    "estimate",
    "fairness",
    "feedback",
    "history",
    "jobs",
    "load_ipython_extension",
    "logs",
    "monitor",
    "promote",
    "register",
    "retire",
    "rollback",
    "run_job",
    "schedule",
    "score",
    "segments",
    "serve",
    "stop",
    "test",
    "unschedule",
    "verify",
]


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_import_loads_no_heavy_dependency():
    code = (
        "import sys, json\n"
        f"heavy = {HEAVY!r}\n"
        "before = {m for m in sys.modules if m.split('.')[0] in heavy}\n"
        "import nbdeploy\n"
        "import nbdeploy.exceptions\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}"
        " - before)\n"
        "print(json.dumps({'before': sorted(before), 'loaded': loaded}))\n"
    )
    result = json.loads(_fresh(code))
    assert result["before"] == []
    assert result["loaded"] == []


def test_load_ipython_extension_is_importable_without_heavy_modules():
    # %load_ext resolves the attribute before calling it; that must stay cheap too
    code = (
        "import sys, nbdeploy\n"
        "nbdeploy.load_ipython_extension, nbdeploy.NbdeployError, nbdeploy.__version__\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        f"{set(HEAVY)!r}))\n"
    )
    assert _fresh(code) == "[]"


def test_all_is_sorted_and_pinned():
    assert nbdeploy.__all__ == sorted(nbdeploy.__all__)
    assert nbdeploy.__all__ == EXPECTED_ALL


def test_every_public_name_resolves():
    for name in nbdeploy.__all__:
        assert getattr(nbdeploy, name) is not None, name
    assert set(nbdeploy.__all__) <= set(dir(nbdeploy))
    assert nbdeploy.test.__test__ is False
    assert nbdeploy.TestReport.__test__ is False


# DESIGN §1 marks these names as fixed.
DESIGN_NAMES = [
    "register", "test", "promote", "rollback", "history", "serve", "deployments", "stop",
    "logs", "feedback", "score", "drift", "audit", "run_job", "jobs", "schedule", "compare",
    "retire", "monitor", "ModelVersion", "TestReport", "Deployment", "DriftReport", "AuditRecord",
    "JobRun", "NbdeployError", "PromotionError", "IntegrityError",
]  # fmt: skip


def test_design_names_are_public():
    missing = [name for name in DESIGN_NAMES if name not in nbdeploy.__all__]
    assert missing == []


def test_importing_submodules_never_shadows_a_public_function():
    """``import nbdeploy.x`` sets attribute x on the package: no module may share a
    public function's name, or ``nd.x`` would turn into the module."""
    import importlib
    import pkgutil

    import nbdeploy as nd

    for module in pkgutil.walk_packages(nd.__path__, "nbdeploy."):
        if module.name.endswith(("labextension", "labapi", "server")):
            continue
        importlib.import_module(module.name)
    for name in nd.__all__:
        assert not isinstance(getattr(nd, name), type(nd)), f"nd.{name} is a module"
