"""Monitoring: drift against a model ref, data quality, performance, alerts to a webhook.

One module home, two real servers: ``live`` gets in-distribution traffic and feedback,
``crafted`` gets drifted rows, unseen categories and malformed requests, and runs its
alert timer every 0.3 s against a local webhook receiver.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy.monitoring import Rule, alerts, check_alerts, report
from nbdeploy.monitoring.metrics import ESTIMATE_LABEL
from tests.conftest import environ, eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def receiver():
    """A webhook receiver on 127.0.0.1 collecting the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(
        url + "/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def live(module_champion, churn_data):
    """``live``: 400 test rows in 4 requests, the first 200 labelled."""
    _, _, X_test, y_test = churn_data
    dep = nd.serve("churn@champion", name="live")
    answers = [dep.predict(X_test.iloc[i : i + 100]) for i in range(0, 400, 100)]
    ids = [pid for a in answers for pid in a["prediction_id"]]
    predictions = np.concatenate([a["prediction"].to_numpy() for a in answers])
    nd.feedback("live", ids[:200], list(y_test[:200]))
    return dep, predictions


@pytest.fixture(scope="module")
def crafted(module_champion, churn_data, receiver):
    """``crafted``: 300 training rows, charges +60, 6 unseen contracts, 20 bad requests."""
    X, _, _, _ = churn_data
    url, _ = receiver
    rows = X.iloc[:300].copy()
    rows["monthly_charges"] = rows["monthly_charges"] + 60
    rows["contract"] = rows["contract"].astype(str)
    rows.iloc[:6, rows.columns.get_loc("contract")] = "weekly"
    with environ(NBDEPLOY_ALERT_INTERVAL_S="0.3", NBDEPLOY_ALERT_WEBHOOK=url):
        dep = nd.serve("churn@champion", name="crafted")
    dep.predict(rows)
    bad = {"dataframe_split": {"columns": list(X.columns), "data": [["abc", 50.0, 1, "monthly"]]}}
    assert {_post(dep.url, bad) for _ in range(20)} == {422}
    # the server commits rejection counts every 0.2 s
    eventually(lambda: report("crafted").overview["rejected"] >= 20, what="rejections logged")
    return dep, rows


def test_drift_with_a_model_ref_flags_the_injected_column_only(module_champion, churn_data):
    _, _, X_test, _ = churn_data
    clean = nd.drift("churn@champion", X_test)
    assert not clean.drifted and clean.n_drifted == 0  # no false alarm
    shifted = X_test.assign(monthly_charges=X_test["monthly_charges"] * 1.5)
    for ref in ("churn@champion", "churn/1", "models:/churn/1", module_champion):
        report_ = nd.drift(ref, shifted)
        assert list(report_.columns.index[report_.columns["drifted"]]) == ["monthly_charges"]
        assert report_.columns.loc["monthly_charges", "psi"] > 0.2
        assert not report_.drifted  # 1 of 4 columns is below the dataset share


def test_quality_numbers_on_crafted_traffic(crafted, churn_data):
    X, _, _, _ = churn_data
    _, rows = crafted
    rep = report("crafted", "1h")
    q = rep.quality
    expected = float((rows["monthly_charges"] > X["monthly_charges"].max()).mean())
    assert 0.1 < expected < 1
    assert q.loc["monthly_charges", "out_of_range_rate"] == pytest.approx(expected)
    assert q.loc["tenure_months", "out_of_range_rate"] == 0
    assert q.loc["contract", "unseen_rate"] == pytest.approx(6 / 300)
    assert q.loc["contract", "unseen_categories"] == 1
    assert (q["missing_rate"] == 0).all() and (q["type_errors"] == 0).all()
    assert rep.rejections.to_dict("records") == [
        {"code": "schema_violation", "status": 422, "count": 20}
    ]
    o = rep.overview
    assert (o["requests"], o["predictions"], o["rejected"]) == (1, 300, 20)
    assert o["error_rate"] == pytest.approx(20 / 21)
    assert list(rep.drift.columns.index[rep.drift.columns["drifted"]]) == ["monthly_charges"]


def test_performance_from_feedback_and_the_labelled_estimate(live, churn_data, churn_models):
    from sklearn.metrics import f1_score, roc_auc_score

    _, _, X_test, y_test = churn_data
    _, predictions = live
    rep = report("live", "1h")
    overall = rep.performance.loc["all"]
    truth = y_test.to_numpy()[:200]
    assert (overall["predictions"], overall["labelled"]) == (400, 200)
    assert overall["accuracy"] == pytest.approx(float((predictions[:200] == truth).mean()))
    assert overall["f1"] == pytest.approx(f1_score(truth, predictions[:200], pos_label="yes"))
    proba = churn_models[0].predict_proba(X_test)
    assert overall["roc_auc"] == pytest.approx(roc_auc_score(truth == "yes", proba[:200, 1]))
    assert overall["estimated_accuracy"] == pytest.approx(proba.max(axis=1).mean())
    html = rep.sections()["Performance"]
    assert "estimated accuracy*" in html and ESTIMATE_LABEL in html
    assert "200</b> of 400 predictions have feedback" in html


def test_default_rules_raise_no_false_alarm_on_clean_traffic(live):
    checked = check_alerts("live")
    assert set(checked["status"]) <= {"ok", "no data"}
    assert checked.set_index("rule").loc["accuracy", "status"] == "ok"
    assert alerts("live").empty


def test_fired_alert_is_recorded_and_posted_once_per_cooldown(live, receiver):
    url, received = receiver
    rules = [Rule("accuracy_floor", "accuracy", "<", 0.99, min_rows=30), "error_rate > 0.5"]
    first = check_alerts("live", rules, webhook=url).set_index("rule")
    assert first.loc["accuracy_floor", "status"] == "fired"
    assert first.loc["error_rate > 0.5", "status"] == "ok"
    posted = [b for b in received if b["deployment"] == "live"]
    assert len(posted) == 1 and posted[0]["rule"] == "accuracy_floor"
    assert posted[0]["value"] == pytest.approx(first.loc["accuracy_floor", "value"])
    assert "accuracy" in posted[0]["text"]
    again = check_alerts("live", rules, webhook=url).set_index("rule")
    assert again.loc["accuracy_floor", "status"] == "repeat"
    assert len([b for b in received if b["deployment"] == "live"]) == 1
    recorded = alerts("live")
    assert recorded["rule"].tolist() == ["accuracy_floor"]
    assert recorded["webhook"].iloc[0] == "sent (204)"
    assert "accuracy_floor" in report("live").sections()["Alerts"]


def test_an_alert_is_recorded_before_its_webhook_and_outlives_a_flaky_receiver(live, capfd):
    import sqlite3

    from nbdeploy import config

    plan, recorded_first = [500, 503], []
    db = str(config.settings().audit_db)

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with sqlite3.connect(db) as other:  # what another reader sees meanwhile
                rows = other.execute("SELECT webhook FROM alerts WHERE rule = 'flaky'").fetchall()
            recorded_first.append(rows == [("sending",)])
            self.send_response(plan.pop(0) if plan else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/SECRET-TOKEN"
    rule = Rule("flaky", "accuracy", "<", 0.99, min_rows=30)
    try:
        with pytest.raises(nd.NbdeployError, match="http:// or https://") as caught:
            check_alerts("live", [rule], webhook=url.removeprefix("http://"))
        assert "SECRET" not in str(caught.value)
        assert "flaky" not in set(alerts("live")["rule"])
        checked = check_alerts("live", [rule], webhook=url).set_index("rule")
    finally:
        server.shutdown()
        server.server_close()
    assert checked.loc["flaky", "status"] == "fired"
    assert recorded_first == [True, True, True]  # in the log before every attempt
    row = alerts("live").set_index("rule").loc["flaky"]
    assert row["webhook"] == "sent (204) after 3 attempts"
    out, err = capfd.readouterr()
    assert "SECRET" not in out + err


def test_running_server_fires_alerts_on_its_timer(crafted, receiver):
    _, received = receiver
    # the checks run in a child process of the server, which first imports pandas & co
    deadline = time.monotonic() + 120
    fired: set[str] = set()
    while time.monotonic() < deadline and not {"error_rate", "feature_psi"} <= fired:
        fired = {b["rule"] for b in received if b["deployment"] == "crafted"}
        time.sleep(0.1)
    assert {"error_rate", "feature_psi"} <= fired
    # what every further tick of the timer does: the rules hold, but within the cooldown
    again = check_alerts("crafted").set_index("rule")
    assert set(again.loc[sorted(fired), "status"]) == {"repeat"}
    recorded = alerts("crafted")
    assert sorted(recorded["rule"]) == sorted(fired)
    assert (recorded["webhook"] == "sent (204)").all()
    psi = next(b for b in received if b["rule"] == "feature_psi")
    assert "monthly_charges" in psi["message"] and psi["model"] == "churn/1"


def test_a_fired_rule_can_start_a_retrain_job(live, tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from tests.conftest import kernel_name

    notebook = tmp_path / "retrain_stub.ipynb"
    nb = new_notebook(
        cells=[new_code_cell("reason = ''"), new_code_cell("print('retraining', reason)")],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, str(notebook))
    nd.schedule(
        notebook,
        every="1d",
        name="retrain-live",
        kernel=kernel_name(),
        parameters={"reason": "alert"},
    )
    rule = Rule("retrain_on_accuracy", "accuracy", "<", 0.99, min_rows=30, then="retrain-live")
    checked = check_alerts("live", [rule]).set_index("rule")
    assert checked.loc["retrain_on_accuracy", "status"] == "fired"
    assert "started job 'retrain-live'" in checked.loc["retrain_on_accuracy", "message"]
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = nd.jobs()
        mine = runs[runs["name"] == "retrain-live"] if len(runs) else runs
        if len(mine) and mine["status"].iloc[0] != "running":
            break
        time.sleep(1)
    runs = nd.jobs()
    run = runs[runs["name"] == "retrain-live"].iloc[0]
    assert run["status"] == "succeeded"
    with pytest.raises(nd.NbdeployError, match="no scheduled job"):
        check_alerts(
            "live", [Rule("bad", "accuracy", "<", 0.99, min_rows=30, then="nope")], cooldown_s=0
        )


def test_labels_of_another_type_than_the_predictions_still_score():
    import pandas as pd

    from nbdeploy.monitoring.metrics import _classification

    part = pd.DataFrame({"prediction": [1, 0, 1, 1] * 10, "proba_0": [0.2, 0.8, 0.3, 0.1] * 10,
                         "proba_1": [0.8, 0.2, 0.7, 0.9] * 10})  # fmt: skip
    from_csv = _classification(part, pd.Series([1.0, 0.0, 0.0, 1.0] * 10))  # floats
    assert from_csv["accuracy"] == 0.75 and from_csv["roc_auc"] == 1.0
    three = _classification(part, pd.Series([1, 0, 2, 1] * 10))  # a label never predicted
    assert three["accuracy"] == 0.75 and 0 < three["f1"] < 1


def test_audit_performance_scores_integer_classes_as_a_classifier(home):
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from nbdeploy import auditing

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (X["a"] > 0).astype(int)  # classes 0 and 1, as integers
    nd.register(LogisticRegression().fit(X, y), "ints", X, y)
    scored = nd.score("ints/1", X)
    nd.feedback("ints", scored["prediction_id"], y.astype(float))  # labels read back as floats
    perf = auditing.performance("ints").set_index("version").loc[1]
    assert perf["metric"] == "accuracy" and perf["value"] > 0.9


def test_drift_of_a_model_trained_on_an_array_takes_arrays(home):
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 3))
    nd.register(LinearRegression().fit(X, X @ [1.0, 2.0, 3.0]), "arr", X, X @ [1.0, 2.0, 3.0])
    current = rng.normal(size=(2000, 3))
    current[:, 2] += 1.0
    report = nd.drift("arr/1", current)
    assert report.columns["drifted"].to_dict() == {"f0": False, "f1": False, "f2": True}


def test_time_windows_take_durations_and_refuse_nonsense():
    import time as clock

    from nbdeploy.auditlog import parse_time

    assert abs(parse_time("1h") - (clock.time() - 3600)) < 5
    assert parse_time("2026-01-31T12:00") == 1769860800.0
    with pytest.raises(nd.AuditLogError, match="is not a time"):
        parse_time("yesterday-ish")


def test_the_alert_child_ends_soon_after_its_server(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    # a stand-in server: starts the child with itself as parent, waits until the child
    # sleeps in its loop (the kernel names the wait), then is gone
    spawn = (
        "import os, subprocess, sys, time; code = 'import sys; from nbdeploy.monitoring."
        "alerting import alert_loop; alert_loop(sys.argv[1], float(sys.argv[2]), "
        "int(sys.argv[3]))'; "
        "quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "child = subprocess.Popen([sys.executable, '-c', code, 'x', '60', str(os.getpid())], "
        "**quiet); "
        "wchan, deadline = f'/proc/{child.pid}/wchan', time.monotonic() + 60\n"
        "while open(wchan).read() != 'hrtimer_nanosleep':\n"
        "    assert time.monotonic() < deadline, 'the child never slept'\n"
        "    time.sleep(0.05)\n"
        "print(child.pid, flush=True)"
    )
    out = subprocess.run(
        [sys.executable, "-c", spawn], capture_output=True, text=True, check=True, timeout=90
    )
    stat = Path(f"/proc/{int(out.stdout)}/stat")

    def gone() -> bool:  # a zombie waiting for its new parent to reap it counts as gone
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
        except FileNotFoundError:
            return True

    # an interval is 60 s: before, the child slept it out and ran one more check
    eventually(gone, 20, "the orphaned alert child to exit")
