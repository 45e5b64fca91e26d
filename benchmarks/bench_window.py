"""What reading an hour of traffic costs: ``nd.logs`` and the server's alert check.

    .venv/bin/python benchmarks/bench_window.py [--records 180000] [--repeat 3]

A throwaway home with the benchmark model of ``bench_serving.py`` (as ``bench@champion``)
and ``--records`` single-row records logged through ``AuditLog.append`` over the last
hour, the way the server logs them (50 requests a second make 180,000 in an hour).
Then, medians of ``--repeat`` runs:

- ``nd.logs(name, since="1h")`` against the anchor, the same frame built record by
  record with the public ``decode_record`` / ``decode_inputs`` (what ``nd.logs`` did
  before it grouped records by layout); the two frames are checked equal;
- one alert check (``check_alerts``, the default rules over the one-hour window) read
  in full, as any process does, and as the server's alert child does it: its window
  kept (``keep_windows``), after another minute of traffic (3,000 records) was logged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_longlog
import bench_serving as bs
from bench_monitor import median_seconds


def record_by_record(name: str, since: float) -> Any:
    """The frame ``nd.logs`` gives, decoded one record at a time (the anchor)."""
    import numpy as np
    import pandas as pd

    from nbdeploy.auditlog import META_COLUMNS, decode_inputs, decode_record, shared

    rows: list[dict[str, Any]] = []
    for rid, req, ts, model, version, alias, role, latency, n, payload, inputs in shared().records(
        name, since=since
    ):
        body = decode_record(payload, inputs)
        features = decode_inputs(body)
        proba = body.get("proba")
        for j in range(n):
            row = dict(zip(META_COLUMNS, (f"{rid}-{j}", req, ts, model, version, alias, role,
                                          latency), strict=True))  # fmt: skip
            row.update({c: values[j] for c, values in features.items()})
            row["prediction"] = np.asarray(body["predictions"])[j].item()
            if proba is not None:
                for k, cls in enumerate(body["classes"]):
                    row[f"proba_{cls}"] = float(proba[j][k])
                row["score"] = float(max(proba[j]))
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    return frame


def log_minute(records: list[Any], count: int) -> None:
    """``count`` more single-row records, spread over the last minute."""
    from nbdeploy.auditlog import Record, shared

    now = time.time()
    shared().append([
        Record(os.urandom(8).hex(), "bench", "bench", 1, "champion", "served", 1, 0.4,
               records[i % len(records)][9], records[i % len(records)][10],
               ts=now - 60.0 * (count - i) / count)
        for i in range(count)
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=180_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="nbdeploy-window-"))
    os.environ["NBDEPLOY_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "NBDEPLOY_TRACKING_URI", "NBDEPLOY_AUDIT_DB"):
        os.environ.pop(key, None)
    import pandas as pd

    import nbdeploy as nd
    from nbdeploy import config
    from nbdeploy.auditlog import shared
    from nbdeploy.monitoring import data
    from nbdeploy.monitoring.alerting import check_alerts

    config.reset()
    X, _ = bs.train_and_register()
    nd.promote("bench/1", to="champion", force=True)
    hour = 3600.0
    fill = bench_longlog.fill(config.settings().audit_db, args.records, 5000,
                              0.98 * hour / 86400, X.iloc[0].tolist())  # fmt: skip
    print(f"logged {args.records:,} records over the last hour ({fill['rate']:,.0f}/s)")
    since = time.time() - hour
    grouped = nd.logs("bench", since=since)
    pd.testing.assert_frame_equal(grouped, record_by_record("bench", since), check_dtype=False)
    print(f"nd.logs and the record-by-record anchor agree on {len(grouped):,} rows")
    logs_new = median_seconds(lambda: nd.logs("bench", since=since), args.repeat)
    logs_old = median_seconds(lambda: record_by_record("bench", since), args.repeat)
    full = median_seconds(lambda: check_alerts("bench"), args.repeat)
    data.keep_windows()
    check_alerts("bench")  # the child's first check reads the whole window
    sample = shared().records("bench", limit=256)
    kept = []
    for _ in range(args.repeat):
        log_minute(sample, 3000)
        started = time.perf_counter()
        check_alerts("bench")
        kept.append(time.perf_counter() - started)
    print(f"\n{args.records:,} single-row records in the window, medians of {args.repeat}; "
          f"1-min load average {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print("| what | time |\n|---|---:|")
    print(f"| `nd.logs(since=1h)`, record by record (anchor) | {logs_old:.2f} s |")
    print(f"| `nd.logs(since=1h)`, grouped by layout | {logs_new:.2f} s |")
    print(f"| alert check, window read in full | {full:.2f} s |")
    print(f"| alert check, window kept (the alert child), a minute later | "
          f"{statistics.median(kept):.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
