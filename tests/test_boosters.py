"""XGBoost and LightGBM, native boosters and scikit-learn API, through the whole path:
register, gate, serve (identical answers), shadow and threshold, drift, nd.score, audit
with the booster's own exact contributions, retrain; TreeSHAP for scikit-learn trees."""

from __future__ import annotations

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost

import nbdeploy as nd
from nbdeploy.serving.adapter import load

pytestmark = pytest.mark.slow


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    from nbdeploy.datasets import churn

    X, y = churn(n, seed=seed)
    X = X.assign(contract=X["contract"].cat.codes.astype("int64"))
    return X, np.asarray(y)


@pytest.fixture(scope="module")
def data():
    X, y = _data(1200, 0)
    X_test, y_test = _data(300, 1)
    return X, y, X_test, y_test


def _fit(kind: str, X: pd.DataFrame, y: np.ndarray):
    """(model, y as registered, the labels' raw-score function) for each kind of booster."""
    yes = (y == "yes").astype(int)
    if kind == "xgb-sklearn":
        return xgboost.XGBClassifier(n_estimators=25, max_depth=3).fit(X, yes), yes
    if kind == "lgb-sklearn":
        return lightgbm.LGBMClassifier(n_estimators=25, verbose=-1).fit(X, y), y
    if kind == "xgb-native":  # three classes, labels given at registration
        tier = np.digitize(X["monthly_charges"], [55, 85])
        params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3}
        booster = xgboost.train(params, xgboost.DMatrix(X, label=tier), 20)
        return booster, np.array(["low", "mid", "high"])[tier]
    # a native LightGBM regressor
    params = {"objective": "regression", "verbose": -1, "num_leaves": 8}
    target = X["monthly_charges"] * 0.3 + X["support_calls"] * 2.0
    return lightgbm.train(params, lightgbm.Dataset(X, label=target), 20), target.to_numpy()


def _v2_proba(dep, X: pd.DataFrame) -> np.ndarray:
    """predict_proba as the server's V2 (Open Inference) route answers it."""
    import httpx

    inputs = [
        {"name": c, "datatype": "FP64", "shape": [len(X)], "data": X[c].astype(float).tolist()}
        for c in X.columns
    ]
    answer = httpx.post(f"{dep.url}/v2/models/{dep.name}/infer", json={"inputs": inputs}).json()
    (out,) = [o for o in answer["outputs"] if o["name"] == "predict_proba"]
    return np.asarray(out["data"]).reshape(out["shape"])


def _raw(model, X: pd.DataFrame) -> np.ndarray:
    """The raw score (margin) the library itself reports, one column per class."""
    if isinstance(model, xgboost.XGBModel):
        return model.predict(X, output_margin=True).reshape(len(X), -1)
    if isinstance(model, xgboost.Booster):
        return model.predict(xgboost.DMatrix(X), output_margin=True).reshape(len(X), -1)
    return np.asarray(model.predict(X, raw_score=True)).reshape(len(X), -1)


@pytest.mark.parametrize("kind", ["xgb-sklearn", "lgb-sklearn", "xgb-native", "lgb-native"])
def test_a_booster_is_first_class(home, data, kind):
    X, y, X_test, _ = data
    model, labels = _fit(kind, X, y)
    mv = nd.register(model, "boost", X, labels)
    native = kind.endswith("native")
    assert mv.flavor == (
        "sklearn" if not native else kind[:3].replace("lgb", "lightgbm").replace("xgb", "xgboost")
    )
    loaded = load(mv)
    assert loaded.schema.names == list(X.columns) and loaded.matrix_ok
    # the gate, on held-out rows labelled by the model's own rule
    test_labels = _fit(kind, X_test, _data(300, 1)[1])[1]
    report = nd.test(mv, X_test, test_labels)
    assert len(report.checks) >= 3  # metric, latency, bad inputs: all ran on the booster
    dep = nd.serve(nd.promote(mv, to="champion", force=True).ref)
    answered = dep.predict(X_test.head(40))
    here = loaded.predict(loaded.schema.from_frame(X_test.head(40)))
    assert list(answered["prediction"]) == list(here.predictions)
    if kind in ("xgb-sklearn", "lgb-sklearn"):
        assert list(here.predictions) == list(model.predict(X_test.head(40)))
        proba = model.predict_proba(X_test.head(40))
        np.testing.assert_array_equal(here.proba, proba)
        served = _v2_proba(dep, X_test.head(40))
        # float32 probabilities travel as their shortest decimal: equal once read as float32
        np.testing.assert_array_equal(served.astype(here.proba.dtype), here.proba)
    elif kind == "xgb-native":
        proba = model.predict(xgboost.DMatrix(X_test.head(40)))
        np.testing.assert_array_equal(here.proba, proba)
        assert set(here.predictions) <= {"low", "mid", "high"}
    else:
        np.testing.assert_array_equal(here.predictions, model.predict(X_test.head(40)))
    # audit: the booster's own contributions add up to its raw score for the predicted class
    pid = answered["prediction_id"][3]
    record = nd.audit(pid)
    assert record.reproduced is True and record.verified is True
    library = "xgboost pred_contribs" if kind.startswith("xgb") else "lightgbm pred_contrib"
    assert record.explanation_method.startswith(library), record.explanation_method
    raw = _raw(model, X_test.iloc[[3]])[0]
    k = 0 if len(raw) == 1 else int(np.argmax(here.proba[3]))
    expected = raw[k] * (
        -1 if len(raw) == 1 and here.proba is not None and here.proba[3].argmax() == 0 else 1
    )
    bias = float(record.explanation_method.split("bias ")[1].split(" ")[0])
    assert sum(record.explanation.values()) + bias == pytest.approx(expected, abs=1e-4)
    # batch scoring and drift on the stored profile
    scored = nd.score(mv.ref, X_test)
    assert list(scored["prediction"]) == list(
        loaded.predict(loaded.schema.from_frame(X_test)).predictions
    )
    assert not nd.drift(mv.ref, X_test).drifted


def test_boosters_shadow_and_threshold(home, data):
    X, y, X_test, _ = data
    lgb, labels = _fit("lgb-sklearn", X, y)
    xgb_native = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2}, xgboost.DMatrix(X, label=y == "yes"), 10
    )
    champion = nd.promote(nd.register(lgb, "boost", X, labels), to="champion", force=True)
    shadow = nd.register(xgb_native, "boost", X, y)
    assert shadow.task == "classification"
    dep = nd.serve(champion.ref, shadow=[shadow.ref], threshold=0.9, fallback="abstain")
    answered = dep.predict(X_test.head(50))
    top = lgb.predict_proba(X_test.head(50)).max(axis=1)
    abstained = answered["prediction"].isna().to_numpy()
    np.testing.assert_array_equal(abstained, top < 0.9)
    assert abstained.any() and not abstained.all()
    import time

    deadline = time.time() + 20
    while time.time() < deadline:
        logs = nd.logs("boost")
        if (logs["role"] == "shadow").sum() >= 50:
            break
        time.sleep(0.2)
    shadow_rows = logs[logs["role"] == "shadow"]
    assert set(shadow_rows["model_version"]) == {shadow.version}
    p = xgb_native.predict(xgboost.DMatrix(X_test.head(50)))
    assert sorted(shadow_rows["prediction"].head(50)) == sorted(np.where(p > 0.5, "yes", "no"))


def test_sklearn_trees_get_treeshap(home, data):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor

    X, y, X_test, _ = data
    gb = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, y)
    nd.register(gb, "gb", X, y)
    dep = nd.serve("gb/1")
    pid = dep.predict(X_test.head(3))["prediction_id"][0]
    record = nd.audit(pid)
    assert record.explanation_method.startswith("treeshap"), record.explanation_method
    total = float(record.explanation_method.rsplit("model output ", 1)[1].rstrip(")"))
    decision = float(gb.decision_function(X_test.head(1))[0])
    predicted_yes = gb.predict(X_test.head(1))[0] == "yes"
    assert total == pytest.approx(decision if predicted_yes else -decision, abs=1e-6)
    rf = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, X["monthly_charges"] * 2)
    nd.register(rf, "rf", X, X["monthly_charges"] * 2)
    pid = nd.serve("rf/1").predict(X_test.head(2))["prediction_id"][1]
    record = nd.audit(pid)
    assert record.explanation_method.startswith("treeshap")
    total = float(record.explanation_method.rsplit("model output ", 1)[1].rstrip(")"))
    assert total == pytest.approx(rf.predict(X_test.iloc[[1]])[0], abs=1e-6)


def test_retrain_notebook_refits_an_xgboost_classifier(home, data):
    from nbdeploy.retrain import estimator

    X, y, _, _ = data
    model, labels = _fit("xgb-sklearn", X, y)
    nd.promote(nd.register(model, "boost", X, labels), to="champion", force=True)
    frame = X.assign(churn=labels)
    frame.to_csv("fresh.csv", index=False)
    clone = estimator("boost@champion", seed=3)
    assert isinstance(clone, xgboost.XGBClassifier) and clone.get_params()["random_state"] == 3
    from tests.conftest import kernel_name

    run = nd.run_job(
        "retrain",
        {"model_name": "boost", "data": "fresh.csv", "target": "churn"},
        kernel=kernel_name(),
    )
    assert run.status == "succeeded", run.error
    assert run.results["version"] == 2
    retrained = load("boost/2")
    assert type(retrained.model).__name__ == "XGBClassifier"


@pytest.mark.parametrize("kind", ["xgb-native", "lgb-native"])
def test_retrain_notebook_refits_a_native_booster(home, data, kind):
    """A native booster is refitted with its own parameters and rounds and registered
    as a native booster of the same kind, with the same classes."""
    from nbdeploy.boosters import NativeBooster, Recipe
    from nbdeploy.retrain import estimator
    from tests.conftest import kernel_name

    X, y, X_test, _ = data
    model, labels = _fit(kind, X, y)
    nd.promote(nd.register(model, "boost", X, labels), to="champion", force=True)
    X.assign(target=labels).to_csv("fresh.csv", index=False)
    recipe = estimator("boost@champion", seed=3)
    assert isinstance(recipe, Recipe) and recipe.rounds == 20
    run = nd.run_job(
        "retrain",
        {"model_name": "boost", "data": "fresh.csv", "target": "target"},
        kernel=kernel_name(),
    )
    assert run.status == "succeeded", run.error
    before, after = load("boost/1").model, load(f"boost/{run.results['version']}").model
    assert isinstance(after, NativeBooster) and after.kind == before.kind
    assert after.objective == before.objective
    retrained = Recipe(after)
    assert retrained.rounds == 20
    assert {k: v for k, v in retrained.params.items() if k != "seed"} == {
        k: v for k, v in Recipe(before).params.items() if k != "seed"
    }
    if kind == "xgb-native":
        assert list(after.classes_) == list(before.classes_) == ["high", "low", "mid"]
        assert set(after.predict(X_test)) <= {"high", "low", "mid"}
    else:
        gap = np.abs(after.predict(X_test) - before.predict(X_test)).mean()
        assert gap < 0.1 * np.abs(before.predict(X_test)).mean()


def test_a_booster_recipe_refuses_labels_it_cannot_map(home, data):
    from nbdeploy.boosters import Recipe
    from nbdeploy.exceptions import JobError

    X, y, _, _ = data
    model, labels = _fit("xgb-native", X, y)
    nd.register(model, "boost", X, labels)
    recipe = Recipe(load("boost/1").model)
    with pytest.raises(JobError, match=r"not among the classes"):
        recipe.fit(X, np.where(labels == "low", "tiny", labels))
    with pytest.raises(JobError, match=r"no rows of class \['mid'\]"):
        recipe.fit(X[labels != "mid"], labels[labels != "mid"])
