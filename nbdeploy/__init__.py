"""nbdeploy: register, test, deploy, monitor, retrain and audit models from Jupyter.

    import nbdeploy as nd
    mv = nd.register(clf, "churn", X_train, y_train)
    nd.test(mv, X_test, y_test, min_score=0.8)
    nd.promote(mv, to="champion")
    dep = nd.serve("churn@champion")
    dep.predict(X_test.head())

In a notebook: ``%load_ext nbdeploy`` then ``%deploy --help``.

Importing nbdeploy is cheap: MLflow, scikit-learn, pandas, papermill and
ipywidgets load only when a function that needs them is first called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nbdeploy.exceptions import (
    AuditLogError,
    ConfigError,
    DeploymentError,
    IntegrityError,
    ModelNotFoundError,
    NbdeployError,
    PromotionError,
    RegistryError,
    SchemaError,
    SignatureError,
)

__version__ = "0.1.0"

# public name -> module that defines it; loaded on first use (PEP 562)
_LAZY = {
    "register": "nbdeploy.registry",
    "promote": "nbdeploy.registry",
    "rollback": "nbdeploy.registry",
    "history": "nbdeploy.registry",
    "test": "nbdeploy.gate",
    "serve": "nbdeploy.serving.process",
    "stop": "nbdeploy.serving.process",
    "deployments": "nbdeploy.serving.process",
    "logs": "nbdeploy.auditlog",
    "feedback": "nbdeploy.auditlog",
    "verify": "nbdeploy.auditlog",
    "erase": "nbdeploy.auditlog",
    "VerifyReport": "nbdeploy.auditlog",
    "score": "nbdeploy.scoring",
    "drift": "nbdeploy.monitoring",
    "monitor": "nbdeploy.widgets",
    "run_job": "nbdeploy.runner",
    "jobs": "nbdeploy.runner",
    "schedule": "nbdeploy.scheduler",
    "unschedule": "nbdeploy.scheduler",
    "audit": "nbdeploy.auditing",
    "JobRun": "nbdeploy.models",
    "AuditRecord": "nbdeploy.models",
    "compare": "nbdeploy.comparison",
    "retire": "nbdeploy.comparison",
    "Comparison": "nbdeploy.models",
    "ModelVersion": "nbdeploy.models",
    "TestReport": "nbdeploy.models",
    "Deployment": "nbdeploy.serving.client",
    "DriftReport": "nbdeploy.monitoring.driftstats",
    "fairness": "nbdeploy.monitoring.fairness",
    "anomalies": "nbdeploy.monitoring.anomalies",
    "estimate": "nbdeploy.monitoring.estimate",
    "segments": "nbdeploy.monitoring.segments",
    "Estimate": "nbdeploy.monitoring.estimation",
    "PerformanceEstimate": "nbdeploy.monitoring.estimate",
    "FairnessReport": "nbdeploy.monitoring.fairness",
}

__all__ = [
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

if TYPE_CHECKING:
    from nbdeploy.auditing import audit
    from nbdeploy.auditlog import VerifyReport, erase, feedback, logs, verify
    from nbdeploy.comparison import compare, retire
    from nbdeploy.gate import test
    from nbdeploy.models import (
        AuditRecord,
        Comparison,
        JobRun,
        ModelVersion,
        TestReport,
    )
    from nbdeploy.monitoring import drift
    from nbdeploy.monitoring.anomalies import anomalies
    from nbdeploy.monitoring.driftstats import DriftReport
    from nbdeploy.monitoring.estimate import PerformanceEstimate, estimate
    from nbdeploy.monitoring.estimation import Estimate
    from nbdeploy.monitoring.fairness import FairnessReport, fairness
    from nbdeploy.monitoring.segments import segments
    from nbdeploy.registry import history, promote, register, rollback
    from nbdeploy.runner import jobs, run_job
    from nbdeploy.scheduler import schedule, unschedule
    from nbdeploy.scoring import score
    from nbdeploy.serving.client import Deployment
    from nbdeploy.serving.process import deployments, serve, stop
    from nbdeploy.widgets import monitor


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbdeploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbdeploy``: registers the ``%deploy`` magic."""
    from nbdeploy.magics import DeployMagics

    ipython.register_magics(DeployMagics)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Jupyter server discovery: the REST API behind the lab panel (``nbdeploy.labapi``)."""
    return [{"module": "nbdeploy.labapi"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """JupyterLab discovery of the prebuilt side panel (``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "nbdeploy"}]
