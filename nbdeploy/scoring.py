"""``nd.score``: batch scoring of a DataFrame, CSV or Parquet file, in chunks.

The model runs in this process (no HTTP: bulk data does not belong on the
wire), chunk by chunk with a progress bar, and every chunk is logged with role
``batch`` so batch predictions are as auditable as served ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy.auditlog import Record, shared
from nbdeploy.exceptions import NbdeployError
from nbdeploy.progress import Progress
from nbdeploy.serving.batching import Predictor


def _chunks(data: Any, rows: int) -> tuple[Iterator[Any], int]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return (data.iloc[i : i + rows] for i in range(0, len(data), rows)), len(data)
    path = Path(data)
    if not path.is_file():
        raise NbdeployError(f"{str(data)!r} is neither a DataFrame nor a readable file")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        source = pq.ParquetFile(path)
        batches = source.iter_batches(batch_size=rows)
        return (b.to_pandas() for b in batches), source.metadata.num_rows
    if path.suffix.lower() in (".csv", ".txt", ".gz"):
        with path.open("rb") as fh:
            total = max(sum(1 for _ in fh) - 1, 0)
        return iter(pd.read_csv(path, chunksize=rows)), total
    raise NbdeployError(f"cannot read {path.name}: give a DataFrame, a .csv or a .parquet file")


def score(
    ref: str,
    data: Any,
    *,
    output: str | os.PathLike[str] | None = None,
    log: bool = True,
    chunk_rows: int | None = None,
) -> Any:
    """Score ``data`` with ``ref``: a DataFrame back, or ``output`` written and its path back."""
    import pandas as pd

    from nbdeploy.serving.adapter import load

    model = load(ref)
    if isinstance(data, pd.DataFrame):  # refuse bad rows before any chunk is scored or logged
        model.schema.from_frame(data)
    rows = chunk_rows or config.settings().score_chunk_rows
    chunks, total = _chunks(data, rows)
    job = uuid.uuid4().hex[:16]
    target = Path(output) if output is not None else None
    if target is not None and target.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise NbdeployError(f"cannot write {target.name}: use a .csv or .parquet output path")
    tmp = target.with_name(f".{target.name}.{job}.tmp") if target is not None else None
    writer: Any = None
    parts = []
    try:
        with Progress(
            total=total,
            unit="rows",
            desc=f"scoring {model.name} v{model.version.version}",
            disable=total < rows,
        ) as bar:
            for chunk in chunks:
                columns = model.schema.from_frame(chunk)
                out = model.predict(columns)
                result = chunk.copy()
                result["prediction"] = out.predictions
                if out.proba is not None and model.classes is not None:
                    for j, cls in enumerate(model.classes):
                        result[f"proba_{cls}"] = out.proba[:, j]
                    result["score"] = out.proba.max(axis=1)
                if log:
                    payload, inputs = Predictor._payload(model, columns, out)
                    record = Record(
                        request_id=job,
                        deployment="",
                        model_name=model.name,
                        model_version=model.version.version,
                        alias=model.alias,
                        role="batch",
                        n_rows=len(chunk),
                        latency_ms=0.0,
                        payload=payload,
                        inputs=inputs,
                    )
                    shared().append([record])
                    result["prediction_id"] = record.prediction_ids()
                if tmp is not None and target is not None:
                    writer = _write(tmp, result, writer, csv=target.suffix.lower() == ".csv")
                else:
                    parts.append(result)
                bar.update(len(chunk))
        if writer is not None and hasattr(writer, "close"):
            writer.close()
        if tmp is not None and target is not None:
            if not tmp.exists():
                raise NbdeployError("there were no rows to score")
            os.replace(tmp, target)  # readers never see a half-written file
            return target
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    if not parts:
        raise NbdeployError("there were no rows to score")
    return pd.concat(parts) if len(parts) > 1 else parts[0]


def _write(path: Path, frame: Any, writer: Any, *, csv: bool) -> Any:
    if csv:
        frame.to_csv(path, mode="a", header=writer is None, index=False)
        return True
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema)
    writer.write_table(table)
    return writer
