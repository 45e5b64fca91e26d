"""Several models on one deployment: shadows, canary split, fallbacks, compare, retire."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import httpx
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

import nbdeploy as nd
from nbdeploy.serving.client import split_payload
from tests.conftest import eventually


class Sleepy(mlflow.pyfunc.PythonModel):
    """A shadow that takes as long as the test wants: on the test's traffic (many
    support calls, unlike the warm-up example) it waits for the file named by
    ``NBDEPLOY_TEST_SHADOW_GATE`` (set for the server only) to exist."""

    def predict(self, context, model_input, params=None):
        gate = os.environ.get("NBDEPLOY_TEST_SHADOW_GATE")
        traffic = (model_input["support_calls"] >= 20).any()
        deadline = time.monotonic() + 120
        while gate and traffic and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        return np.array(["yes"] * len(model_input))


class Broken(mlflow.pyfunc.PythonModel):
    """Fine on the training data, broken on the traffic of the test (many support calls)."""

    def predict(self, context, model_input, params=None):
        if (model_input["support_calls"] > 12).any():
            raise RuntimeError("broken shadow")
        return np.array(["no"] * len(model_input))


def post(dep, frame, **headers):
    response = httpx.post(
        dep.url + "/invocations",
        content=split_payload(frame),
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def two_versions(champion, churn_data, churn_models):
    X, y, _, _ = churn_data
    weak = nd.register(churn_models[1], "churn", X, y)
    return nd.promote(weak, to="challenger", force=True)


def test_slow_and_failing_shadows_never_touch_responses(
    champion, churn_data, tmp_path, monkeypatch
):
    X, y, X_test, _ = churn_data
    nd.register(Sleepy(), "churn", X, y)
    nd.register(Broken(), "churn", X, y)
    plain = nd.serve("churn/1", name="plain")
    gate = tmp_path / "shadow-may-finish"
    monkeypatch.setenv("NBDEPLOY_TEST_SHADOW_GATE", str(gate))
    shadowed = nd.serve("churn/1", name="shadowed", shadow=["churn/2", "churn/3"])
    rows = X_test.head(40).assign(support_calls=20)
    answers = [post(shadowed, rows.iloc[[i]])["predictions"][0] for i in range(20)]
    # every request was answered while the sleepy shadow is still stuck on the first
    # batch: responses never wait for a shadow (no timing involved)
    assert shadowed.status()["shadow_stats"].get("rows", 0) == 0
    assert answers == [post(plain, rows.iloc[[i]])["predictions"][0] for i in range(20)]
    gate.touch()
    # the broken shadow fails right after the sleepy one logged its first batch
    eventually(lambda: shadowed.status()["shadow"]["churn/3"]["failures"] >= 1)
    logs = nd.logs("shadowed")
    served, shadow = logs[logs["role"] == "served"], logs[logs["role"] == "shadow"]
    assert len(served) == 20 and (served["model_version"] == 1).all()
    assert set(shadow["model_version"]) == {2}  # the broken one logs nothing
    assert set(shadow["request_id"]) <= set(served["request_id"])
    info = shadowed.status()
    assert info["shadow"]["churn/3"]["failures"] >= 1


def test_canary_split_fraction_and_sticky_keys(two_versions, churn_data):
    _, _, X_test, _ = churn_data
    dep = nd.serve("churn@champion", split={"churn@challenger": 0.25})
    row = X_test.head(1)
    versions = [post(dep, row)["model_version"] for _ in range(600)]
    share = versions.count("2") / len(versions)
    assert abs(share - 0.25) < 0.06  # about 3.4 standard errors
    for key in ("alice", "bob", "carol", "dave"):
        seen = {post(dep, row, **{"X-Routing-Key": key})["model_version"] for _ in range(8)}
        assert len(seen) == 1
    logs = nd.logs("churn")
    assert set(logs.loc[logs["model_version"] == 2, "alias"]) == {"challenger"}


@pytest.mark.parametrize("fallback, expected", [("abstain", None), ("no", "no")])
def test_fallback_applies_exactly_below_the_threshold(champion, churn_data, fallback, expected):
    _, _, X_test, _ = churn_data
    dep = nd.serve("churn@champion", threshold=0.8, fallback=fallback)
    answer = post(dep, X_test.head(200))
    logged = nd.logs("churn").set_index("prediction_id").loc[answer["prediction_ids"]]
    low = (logged["score"] < 0.8).to_numpy()
    assert 0 < low.sum() < len(low)
    assert answer["fallback"] == low.tolist()
    predictions = np.array(answer["predictions"], dtype=object)
    assert all(p == expected for p in predictions[low])
    assert all(p in ("yes", "no") for p in predictions[~low])
    assert all("below 0.8" in r for r in np.array(answer["fallback_reason"])[low])
    assert logged["fallback"].tolist() == low.tolist()


def test_fallback_to_another_model(two_versions, churn_data, churn_models):
    _, _, X_test, _ = churn_data
    dep = nd.serve("churn@champion", threshold=0.9, fallback="churn@challenger")
    rows = X_test.head(100)
    answer = post(dep, rows)
    low = np.array(answer["fallback"])
    expected = churn_models[1].predict(rows)[low]
    assert list(np.array(answer["predictions"])[low]) == list(expected)


def test_threshold_refused_for_a_model_without_probabilities(home):
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]})
    nd.register(LinearRegression().fit(X, [1, 2, 3, 4]), "lin", X, [1.0, 2, 3, 4])
    with pytest.raises(nd.DeploymentError, match="probabilities"):
        nd.serve("lin/1", threshold=0.5)


def _traffic_with_labels(dep, X, y, n):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(dep, X.iloc[[i]]), range(n)))
    ids = [a["prediction_ids"][0] for a in answers]
    nd.feedback(dep.name, ids, list(y.iloc[:n]))


def test_compare_gives_verdicts_where_the_better_model_is_known(champion, churn_data, churn_models):
    X, y, X_test, y_test = churn_data
    # a challenger that is right far less often: it always says "yes"
    always_yes = churn_models[1]
    nd.register(always_yes, "churn", X, y)
    dep = nd.serve("churn@champion", shadow=["churn/2"])
    _traffic_with_labels(dep, X_test, y_test, 10)
    eventually(lambda: len(nd.logs("churn", role="shadow")) == 10)
    early = nd.compare("churn")
    assert early.verdicts[2].startswith("not yet known")
    _traffic_with_labels(dep, X_test.iloc[10:], y_test.iloc[10:], 150)
    eventually(lambda: len(nd.logs("churn", role="shadow")) == 160)
    result = nd.compare("churn")
    row = result.table.set_index("model_version").loc[2]
    assert result.verdicts == {2: "challenger is worse"}
    assert 0 <= row["agreement"] < 1 and row["labelled"] >= 150
    assert "challenger is worse" in result._repr_html_()
    # the other way round: the weak model answers, the good one shadows it
    nd.stop("churn")
    swapped = nd.serve("churn/2", name="swapped", shadow=["churn/1"])
    _traffic_with_labels(swapped, X_test, y_test, 160)  # the same rows as above
    eventually(lambda: len(nd.logs("swapped", role="shadow")) == 160)
    assert nd.compare("swapped").verdicts == {1: "challenger is better"}


def test_retire_removes_a_shadow_from_the_running_server(two_versions, churn_data):
    _, _, X_test, _ = churn_data
    dep = nd.serve("churn@champion", shadow=["churn@challenger"])
    post(dep, X_test.head(2))
    eventually(lambda: len(nd.logs("churn", role="shadow")) == 2)  # nothing left queued
    assert nd.retire("churn@challenger") == ["churn"]
    assert dep.status()["shadow"] == {}
    post(dep, X_test.head(2))
    # answered batches are offered to the shadows when they are answered: none is left
    assert len(nd.logs("churn", role="shadow")) == 2
    with pytest.raises(nd.NbdeployError, match="not a shadow or canary"):
        nd.retire("churn@challenger")


class Unloggable(mlflow.pyfunc.PythonModel):
    """Answers with objects the audit log cannot store."""

    def predict(self, context, model_input, params=None):
        from decimal import Decimal

        return [Decimal("1.5")] * len(model_input)


def test_an_output_that_cannot_be_logged_fails_fast_and_the_server_lives(home, churn_data):
    X, y, X_test, _ = churn_data
    nd.register(Unloggable(), "odd", X, y)
    dep = nd.serve("odd/1")
    started = time.perf_counter()
    answer = httpx.post(
        dep.url + "/invocations",
        content=split_payload(X_test.head(2)),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 500 and time.perf_counter() - started < 10
    assert answer.json()["error"]["code"] == "internal" and "1.5" not in answer.text
    assert httpx.get(dep.url + "/health").status_code == 200
    assert nd.logs("odd").empty


def test_feedback_under_a_deployment_name_reaches_the_model(champion, churn_data):
    _, _, X_test, y_test = churn_data
    dep = nd.serve("churn@champion", name="prod")
    answer = post(dep, X_test.head(3))
    assert nd.feedback("prod", answer["prediction_ids"], list(y_test.head(3))) == 3
    from nbdeploy.auditlog import labels

    assert set(labels("churn")["prediction_id"]) == set(answer["prediction_ids"])
    assert set(labels("prod")["prediction_id"]) == set(answer["prediction_ids"])


def test_promotions_take_effect_under_load_with_a_shadow_in_place(
    two_versions, churn_data, churn_models
):
    X, y, X_test, _ = churn_data
    dep = nd.serve("churn@champion", shadow=["churn@challenger"])
    third = nd.register(churn_models[0], "churn", X, y)
    statuses, versions, stop = [], [], threading.Event()

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                r = client.post(
                    dep.url + "/invocations",
                    content=split_payload(X_test.head(1)),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                statuses.append(r.status_code)
                versions.append(r.json().get("model_version"))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        eventually(lambda: len(versions) >= 5)  # traffic flows before the promotions
        nd.promote(third, to="champion", force=True)  # the answering model
        nd.promote("churn/1", to="challenger", force=True)  # the shadow
        deadline = time.time() + 30
        while "3" not in versions[-20:] and time.time() < deadline:
            time.sleep(0.2)
        # the shadow slot follows its alias too (its rows show the new version)
        eventually(lambda: nd.logs("churn", role="shadow")["model_version"].iloc[-1] == 1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(statuses) == {200} and versions[-1] == "3"
    shadow = nd.logs("churn", role="shadow")
    assert shadow["model_version"].iloc[-1] == 1  # the shadow slot followed its alias too
