"""nd.export(ref, "onnx") and serving with onnxruntime: parity with the native model,
provenance, refusal of tampered models, and the same HTTP API and audit log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import xgboost

import nbdeploy as nd
from nbdeploy import registry
from nbdeploy.exports.to_onnx import OnnxSession
from nbdeploy.serving.adapter import load

pytestmark = pytest.mark.slow


def test_a_pipeline_exports_with_provenance_and_parity(champion, churn_data, tmp_path):
    _, _, X_test, _ = churn_data
    path = nd.export("churn@champion", "onnx", tmp_path / "out")
    assert path == tmp_path / "out" / "churn-v1.onnx"
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["nbdeploy.model"] == "churn" and meta["nbdeploy.version"] == "1"
    assert meta["nbdeploy.manifest_sha256"] == registry.manifest_sha(champion)
    report = json.loads(path.with_name(path.name + ".parity.json").read_text())["parity"]
    assert report["ok"] and report["labels_identical"] and report["max_abs_diff"] <= 1e-5
    assert report["rows"] == 5 + 21  # the stored example and the profile's quantile rows
    # the file on its own, in a plain onnxruntime session, answers like the native model
    native = load("churn/1")
    session = OnnxSession(path.read_bytes(), native.schema, native.classes)
    rows = X_test.head(200)
    np.testing.assert_array_equal(session.predict(rows), native.model.predict(rows))
    np.testing.assert_allclose(
        session.predict_proba(rows), native.model.predict_proba(rows), atol=1e-5
    )


def test_a_tampered_model_is_not_exported(champion, home, tmp_path):
    cached = registry.cache_path("churn", 1, registry.manifest_sha(champion))
    pickled = next(cached.glob("model.pkl"))
    pickled.write_bytes(pickled.read_bytes() + b"\0")
    with pytest.raises(nd.IntegrityError):
        nd.export("churn@champion", "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_serving_on_onnxruntime_answers_like_native_and_logs(champion, churn_data):
    _, _, X_test, _ = churn_data
    onnx_dep = nd.serve("churn@champion", name="churn-onnx", runtime="onnx")
    native_dep = nd.serve("churn@champion", name="churn-native")
    rows = X_test.head(100)
    a, b = onnx_dep.predict(rows), native_dep.predict(rows)
    assert list(a["prediction"]) == list(b["prediction"])
    logs = nd.logs("churn-onnx")
    assert len(logs) == 100 and set(logs["model_version"]) == {1}
    record = nd.audit(a["prediction_id"][7])
    assert record.verified and record.output == a["prediction"][7]


def test_a_native_booster_serves_on_onnxruntime(home, churn_data):
    X, y, X_test, _ = churn_data
    X = X.assign(contract=X["contract"].cat.codes.astype("int64"))
    X_test = X_test.assign(contract=X_test["contract"].cat.codes.astype("int64"))
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(X, label=y == "yes"), 15
    )
    mv = nd.register(booster, "boost", X, y)
    onnx_model = load(mv.ref, runtime="onnx")
    assert isinstance(onnx_model.model, OnnxSession) and onnx_model.matrix_ok
    dep = nd.serve(mv.ref, runtime="onnx")
    answered = dep.predict(X_test.head(60))
    p = booster.predict(xgboost.DMatrix(X_test.head(60)))
    assert list(answered["prediction"]) == list(np.where(p > 0.5, "yes", "no"))


def test_models_onnx_cannot_hold_are_refused_clearly(home, churn_data):
    from mlflow.pyfunc import PythonModel

    class Constant(PythonModel):
        def predict(self, context, model_input, params=None):
            return [1] * len(model_input)

    X, y, _, _ = churn_data
    nd.register(Constant(), "const", X, y)
    with pytest.raises(nd.NbdeployError, match="ONNX"):
        nd.export("const/1", "onnx")
    with pytest.raises(nd.DeploymentError, match="ONNX runtime"):
        load("const/1", runtime="onnx")


def test_cli_export_onnx(champion, tmp_path, capsys):
    from nbdeploy.cli import main

    assert main(["export", "onnx", "churn@champion", "--output", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()
    assert '"ok": true' in capsys.readouterr().out
    assert main(["export", "onnx", "nope@champion"]) == 1
    shutil.rmtree(tmp_path)


def test_a_stored_conversion_serves_in_a_container_without_scikit_learn(
    home, churn_data, churn_models, tmp_path
):
    from tests.test_exports_docker import TOKEN, _instructions, run_entrypoint, wait_ready

    X, y, X_test, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, onnx=True)
    files = load(mv.ref).files
    assert registry.METADATA in files.files and "model.onnx" in files.files  # hashed with them
    assert files.json(registry.METADATA)["onnx"]["parity"]["ok"]
    context = nd.export(mv.ref, "docker", tmp_path / "ctx")
    entry = json.loads(_instructions((context / "Dockerfile").read_text())["ENTRYPOINT"][0])
    assert entry[-2:] == ["--runtime", "onnx"]
    assert any(
        r.startswith("onnxruntime==") for r in (context / "requirements.txt").read_text().split()
    )
    child, url = run_entrypoint(context, tmp_path)
    try:
        wait_ready(child, url, tmp_path / "server.log")
        rows = X_test.head(50)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        answer = httpx.post(
            url + "/invocations", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == list(churn_models[0].predict(rows))
        # scikit-learn's compiled modules load with it: none is mapped into the server
        maps = Path(f"/proc/{child.pid}/maps").read_text()
        assert "onnxruntime" in maps and "/sklearn/" not in maps
    finally:
        child.terminate()
        child.wait(timeout=30)


def test_a_changed_stored_conversion_is_refused(home, churn_data, churn_models):
    X, y, _, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, onnx=True)
    cached = registry.cache_path("churn", mv.version, registry.manifest_sha(mv))
    registry.fetch_model(mv)
    data = (cached / "model.onnx").read_bytes()
    (cached / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(nd.IntegrityError):
        load(mv.ref, runtime="onnx")


def test_a_conversion_that_answers_differently_is_not_registered(
    home, churn_data, churn_models, monkeypatch
):
    from nbdeploy.exports import to_onnx

    X, y, _, _ = churn_data
    monkeypatch.setattr(
        to_onnx, "parity", lambda *a: to_onnx.ParityReport(26, False, 0.3)
    )  # the failure mode in isolation: float32 flipping labels
    with pytest.raises(nd.NbdeployError, match="without onnx=True"):
        nd.register(churn_models[0], "churn", X, y, onnx=True)
    assert registry.model_names() == []


def test_a_numeric_model_on_its_stored_conversion_needs_neither_sklearn_nor_pandas(
    home, churn_data
):
    import subprocess
    import sys

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, X_test, _ = churn_data
    X, X_test = X.select_dtypes("number"), X_test.select_dtypes("number")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    mv = nd.register(model, "numeric", X, y, onnx=True)
    registry.fetch_model(mv)
    # what `nbdeploy serve --resolved` does in a new process: load, warm up, answer
    code = (
        "import sys, numpy as np; from nbdeploy.serving.adapter import load_verified; "
        f"m = load_verified('numeric', {mv.version}, {registry.manifest_sha(mv)!r}, "
        "runtime='onnx'); "
        f"out = m.predict(np.array({X_test.head(30).to_numpy().tolist()!r})); "
        "print(list(out.predictions)); "
        "print(sorted(k for k in ('sklearn', 'pandas', 'mlflow') if k in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    predictions, imported = done.stdout.strip().splitlines()
    assert predictions == repr(list(model.predict(X_test.head(30))))
    assert imported == "[]"


def test_a_model_fitted_on_a_bare_array_of_strings_serves_on_onnxruntime(home):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    X = rng.choice(["a", "b", "c"], size=(300, 2)).astype(object)
    y = (X[:, 0] == "a").astype(int)
    model = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(X, y)
    mv = nd.register(model, "strings", X, y, onnx=True)
    onnx_model = load(mv.ref, runtime="onnx")
    rows = onnx_model.schema.from_columns({"f0": list(X[:40, 0]), "f1": list(X[:40, 1])})
    assert list(onnx_model.predict(rows).predictions) == list(model.predict(X[:40]))
