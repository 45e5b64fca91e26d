"""A loaded, verified model version with one fast ``predict``.

scikit-learn models are loaded natively (``predict_proba`` and classes are
needed for scores, thresholds and explanations; pyfunc costs about twice the
per-row time). When the schema is all-numeric and the estimator gives identical
results on a bare float matrix, requests skip building a DataFrame entirely;
the warm-up checks that equality on the stored example before serving.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nbdeploy import boosters, integrity, lineage, registry
from nbdeploy.exceptions import DeploymentError
from nbdeploy.flavors import as_vector
from nbdeploy.integrity import Verified
from nbdeploy.models import ModelVersion
from nbdeploy.schema import Schema

#: Final estimators whose ``predict`` is exactly ``classes_[argmax(predict_proba)]``:
#: for them one ``predict_proba`` call gives both outputs (half the work per batch).
_ARGMAX_EXACT = {
    "LogisticRegression",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "GaussianNB",
    "MultinomialNB",
    "XGBClassifier",
    "LGBMClassifier",
    "NativeBooster",
    "OnnxSession",
}

#: How a loaded model answers: its own library, or onnxruntime on its ONNX conversion.
RUNTIMES = ("native", "onnx")

# sklearn warns on every call when a frame-fitted estimator gets an array; the
# warm-up proves the array path gives identical results before it is used.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


@dataclass
class Output:
    """A model's answer for some rows; the fallback fields are set when a policy applied."""

    predictions: np.ndarray
    proba: np.ndarray | None = None
    #: Per row: did a confidence policy replace the model's prediction?
    fallback: np.ndarray | None = None
    reasons: np.ndarray | None = None
    #: The model's own predictions when ``predictions`` holds fallbacks.
    raw: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> Output:
        def cut(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[start:stop]

        return Output(
            self.predictions[start:stop],
            cut(self.proba),
            cut(self.fallback),
            cut(self.reasons),
            cut(self.raw),
        )


class LoadedModel:
    """One version, ready to predict; immutable once warmed up."""

    def __init__(
        self,
        mv: ModelVersion,
        verified: Verified,
        *,
        alias: str | None = None,
        runtime: str = "native",
        onnx_bytes: bytes | None = None,
    ) -> None:
        """``runtime="onnx"``: answer through onnxruntime, from ``onnx_bytes`` or a fresh
        conversion of the verified native model (``nbdeploy.exports.to_onnx``)."""
        if runtime not in RUNTIMES:
            raise DeploymentError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.version = mv
        #: the files the model was loaded from, as read and checked (the folder may change)
        self.files = verified
        #: the local folder they were read from
        self.path = verified.path
        self.alias = alias
        self.meta = verified.json(registry.METADATA)
        self.schema = Schema.from_dict(self.meta["schema"])
        self.classes: list[Any] | None = self.meta.get("classes")
        self.flavor = self.meta["flavor"]
        self.warnings = [
            f"{name} {then} at registration, {now} here"
            for name, (then, now) in lineage.mismatches(self.meta["lineage"]["packages"]).items()
        ]
        #: answered by the estimator itself (scikit-learn API or a native booster), not pyfunc
        self.native = self.flavor in ("sklearn", *boosters.FLAVORS)
        #: the estimator (scikit-learn API), a NativeBooster, an OnnxSession or a pyfunc model
        self.model: Any
        if runtime == "onnx" and not self.native:
            raise DeploymentError(
                f"{mv.name} is a {self.flavor} model; the ONNX runtime serves scikit-learn, "
                "XGBoost and LightGBM models"
            )
        if self.native:
            if runtime == "onnx":
                from nbdeploy.exports.to_onnx import OnnxSession, convert

                if onnx_bytes is None:  # the conversion stored at registration, else a new one
                    onnx_bytes = verified.files.get(self.meta.get("onnx", {}).get("file", ""))
                if onnx_bytes is None:
                    onnx_bytes = convert(LoadedModel(mv, verified, alias=alias))
                self.model = OnnxSession(
                    onnx_bytes, self.schema, self.classes, indexed=self.flavor in boosters.FLAVORS
                )
            elif self.flavor == "sklearn":
                self.model = _load_sklearn(verified)
            else:
                self.model = boosters.load(verified, self.flavor, self.classes)
            self.has_proba = hasattr(self.model, "predict_proba") and self.classes is not None
            final = self.model.steps[-1][1] if hasattr(self.model, "steps") else self.model
            self.argmax = self.has_proba and type(final).__name__ in _ARGMAX_EXACT
            labels = getattr(self.model, "classes_", None)
            self.classes_array = np.asarray(labels if labels is not None else [])
        else:
            import mlflow.pyfunc

            self.model = mlflow.pyfunc.load_model(str(verified.materialize()))
            self.has_proba = self.argmax = False
        self.matrix_ok = False
        #: an ONNX graph of numeric columns is fed float32 tensors cut from a matrix: no
        #: DataFrame (nor pandas, a quarter of a second at start) is ever needed
        self.matrix_only = runtime == "onnx" and self.schema.numeric
        self._warm_up()

    @property
    def name(self) -> str:
        return self.version.name

    def _warm_up(self) -> None:
        example = self.schema.from_columns(self.meta["example"])
        if self.argmax:  # prove the shortcut on the example before relying on it
            plain = np.asarray(self.model.predict(self.features(example)))
            self.argmax = np.array_equal(plain, self.predict(example).predictions)
        reference = self.predict(example)
        if self.native and self.schema.numeric:
            matrix = np.column_stack(
                [np.asarray(example[c], dtype=np.float64) for c in self.schema.names]
            )
            self.matrix_ok = True
            try:
                fast = self.predict(matrix)
                self.matrix_ok = np.array_equal(fast.predictions, reference.predictions) and (
                    np.array_equal(fast.proba, reference.proba)
                    if fast.proba is not None and reference.proba is not None
                    else fast.proba is reference.proba
                )
            except Exception:
                self.matrix_ok = False

    def frame(self, inputs: np.ndarray | dict[str, Any]) -> Any:
        import pandas as pd

        if isinstance(inputs, np.ndarray):
            return pd.DataFrame(inputs, columns=self.schema.names)
        return pd.DataFrame(inputs, columns=self.schema.names)

    def features(self, inputs: np.ndarray | dict[str, Any]) -> Any:
        """What the model's predict takes: a float matrix when proven equal, else a frame."""
        matrix = self.matrix_ok or self.matrix_only
        if isinstance(inputs, np.ndarray) and matrix:
            # column-major, as a DataFrame's values are: BLAS then sums in the same
            # order and the results match the DataFrame path bit for bit
            return np.asfortranarray(inputs)
        if matrix:  # checked columns of an all-numeric schema: no DataFrame either
            columns = [np.asarray(inputs[c], dtype=np.float64) for c in self.schema.names]
            return np.asfortranarray(np.column_stack(columns))
        if isinstance(inputs, np.ndarray) and self.schema.positional:
            return inputs
        if self.schema.positional:
            return np.column_stack([inputs[c] for c in self.schema.names])
        return self.frame(inputs)

    def predict(self, inputs: np.ndarray | dict[str, Any]) -> Output:
        features = self.features(inputs)
        if self.native:
            if self.argmax:
                proba = np.asarray(self.model.predict_proba(features))
                return Output(self.classes_array[proba.argmax(axis=1)], proba)
            predictions = np.asarray(self.model.predict(features))
            if not self.has_proba:
                return Output(predictions)
            return Output(predictions, np.asarray(self.model.predict_proba(features)))
        if isinstance(features, np.ndarray):
            features = self.frame(features)
        return Output(as_vector(self.model.predict(self.schema.as_published(features))))


def _load_sklearn(verified: Verified) -> Any:
    """The estimator of a verified sklearn-flavor folder.

    Pickle and cloudpickle files are unpickled from the verified bytes: importing
    MLflow for this would add a second to every server start. Other formats (skops)
    go through MLflow, from a private copy of the verified bytes.
    """
    import yaml

    flavor = yaml.safe_load(verified.files["MLmodel"])["flavors"]["sklearn"]
    if flavor.get("serialization_format") in ("cloudpickle", "pickle"):
        import cloudpickle

        return cloudpickle.loads(verified.files[flavor["pickled_model"]])
    import mlflow.sklearn

    return mlflow.sklearn.load_model(str(verified.materialize()))


def load_verified(
    name: str, version: int, manifest_sha: str, *, alias: str | None = None, runtime: str = "native"
) -> LoadedModel:
    """Load a version already fetched to the cache by the caller, checking its hashes.

    A server started by ``nd.serve`` gets the version and its manifest hash from the
    notebook, which already resolved and fetched them: no registry call, no MLflow
    import before the first answer.
    """
    path = registry.cache_path(name, version, manifest_sha)
    verified = integrity.read_verified(path, manifest_sha, what=f"{name}/{version}")
    mv = ModelVersion(name=name, version=version, run_id="")
    return LoadedModel(mv, verified, alias=alias, runtime=runtime)


def load_folder(path: Path, resolved: str | None, *, runtime: str = "native") -> LoadedModel:
    """A model folder outside any registry: what an exported container serves.

    ``resolved`` is ``VERSION:MANIFEST_SHA256`` as the export recorded it; the files are
    checked against that manifest before anything is loaded, exactly as for a registry.
    """
    version, _, expected = (resolved or "").partition(":")
    if not (path / registry.METADATA).is_file():
        raise DeploymentError(
            f"{path} is not a model folder written by nbdeploy (no nbdeploy.json)"
        )
    if not version.isdigit() or not expected:
        raise DeploymentError(
            f"serving the folder {path} needs its version and manifest hash: "
            "--resolved VERSION:MANIFEST_SHA256 (the export's Dockerfile passes it)"
        )
    name = str(registry.read_json(path, registry.METADATA)["name"])
    verified = integrity.read_verified(path, expected, what=f"{name}/{version} in {path}")
    mv = ModelVersion(name=name, version=int(version), run_id="")
    return LoadedModel(mv, verified, runtime=runtime)


def load(
    ref: str | ModelVersion, *, trust_unverified: bool = False, runtime: str = "native"
) -> LoadedModel:
    """Resolve, fetch, verify the hashes of, load and warm up a model version."""
    mv = registry.resolve(ref)
    alias = None
    if isinstance(ref, str):
        _, _, alias = registry.parse_ref(ref)
    verified = registry.fetch_verified(mv, trust_unverified=trust_unverified)
    return LoadedModel(mv, verified, alias=alias, runtime=runtime)
