"""``nbdeploy demo``: the quickstart end to end, headless, on the embedded defaults."""

from __future__ import annotations

import concurrent.futures
import time

import nbdeploy as nd
from nbdeploy.datasets import churn, churn_pipeline


def _say(step: str) -> None:
    print(f"\n== {step}", flush=True)


def main(requests: int = 500) -> None:
    import httpx

    from nbdeploy import config
    from nbdeploy.serving.client import split_payload

    print(f"nbdeploy home: {config.settings().home}")
    X, y = churn(3000, seed=0)
    X_test, y_test = churn(800, seed=1)

    _say("train and register two candidate models")
    first = nd.register(
        churn_pipeline(C=1.0).fit(X, y),
        "churn",
        X,
        y,
        description="quickstart: logistic regression, C=1.0",
    )
    second = nd.register(
        churn_pipeline(C=0.3).fit(X, y),
        "churn",
        X,
        y,
        description="quickstart: logistic regression, C=0.3",
    )
    print(f"registered {first.uri} and {second.uri}")

    _say(f"gate {first.ref}, promote it to @champion")
    report = nd.test(first, X_test, y_test, min_score=0.8, vs="champion")
    print(report.checks.to_string(index=False))
    nd.promote(first, to="champion", force=not report.passed)

    _say("serve churn@champion")
    dep = nd.serve("churn@champion", name="churn-demo")
    print(f"serving at {dep.url}")
    print(dep.predict(X_test.head(3)).to_string())

    _say(f"send {requests} single-row requests from 8 threads")
    bodies = [split_payload(X_test.iloc[[i % len(X_test)]]) for i in range(requests)]
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=dep.url, timeout=30) as http:  # keep-alive, like a real client
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda b: http.post("/invocations", content=b, headers=headers), bodies)
            )
        seconds = time.perf_counter() - started
    ok = sum(a.status_code == 200 for a in answers)
    print(
        f"{ok} of {len(answers)} answered in {seconds:.2f} s "
        f"({len(answers) / seconds:.0f} req/s, Python client and server on one machine)"
    )

    _say(f"gate {second.ref} against the champion; promote only if it is no worse")
    report = nd.test(second, X_test, y_test, min_score=0.8, vs="champion")
    print(report.checks.to_string(index=False))
    if report.passed:
        nd.promote(second, to="champion")
        time.sleep(config.settings().alias_poll_s * 2 + 0.5)
        print(f"server now answers with version {dep.predict(X_test.head(1))['model_version'][0]}")
        nd.rollback("churn")
        print("rolled back; history:")
        print(
            nd.history("churn")[
                ["time", "alias", "from_version", "to_version", "reason"]
            ].to_string(index=False)
        )

    logged = nd.logs("churn-demo")
    print(f"\nlogged predictions for churn-demo: {len(logged)}")
    nd.stop("churn-demo")
    print("server stopped. Open notebooks/quickstart.ipynb to do the same step by step.")


if __name__ == "__main__":
    main()
