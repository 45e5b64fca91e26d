"""A small synthetic churn dataset for the quickstart, the demo and the tests.

Generated, not downloaded, so everything runs offline. It has the shapes real
tabular data has: numeric and categorical columns, an integer column, and a
target that depends on several features with noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def churn(n: int = 2000, *, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Features ``X`` and a binary target ``y`` ("yes"/"no") for ``n`` customers."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    contract = rng.choice(["monthly", "yearly", "two-year"], size=n, p=[0.55, 0.3, 0.15])
    tenure = rng.integers(1, 72, size=n)
    charges = np.round(rng.normal(70, 25, size=n).clip(15, 150), 2)
    calls = rng.poisson(1.5, size=n)
    logit = (
        -1.0
        + 1.6 * (contract == "monthly")
        - 0.05 * tenure
        + 0.015 * charges
        + 0.45 * calls
        + rng.normal(0, 0.6, size=n)
    )
    X = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "contract": pd.Categorical(contract, categories=["monthly", "yearly", "two-year"]),
        }
    )
    y = pd.Series(np.where(logit > 0, "yes", "no"), name="churn")
    return X, y


def churn_pipeline(C: float = 1.0) -> Any:
    """The quickstart's model: scaling and one-hot encoding, then a logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure_months", "monthly_charges", "support_calls"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["contract"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=C, max_iter=1000))])
