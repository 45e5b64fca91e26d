"""Jobs: parameterized notebooks run with papermill, each run recorded in MLflow.

``run_job`` executes a notebook in the caller's working directory (relative paths in
parameters mean what the caller means) on a kernel running this Python, unless told
otherwise. Before anything runs, the parameters are checked against the notebook's
``parameters`` cell. Every run is an MLflow run in nbdeploy's experiment: its
parameters, status, the executed notebook as an artifact, what the notebook
reported (:func:`report`) and tags naming the model versions it registered (the
job kernel gets ``NBDEPLOY_JOB_RUN_ID``, which ``nd.register`` records as lineage).

Guarantees: ``timeout`` bounds the whole job (each cell gets what remains), and a
timed-out job ends as failed with its notebook marked where it stopped (papermill
alone marks every cell "completed"). The executed notebook appears atomically at
its output path. Widget state is not stored, so the notebook renders offline.
Promotions a job asks for are checked when asked and made only when the job
succeeds, so a failed or timed-out job promotes nothing (``registry.promote``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbdeploy import config
from nbdeploy.exceptions import JobError
from nbdeploy.models import JobRun

if TYPE_CHECKING:
    import pandas as pd

#: The MIME type a notebook reports its results with (read back from the outputs).
RESULT_MIME = "application/vnd.nbdeploy.result+json"
TEMPLATES = Path(__file__).parent / "templates"
TAG = "nbdeploy."


def report(results: Mapping[str, Any] | None = None, **values: Any) -> None:
    """Report a job's results: ``report(version=3, promoted=True)``.

    Displayed as a custom MIME output, which ``run_job`` reads back into
    ``JobRun.results`` (several calls merge, later keys win). Values must be
    JSON-serializable; numpy scalars are converted.
    """
    from IPython.display import display

    data = {str(k): _plain(v) for k, v in {**(results or {}), **values}.items()}
    text = ", ".join(f"{k}={v!r}" for k, v in data.items())
    display({RESULT_MIME: data, "text/plain": f"job results: {text}"}, raw=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()  # numpy scalars and arrays alike
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def typed(value: str) -> Any:
    """A ``-p KEY VALUE`` value typed as papermill's command line types it."""
    if value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[value]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def resolve_notebook(notebook: str | os.PathLike[str], cwd: Path | None = None) -> Path:
    """A path (relative to ``cwd``), or a bare name like ``"retrain"`` for a packaged one."""
    text = os.fspath(notebook)
    if not text.endswith(".ipynb") and os.sep not in text and "/" not in text:
        packaged = TEMPLATES / f"{text}.ipynb"
        if packaged.is_file():
            return packaged
        known = ", ".join(sorted(p.stem for p in TEMPLATES.glob("*.ipynb")))
        raise JobError(f"no packaged notebook named {text!r} (packaged: {known}); give a path")
    path = Path(text).expanduser()
    path = path if path.is_absolute() else (cwd or Path.cwd()) / path
    if not path.is_file():
        raise JobError(f"notebook {text!r} not found (looked at {path})")
    return path.resolve()


def check_parameters(path: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's declared parameters; refuses a name it does not declare, or a value
    whose type differs from the default's (for int, float, bool and str defaults)."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        names = ", ".join(sorted(declared)) or "none (no cell tagged 'parameters')"
        raise JobError(
            f"{path.name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {names}"
        )
    for key, value in parameters.items():
        kind = parameter_type(declared[key])
        if not _fits(kind, value):
            raise JobError(
                f"parameter {key!r} of {path.name} is {kind!s} (default "
                f"{declared[key].get('default')}); give a {kind}, not a {type(value).__name__}"
            )
    return declared


def parameter_type(info: Mapping[str, Any]) -> str:
    """A declared parameter's type: its annotation, else the type of its literal default."""
    import ast

    annotated = info.get("inferred_type_name")
    if annotated and annotated != "None":
        return str(annotated)
    try:
        default = ast.literal_eval(str(info.get("default")))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "None"  # an expression: the notebook decides
    return "None" if default is None else type(default).__name__


def _fits(kind: str | None, value: Any) -> bool:
    """Whether ``value`` can stand in for a default of papermill's inferred type ``kind``."""
    if value is None or kind not in ("int", "float", "bool", "str"):
        return True  # None, lists, dicts, expressions: the notebook decides
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, numbers.Integral)  # numpy integers register as Integral
    if kind == "float":
        return isinstance(value, numbers.Real)
    return isinstance(value, str | os.PathLike)


# -- kernels ---------------------------------------------------------------------


def _kernel_dir() -> Path:
    return config.settings().home / "kernels"


def _spec_manager() -> Any:
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    ksm.kernel_dirs = [*ksm.kernel_dirs, str(_kernel_dir())]
    return ksm


def default_kernel() -> str:
    """A kernel running this Python: ``python3`` if it does, else one nbdeploy creates."""
    import hashlib

    ksm = _spec_manager()
    specs = ksm.get_all_specs()
    exe = os.path.abspath(sys.executable)
    for name in sorted(specs, key=lambda n: (n != "python3", n)):
        argv = specs[name].get("spec", {}).get("argv") or [""]
        if os.path.isabs(argv[0]) and os.path.abspath(argv[0]) == exe:
            return name
    name = "nbdeploy-" + hashlib.sha256(exe.encode()).hexdigest()[:10]
    folder = _kernel_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [exe, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({exe})",
        "language": "python",
    }
    _atomic_write(folder / "kernel.json", json.dumps(spec, indent=1))
    return name


def _manager_class(env: dict[str, str]) -> type:
    """A kernel manager that starts the job kernel with ``env`` and sees our kernels."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class JobKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _job_spec_manager(self) -> Any:
            return _spec_manager()

        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw["env"] = env
            spec = self.kernel_spec
            if spec is not None and any("ipykernel" in part for part in spec.argv):
                # its one warning, "running over TCP without encryption", is about a
                # kernel bound to 127.0.0.1 for this job alone, yet shows in red in the
                # notebook that started the job; errors still show
                kw["extra_arguments"] = [*kw.get("extra_arguments", ()),
                                         "--IPKernelApp.log_level=ERROR"]  # fmt: skip
            await super().start_kernel(**kw)

    return JobKernelManager


# -- running ------------------------------------------------------------------------


def run_job(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    progress: bool = True,
    name: str | None = None,
    scheduled_for: float | None = None,
    run_id: str | None = None,
) -> JobRun:
    """Run a parameterized notebook with papermill and record the run.

    ``notebook`` is a path, or a bare name (``"retrain"``, ``"audit"``) for a notebook
    packaged with nbdeploy. ``output`` defaults to ``$NBDEPLOY_HOME/jobs/runs/``.
    ``timeout`` (seconds) bounds the whole job. ``cwd`` (default: the current
    directory) is where the kernel runs. Returns a ``JobRun``; a failure is reported
    in it (``status="failed"``, ``error``), not raised. ``run_id`` continues a record
    made by :func:`start_record` (the scheduler answers with that id before the run).
    """
    params = dict(parameters or {})
    workdir = Path(cwd).resolve() if cwd is not None else Path.cwd()
    source = resolve_notebook(notebook, workdir)
    check_parameters(source, params)
    if timeout is not None and timeout <= 0:
        raise JobError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if kernel is None:
        kernel = default_kernel()
    else:
        try:
            _spec_manager().get_kernel_spec(kernel)
        except Exception:
            known = ", ".join(sorted(_spec_manager().find_kernel_specs()))
            raise JobError(f"no kernel named {kernel!r} (known: {known})") from None
    if run_id is None:
        run_id = _start_record(source, params, kernel, name, scheduled_for)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = (
        Path(output)
        if output is not None
        else _runs_dir() / f"{source.stem}-{stamp}-{run_id[:8]}.ipynb"
    )
    target = (target if target.is_absolute() else workdir / target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{run_id[:8]}.tmp.ipynb")
    started = time.time()
    try:
        error, failed_cell = _execute(
            source, tmp, params, kernel, workdir, target, run_id, timeout, progress
        )
    except BaseException:
        tmp.unlink(missing_ok=True)
        from nbdeploy import registry

        registry.settle_promotions(run_id, succeeded=False)
        _finish_record(run_id, "failed", "interrupted", None, {}, ())
        raise
    results: dict[str, Any] = {}
    if tmp.is_file():
        results = read_results(tmp)
        os.replace(tmp, target)  # the executed notebook appears whole, or not at all
    status = "failed" if error else "succeeded"
    produced = _produced(run_id)
    from nbdeploy import registry

    promoted = registry.settle_promotions(run_id, succeeded=not error)  # failed: nothing
    _finish_record(
        run_id, status, error, target if target.is_file() else None, results, produced,
        failed_cell=failed_cell, promoted=promoted,
    )  # fmt: skip
    return JobRun(
        run_id=run_id,
        notebook=str(source),
        status=status,
        output_path=str(target) if target.is_file() else None,
        error=error,
        results=results,
        parameters=params,
        kernel=kernel,
        started=started,
        duration_s=round(time.time() - started, 3),
        produced=produced,
        failed_cell=failed_cell,
        name=name,
        promoted=tuple(promoted),
    )


def _execute(
    source: Path,
    tmp: Path,
    params: dict[str, Any],
    kernel: str,
    workdir: Path,
    target: Path,
    run_id: str,
    timeout: float | None,
    progress: bool,
) -> tuple[str | None, int | None]:
    """Run papermill into ``tmp``; returns (error message, index of the failing cell)."""
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    deadline = time.monotonic() + timeout if timeout else None
    running: dict[str, Any] = {}

    def remaining(cell: Any = None) -> float | None:
        # nbclient asks as each cell starts: that cell gets what is left of the budget
        if cell is not None:
            running.update(id=cell.get("id"), source=cell.get("source", ""))
        return None if deadline is None else max(deadline - time.monotonic(), 0.01)

    env = config.child_env(JPY_SESSION_NAME=str(target), NBDEPLOY_JOB_RUN_ID=run_id)
    try:
        papermill.execute_notebook(
            str(source),
            str(tmp),
            parameters=params,
            kernel_name=kernel,
            cwd=str(workdir),
            progress_bar=False,  # papermill's is a widget: blank in saved notebooks
            engine_name=_progress_engine() if progress else None,
            start_timeout=math.ceil(min(60.0, remaining() or 60.0)),
            request_save_on_cell_execute=True,
            kernel_manager_class=_manager_class(env),
            timeout_func=remaining,
            store_widget_state=False,
        )
    except PapermillExecutionError as exc:
        line = next((s for s in exc.source.splitlines() if s.strip()), "")
        return (
            f"cell In [{exc.exec_count}] ({line.strip()[:60]!r}) raised {exc.ename}: {exc.evalue}",
            exc.cell_index,
        )
    except (CellTimeoutError, TimeoutError, RuntimeError) as exc:
        timed_out = deadline is not None and time.monotonic() >= deadline - 0.05
        if not timed_out and not isinstance(exc, CellTimeoutError):
            return _crashed(exc), None
        return _mark_timeout(tmp, timeout or 0.0, running)
    except Exception as exc:
        return _crashed(exc), None
    return None, None


def _progress_engine() -> str:
    """papermill's nbclient engine, with nbdeploy's progress bar (one cell a step)."""
    from papermill.engines import NBClientEngine, papermill_engines

    from nbdeploy.progress import Progress

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kw: Any) -> Any:
            nb_man.pbar = Progress(len(nb_man.nb.cells), desc="Executing", unit="cell")
            return super().execute_managed_notebook(nb_man, kernel_name, **kw)

    papermill_engines.register("nbdeploy", ProgressEngine)
    return "nbdeploy"


def _crashed(exc: BaseException) -> str:
    return f"the job could not run: {type(exc).__name__}: {exc}"


def _mark_timeout(tmp: Path, timeout: float, running: dict[str, Any]) -> tuple[str, int | None]:
    """Make the kept notebook show where the timeout stopped it, as papermill does for errors.

    papermill marks every cell "completed" after a timeout; ``running`` is the cell
    nbclient was executing (recorded as it asked for that cell's timeout).
    """
    import nbformat
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import raise_for_execution_errors

    message = f"the job exceeded its timeout of {timeout:g} s"
    if not tmp.is_file():
        return message + " before its notebook started", None
    nb = nbformat.read(str(tmp), as_version=4)
    index = next(
        (
            i
            for i, c in enumerate(nb.cells)
            if running
            and (
                c.get("id") == running["id"] if running.get("id") else c.source == running["source"]
            )
        ),
        None,
    )
    if index is None:
        for c in nb.cells:
            c.metadata.setdefault("papermill", {})["status"] = "pending"
        _atomic_write(tmp, nbformat.writes(nb))
        return message + " while the kernel was starting", None
    for c in nb.cells[index + 1 :]:
        c.metadata.setdefault("papermill", {})["status"] = "pending"
    cell = nb.cells[index]
    evalue = f"{message} while this cell was running; later cells did not run"
    cell.setdefault("outputs", []).append(
        nbformat.v4.new_output("error", ename="TimeoutError", evalue=evalue, traceback=[evalue])
    )
    cell.metadata.papermill.update(status="failed", exception=True)
    nb.metadata.setdefault("papermill", {})["exception"] = True
    try:
        raise_for_execution_errors(nb, str(tmp))  # adds papermill's error banner and saves
    except PapermillExecutionError:
        pass
    line = next((s for s in cell.source.splitlines() if s.strip()), "")
    return f"{message} in cell {index} ({line.strip()[:60]!r})", index


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What the notebook reported with :func:`report`, merged in cell order."""
    nb = json.loads(Path(path).read_text())
    results: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get(RESULT_MIME)
            if isinstance(data, dict):
                results.update(data)
    return results


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _runs_dir() -> Path:
    return config.ensure_home() / "jobs" / "runs"


# -- records ------------------------------------------------------------------------


def _start_record(
    source: Path,
    params: dict[str, Any],
    kernel: str,
    name: str | None,
    scheduled_for: float | None,
) -> str:
    from nbdeploy import registry

    c = registry.client()
    tags = {
        "mlflow.runName": f"job-{name or source.stem}",
        "mlflow.user": config.settings().user,
        "mlflow.source.name": str(source),
        TAG + "kind": "job",
        TAG + "job.notebook": str(source),
        TAG + "job.kernel": kernel,
        TAG + "job.status": "running",
        TAG + "job.parameters": json.dumps(_plain(params), default=str)[:4900],
    }
    if name:
        tags[TAG + "job.name"] = name
    if scheduled_for is not None:
        tags[TAG + "job.scheduled_for"] = repr(scheduled_for)
    run = c.create_run(registry._experiment_id(), tags=tags)
    for key, value in list(params.items())[:100]:
        c.log_param(run.info.run_id, key, str(value)[:500])
    return str(run.info.run_id)


def start_record(
    notebook: str,
    parameters: Mapping[str, Any],
    kernel: str | None,
    name: str,
    scheduled_for: float,
    cwd: str,
) -> str:
    """Record a run before it starts in another process (checked as ``run_job`` checks)."""
    params = dict(parameters)
    source = resolve_notebook(notebook, Path(cwd))
    check_parameters(source, params)
    return _start_record(source, params, kernel or default_kernel(), name, scheduled_for)


def abandon_record(run_id: str, error: str) -> None:
    """Close a record whose run never got going (the spec went stale, or it was killed)."""
    _finish_record(run_id, "failed", error, None, {}, ())


def _finish_record(
    run_id: str,
    status: str,
    error: str | None,
    notebook: Path | None,
    results: dict[str, Any],
    produced: tuple[str, ...],
    *,
    failed_cell: int | None = None,
    promoted: list[str] | None = None,
) -> None:
    from nbdeploy import registry

    c = registry.client()
    if failed_cell is not None:
        c.set_tag(run_id, TAG + "job.failed_cell", str(failed_cell))
    if promoted:
        c.set_tag(run_id, TAG + "job.promoted", ",".join(promoted))
    if error:
        c.set_tag(run_id, TAG + "job.error", error[:4900])
    if results:
        c.set_tag(run_id, TAG + "job.results", json.dumps(results, default=str)[:4900])
        for key, value in results.items():
            # MLflow metric names are restricted; every result is in the tag regardless
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and re.fullmatch(r"[\w\-. /]{1,250}", key) and math.isfinite(value):
                c.log_metric(run_id, key, float(value))
    if produced:
        c.set_tag(run_id, TAG + "job.produced", ",".join(produced))
    if notebook is not None:
        c.set_tag(run_id, TAG + "job.output", str(notebook))
        c.log_artifact(run_id, str(notebook), "notebook")
    c.set_tag(run_id, TAG + "job.status", status)  # last: a reader seeing it sees the rest
    c.set_terminated(run_id, status="FINISHED" if status == "succeeded" else "FAILED")


def _produced(run_id: str) -> tuple[str, ...]:
    """Model versions registered by this job's kernel, each tagged with the job run."""
    from nbdeploy import registry

    c = registry.client()
    found = c.search_runs(
        [registry._experiment_id()], filter_string=f"tags.`{TAG}job_run_id` = '{run_id}'"
    )
    refs = []
    for run in found:
        for mv in c.search_model_versions(f"run_id='{run.info.run_id}'"):
            c.set_model_version_tag(mv.name, mv.version, TAG + "job_run_id", run_id)
            refs.append(f"{mv.name}/{mv.version}")
    return tuple(sorted(refs))


def jobs(limit: int | None = None) -> pd.DataFrame:
    """Recorded job runs, newest first, with the scheduled times that were skipped."""
    import pandas as pd

    from nbdeploy import registry

    runs = registry.client().search_runs(
        [registry._experiment_id()],
        filter_string=f"tags.`{TAG}kind` = 'job'",
        order_by=["attributes.start_time DESC"],
        max_results=limit or 1000,
    )
    rows = []
    for run in runs:
        t = run.data.tags
        end = run.info.end_time
        scheduled = t.get(TAG + "job.scheduled_for")
        rows.append(
            {
                "run_id": run.info.run_id,
                "name": t.get(TAG + "job.name") or Path(t.get(TAG + "job.notebook", "")).stem,
                "notebook": t.get(TAG + "job.notebook"),
                "status": t.get(TAG + "job.status", "unknown"),
                "started": run.info.start_time / 1000.0,
                "duration_s": (end - run.info.start_time) / 1000.0 if end else None,
                "parameters": t.get(TAG + "job.parameters", "{}"),
                "produced": t.get(TAG + "job.produced", ""),
                "results": t.get(TAG + "job.results", "{}"),
                "error": t.get(TAG + "job.error"),
                "output_path": t.get(TAG + "job.output"),
                "scheduled_for": float(scheduled) if scheduled else None,
                "failed_cell": int(t[TAG + "job.failed_cell"])
                if TAG + "job.failed_cell" in t
                else None,
                "promoted": t.get(TAG + "job.promoted", ""),
            }
        )
    from nbdeploy import scheduler

    for name, when, at in scheduler.skipped(limit or 1000):
        rows.append({"name": name, "status": "skipped", "started": at, "scheduled_for": when})
    rows.sort(key=lambda r: r["started"], reverse=True)
    frame = pd.DataFrame(rows[: limit or None], columns=_JOB_COLUMNS)
    for col in ("started", "scheduled_for"):
        frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
    return frame


_JOB_COLUMNS = ["run_id", "name", "notebook", "status", "started", "duration_s", "parameters"]
_JOB_COLUMNS += ["produced", "results", "error", "output_path", "scheduled_for", "failed_cell"]
_JOB_COLUMNS += ["promoted"]
