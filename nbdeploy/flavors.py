"""Which MLflow flavor stores a model, and how to save it quickly.

scikit-learn estimators and pipelines use the native flavor (the server needs
``predict_proba`` and the estimator itself); a custom ``mlflow.pyfunc.PythonModel``
uses pyfunc (registering one is the opt-in to cloudpickle); other frameworks use
their MLflow flavor when it is installed. Requirements are pinned explicitly,
because letting MLflow infer them costs seconds per registration.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nbdeploy.exceptions import RegistryError

if TYPE_CHECKING:
    import pandas as pd

    from nbdeploy.schema import Schema

#: top-level module of a model's class -> MLflow flavor module
_FRAMEWORKS = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "statsmodels": "statsmodels",
    "torch": "pytorch",
    "keras": "keras",
    "tensorflow": "tensorflow",
}
_PINNED = {
    "sklearn": ("scikit-learn", "numpy", "pandas", "scipy", "cloudpickle"),
    "pyfunc": ("mlflow", "cloudpickle", "numpy", "pandas"),
}


def detect(model: Any) -> str:
    from mlflow.pyfunc import PythonModel

    if isinstance(model, PythonModel):
        return "pyfunc"
    module = type(model).__module__.split(".")[0]
    if module == "sklearn" or _is_sklearn_estimator(model):
        return "sklearn"
    if module in _FRAMEWORKS:
        return _FRAMEWORKS[module]
    raise RegistryError(
        f"nbdeploy cannot store a {type(model).__name__}: pass a scikit-learn estimator, a "
        "model of a framework MLflow has a flavor for, or wrap it in mlflow.pyfunc.PythonModel"
    )


def _is_sklearn_estimator(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)


def _requirements(flavor: str) -> list[str]:
    pins = []
    for package in _PINNED.get(flavor, ("mlflow", "numpy", "pandas")):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


@contextlib.contextmanager
def _pins_unchecked() -> Iterator[None]:
    """Skip MLflow's check that the requirements match this environment while saving.

    The pins come from this very environment (``_requirements``), so the check can
    only agree; it maps every installed file to its package first, which was most of
    the first register in a new process.
    """
    from mlflow.utils import environment

    check = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if check is None:  # another MLflow release: let it check
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda *_: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check


def save(model: Any, flavor: str, path: Path, schema: Schema, example: pd.DataFrame) -> None:
    """Save ``model`` into the (new) folder ``path`` with the signature nbdeploy built."""
    import mlflow
    from mlflow.models import ModelSignature

    signature = ModelSignature(inputs=schema.to_mlflow())
    example_input: Any = example.to_numpy() if schema.positional else example
    if flavor != "sklearn" and not schema.positional:
        example_input = schema.as_published(example)
    kwargs: dict[str, Any] = {
        "signature": signature,
        "input_example": example_input,
        "pip_requirements": _requirements(flavor),
    }
    # MLflow logs a pickle caution on every sklearn save; registering is the opt-in (DESIGN 8).
    quiet = logging.getLogger("mlflow.sklearn")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with _pins_unchecked():
            if flavor == "pyfunc":
                mlflow.pyfunc.save_model(str(path), python_model=model, **kwargs)
            elif flavor == "sklearn":
                mlflow.sklearn.save_model(
                    model, str(path), serialization_format="cloudpickle", **kwargs
                )
            else:
                module = getattr(mlflow, flavor)
                module.save_model(model, str(path), **kwargs)
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"MLflow could not save the {flavor} model: {exc}") from exc
    finally:
        quiet.setLevel(level)


def training_outputs(
    model: Any, flavor: str, frame: pd.DataFrame, schema: Schema, path: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions (and top-class scores) on the training rows, for the profile."""
    features: Any = frame.to_numpy() if schema.positional else frame
    try:
        if flavor == "sklearn":
            predictions = np.asarray(model.predict(features))
            if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
                return predictions, np.asarray(model.predict_proba(features)).max(axis=1)
            return predictions, None
        import mlflow.pyfunc

        loaded = mlflow.pyfunc.load_model(str(path))
        return as_vector(loaded.predict(schema.as_published(frame))), None
    except Exception as exc:
        if type(exc).__name__ == "NotFittedError":  # scikit-learn's, without importing it
            raise RegistryError(
                f"this {type(model).__name__} is not fitted yet: fit it first "
                "(model.fit(X_train, y_train)), then register it"
            ) from None
        raise RegistryError(
            f"the model could not predict on X ({type(exc).__name__}: {exc}); "
            "pass the features it was trained on"
        ) from exc


def as_vector(output: Any) -> np.ndarray:
    """A pyfunc prediction (Series, one-column frame, list, array) as a 1-D array."""
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        output = output.iloc[:, 0] if output.shape[1] == 1 else output.to_numpy().tolist()
    array = np.asarray(output)
    if array.ndim > 1:
        array = np.empty(len(output), dtype=object)
        array[:] = [list(row) for row in output]
    return array


def describe(model: Any, flavor: str, y: Any, predictions: np.ndarray) -> dict[str, Any]:
    """Task, classes and hyperparameters for metadata and the gate."""
    info: dict[str, Any] = {
        "estimator": f"{type(model).__module__}.{type(model).__qualname__}",
        "task": "unknown",
        "classes": None,
        "params": {},
    }
    if flavor == "sklearn":
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(model):
            info["task"] = "classification"
            info["classes"] = [_plain(c) for c in getattr(model, "classes_", [])]
        elif is_regressor(model):
            info["task"] = "regression"
        try:
            info["params"] = {
                k: v
                for k, v in model.get_params(deep=False).items()
                if isinstance(v, str | int | float | bool) or v is None
            }
        except Exception:
            pass
    if info["task"] == "unknown":
        target = np.asarray(y) if y is not None else predictions
        kind = target.dtype.kind
        if kind in "OUSb" or (kind in "iu" and len(np.unique(target)) <= 20):
            info["task"] = "classification"
        elif kind == "f":
            info["task"] = "regression"
    return info


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
