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
    "score": "nbdeploy.scoring",
    "drift": "nbdeploy.drift",
    "ModelVersion": "nbdeploy.models",
    "TestReport": "nbdeploy.models",
    "Deployment": "nbdeploy.models",
    "DriftReport": "nbdeploy.drift",
}

__all__ = [
    "AuditLogError",
    "ConfigError",
    "Deployment",
    "DeploymentError",
    "DriftReport",
    "IntegrityError",
    "ModelNotFoundError",
    "ModelVersion",
    "NbdeployError",
    "PromotionError",
    "RegistryError",
    "SchemaError",
    "SignatureError",
    "TestReport",
    "deployments",
    "drift",
    "feedback",
    "history",
    "load_ipython_extension",
    "logs",
    "promote",
    "register",
    "rollback",
    "score",
    "serve",
    "stop",
    "test",
]

if TYPE_CHECKING:
    from nbdeploy.auditlog import feedback, logs
    from nbdeploy.drift import DriftReport, drift
    from nbdeploy.gate import test
    from nbdeploy.models import Deployment, ModelVersion, TestReport
    from nbdeploy.registry import history, promote, register, rollback
    from nbdeploy.scoring import score
    from nbdeploy.serving.process import deployments, serve, stop


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
