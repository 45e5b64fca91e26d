"""``nd.anomalies``: a detector fitted and hash-verified at registration, scored later."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nbdeploy as nd
from nbdeploy import registry
from nbdeploy.exceptions import IntegrityError, NbdeployError
from nbdeploy.monitoring.anomalies import DETECTOR


def test_anomalies_flag_unusual_rows_and_name_their_features(home, churn_data, churn_models):
    X, y, X_test, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    meta = json.loads((registry.fetch_model(mv) / registry.METADATA).read_text())
    assert meta["anomaly"]["fpr"] == 0.01 and meta["anomaly"]["seconds"] > 0
    normal = X_test.head(300)
    odd = X_test.head(20).assign(monthly_charges=1000.0, tenure_months=500)
    nd.score(mv.ref, normal)
    nd.score(mv.ref, odd)
    scored = nd.anomalies("churn")
    assert {"prediction_id", "anomaly_score", "anomalous", "anomaly_features"} <= set(scored)
    assert len(scored) == 320
    # about 1% of ordinary rows (held-out calibration), every crafted row
    assert scored["anomalous"].iloc[:300].mean() < 0.05
    assert scored["anomalous"].iloc[300:].all()
    reasons = scored["anomaly_features"].iloc[300]
    assert "monthly_charges=1000" in reasons and "tenure_months=500" in reasons
    assert scored["anomaly_score"].iloc[300:].min() > scored["anomaly_score"].iloc[:300].median()
    recent = nd.anomalies("churn", since="1h")
    assert len(recent) == 320


def test_the_detector_is_hash_verified(home, churn_data, churn_models):
    X, y, X_test, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y)
    nd.score(mv.ref, X_test.head(5))
    path = registry.fetch_model(mv)
    (path / DETECTOR).write_bytes((path / DETECTOR).read_bytes() + b"\0")
    from nbdeploy.monitoring import logged

    logged._version.cache_clear()
    with pytest.raises(IntegrityError):
        nd.anomalies("churn")


def test_registered_without_detector_says_what_to_do(home, churn_data, churn_models):
    X, y, X_test, _ = churn_data
    mv = nd.register(churn_models[0], "churn", X, y, anomaly_fpr=None)
    nd.score(mv.ref, X_test.head(5))
    with pytest.raises(NbdeployError, match="re-register"):
        nd.anomalies("churn")
    with pytest.raises(NbdeployError, match="between 0 and 1"):
        nd.register(churn_models[0], "churn", X, y, anomaly_fpr=1.5)


def test_fpr_holds_on_fresh_rows_from_the_training_distribution(home):
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(5000, 4)), columns=list("abcd"))
    y = X.sum(axis=1)
    mv = nd.register(LinearRegression().fit(X, y), "lin", X, y, anomaly_fpr=0.05)
    fresh = pd.DataFrame(rng.normal(size=(4000, 4)), columns=list("abcd"))
    nd.score(mv.ref, fresh)
    rate = nd.anomalies("lin")["anomalous"].mean()
    assert 0.03 < rate < 0.07
