"""Registration, refs, promotion, rollback and history against a real MLflow store."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy import registry
from nbdeploy.exceptions import InvalidNameError


def test_register_builds_signature_including_categories(home, churn_data, churn_models):
    X, y, _, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, description="first", tags={"team": "a"})
    assert (mv.name, mv.version, mv.uri) == ("churn", 1, "models:/churn/1")
    assert mv.task == "classification" and mv.flavor == "sklearn"
    path = registry.fetch_model(mv)
    meta = json.loads((path / "nbdeploy.json").read_text())
    types = {c["name"]: c["type"] for c in meta["schema"]["columns"]}
    assert types == {
        "tenure_months": "long",
        "monthly_charges": "double",
        "support_calls": "long",
        "contract": "string",
    }
    assert meta["classes"] == ["no", "yes"]
    assert "signature:" in (path / "MLmodel").read_text()
    assert (path / "input_example.json").is_file()
    assert meta["fingerprint"].startswith("sha256:") and mv.fingerprint == meta["fingerprint"]
    assert meta["lineage"]["packages"]["scikit-learn"]
    profile = registry.load_profile("churn/1")
    assert set(profile["columns"]) == set(X.columns)


def test_register_refuses_without_training_data(home, churn_models):
    with pytest.raises(nd.SignatureError, match="training features"):
        nd.register(churn_models[0], "churn")


def test_register_rejects_bad_name_and_unknown_objects(home, churn_data, churn_models):
    X, y, _, _ = churn_data
    with pytest.raises(InvalidNameError, match="not a valid model name"):
        nd.register(churn_models[0], "churn/1", X, y)
    with pytest.raises(nd.RegistryError, match="PythonModel"):
        nd.register(object(), "thing", X, y)


@pytest.mark.parametrize("tag", ["nbdeploy.test.passed", "NBDEPLOY.manifest_sha256"])
def test_the_nbdeploy_tag_prefix_is_reserved(home, churn_data, churn_models, tag):
    X, y, _, _ = churn_data
    with pytest.raises(nd.RegistryError, match="reserved"):
        nd.register(churn_models[0], "churn", X, y, tags={tag: "true", "team": "risk"})
    assert registry.model_names() == []  # refused before anything was written
    mv = nd.register(churn_models[0], "churn", X, y, tags={"team": "risk"})
    with pytest.raises(nd.PromotionError, match="never tested"):
        nd.promote(mv, to="champion")


def test_lineage_records_git_commit(home, churn_data, churn_models):
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    X, y, _, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    meta = json.loads((registry.fetch_model(mv) / "nbdeploy.json").read_text())
    assert meta["lineage"]["git_commit"] == commit


@pytest.mark.parametrize(
    "ref", ["churn/1", "churn@champion", "models:/churn/1", "models:/churn@champion"]
)
def test_refs_resolve_in_every_form(champion, ref):
    assert registry.resolve(ref).version == 1


@pytest.mark.parametrize(
    "ref, message",
    [
        ("churn/9", "no version 9"),
        ("churn@nope", "no alias 'nope'"),
        ("ghost/1", "no registered model"),
        ("churn", "not a model ref"),
    ],
)
def test_bad_refs_say_what_is_wrong(champion, ref, message):
    with pytest.raises(nd.ModelNotFoundError, match=message):
        registry.resolve(ref)


def test_promote_needs_a_passing_test(home, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    with pytest.raises(nd.PromotionError, match="never tested"):
        nd.promote(mv)
    assert not nd.test(mv, X_test, y_test, min_score=0.999).passed
    with pytest.raises(nd.PromotionError, match=r"failed its last nd\.test"):
        nd.promote(mv)
    assert nd.promote(mv, force=True).aliases == ("champion",)
    assert nd.history("churn")["reason"].tolist() == ["forced"]


def test_rollback_steps_back_one_holder_at_a_time(home, churn_data, churn_models):
    X, y, _, _ = churn_data
    for _ in range(3):
        nd.promote(nd.register(churn_models[0], "churn", X, y), force=True)
    assert registry.alias_holder("churn", "champion") == 3
    assert nd.rollback("churn").version == 2
    assert nd.rollback("churn").version == 1
    with pytest.raises(nd.PromotionError, match="no earlier holder"):
        nd.rollback("churn")
    history = nd.history("churn")
    assert list(history.columns[:6]) == [
        "time",
        "alias",
        "from_version",
        "to_version",
        "user",
        "reason",
    ]
    assert history["to_version"].tolist() == [1, 2, 3, 2, 1]
    # a promotion after rollbacks starts a new line of holders
    nd.promote("churn/3", force=True)
    assert nd.rollback("churn").version == 1


def test_tampered_artifacts_are_refused(champion, home):
    import shutil

    cached = registry.fetch_model(champion) / "model.pkl"
    cached.write_bytes(cached.read_bytes() + b"evil")  # the local copy about to be loaded
    with pytest.raises(nd.IntegrityError, match="sha256"):
        registry.fetch_model(champion)
    shutil.rmtree(home / "cache")
    stored = list((home / "artifacts").rglob("model.pkl"))
    assert len(stored) == 1
    stored[0].write_bytes(b"evil")  # the registry's own copy
    with pytest.raises(nd.IntegrityError, match="sha256"):
        registry.fetch_model(champion)


def test_models_trained_on_arrays_register_and_predict(home):
    from sklearn.linear_model import LinearRegression

    from nbdeploy.serving.adapter import load

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    mv = nd.register(LinearRegression().fit(X, y), "linear", X, y)
    assert mv.task == "regression"
    model = load(mv)
    out = model.predict(model.schema.from_frame(X[:4]))
    np.testing.assert_allclose(out.predictions, y[:4], atol=1e-9)


def test_custom_pyfunc_model_registers_and_serves(home):
    import mlflow.pyfunc

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x"] * 2

    X = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    mv = nd.register(Doubler(), "doubler", X)
    assert mv.flavor == "pyfunc"
    dep = nd.serve("doubler/1")
    assert dep.predict(pd.DataFrame({"x": [5.0, 0.5]}))["prediction"].tolist() == [10.0, 1.0]


def test_versions_carry_their_current_aliases(champion, churn_data, churn_models):
    X, y, _, _ = churn_data
    nd.promote(nd.register(churn_models[1], "churn", X, y), to="challenger", force=True)
    assert [(v.version, v.aliases) for v in registry.versions("churn")] == [
        (1, ("champion",)),
        (2, ("challenger",)),
    ]


@pytest.mark.parametrize(
    ("alias", "error"),
    [("v3", nd.PromotionError), ("latest", nd.PromotionError), ("a.b", nd.PromotionError),
     ("two words", InvalidNameError), ("", InvalidNameError)],
)  # fmt: skip
def test_reserved_or_malformed_aliases_are_refused(champion, alias, error):
    with pytest.raises(error, match=r"not a usable alias|not a valid alias name"):
        nd.promote(champion, to=alias, force=True)
