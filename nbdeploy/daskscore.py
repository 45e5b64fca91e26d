"""``nd.score(ref, "data/*.parquet", output=DIR, engine="dask")``: batch scoring on Dask.

The unit of work is one input file: a Dask task loads the verified model once per
worker process (cached), streams the file in row batches of ``chunk_rows``
(``NBDEPLOY_SCORE_CHUNK_ROWS``) through :func:`nbdeploy.scoring.score_loaded`, logs
every batch to the audit log with role ``batch`` as in-process scoring does, and writes
``DIR/<input name>`` atomically, in the input's row order. Nothing but a row count
travels back to the caller, so the caller's memory does not grow with the data, and a
worker holds one batch of one file at a time (each worker runs one task at a time):
peak memory is set by ``chunk_rows``, not by the size of the files.

The cluster is ``NBDEPLOY_DASK_SCHEDULER`` when set (its workers must see the same
``NBDEPLOY_HOME``, or the same tracking server and audit database, and the input and
output paths), else a local cluster of processes started for the call and closed
after it. Progress is a bar over rows, advanced as files finish.
"""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path
from typing import Any

from nbdeploy import config
from nbdeploy.exceptions import NbdeployError

_MISSING = "engine='dask' needs Dask: pip install nbdeploy[dask]"


def parquet_files(data: Any) -> list[Path]:
    """The Parquet files a folder or glob names, sorted."""
    text = os.fspath(data)
    if os.path.isdir(text):
        found = sorted(Path(text).glob("*.parquet")) + sorted(Path(text).glob("*.pq"))
    else:
        found = sorted(Path(p) for p in glob.glob(text) if p.lower().endswith((".parquet", ".pq")))
    if not found:
        raise NbdeployError(f"no Parquet files match {text!r}; give a folder or a glob")
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise NbdeployError(
            f"{text!r} matches two files of the same name; outputs are named after inputs"
        )
    return sorted(found, key=lambda p: p.name)


def _client() -> tuple[Any, Any]:
    """(client, cluster we started or None)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise NbdeployError(_MISSING) from None
    address = config.settings().dask_scheduler
    if address:
        return Client(address), None
    workers = max(1, min(2, os.cpu_count() or 1))
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit="2GiB",
        dashboard_address=None,
        silence_logs=40,
    )
    return Client(cluster), cluster


@functools.lru_cache(maxsize=4)
def _model(name: str, version: int, manifest_sha: str) -> Any:
    from nbdeploy.serving.adapter import load_verified

    return load_verified(name, version, manifest_sha)


def _score_file(
    name: str, version: int, sha: str, src: str, dst: str, log: bool, rows: int | None
) -> int:
    """One task on a worker: score ``src`` into ``dst``; the number of rows back."""
    import pyarrow.parquet as pq

    from nbdeploy.scoring import score_loaded

    score_loaded(
        _model(name, version, sha), src, output=dst, log=log, chunk_rows=rows, progress=False
    )
    return int(pq.ParquetFile(src).metadata.num_rows)


def score(
    ref: str,
    data: Any,
    *,
    output: str | os.PathLike[str] | None,
    log: bool = True,
    chunk_rows: int | None = None,
) -> Path:
    """Score every Parquet file of ``data`` into the folder ``output``; ``output`` back."""
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from nbdeploy import integrity, registry

    if output is None:
        raise NbdeployError("engine='dask' writes one file per input: give output=FOLDER")
    files = parquet_files(data)
    folder = Path(output)
    if folder.suffix.lower() in (".parquet", ".pq", ".csv"):
        raise NbdeployError("with engine='dask', output is a folder (one file per input file)")
    mv = registry.resolve(ref)
    path = registry.fetch_model(mv)
    sha = registry.manifest_sha(mv) or ""
    integrity.verify(path, sha, what=f"{mv.name}/{mv.version}")  # refuse before any task
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {str(p): int(pq.ParquetFile(p).metadata.num_rows) for p in files}
    client, cluster = _client()
    try:
        from dask.distributed import as_completed

        futures = {
            client.submit(
                _score_file, mv.name, mv.version, sha, str(src), str(folder / src.name),
                log, chunk_rows, pure=False,
            ): src
            for src in files
        }  # fmt: skip
        with tqdm(total=sum(sizes.values()), unit="rows", desc=f"scoring {mv.ref} on Dask") as bar:
            for future in as_completed(futures):
                src = futures[future]
                try:
                    future.result()
                except NbdeployError as exc:
                    raise NbdeployError(f"{src.name}: {exc}") from None
                bar.update(sizes[str(src)])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return folder
