"""``Deployment``, the handle of a running server, and the small HTTP client (standard
library only) it calls. It lives here, not among the value types of ``models``, so
that values never import the server."""

from __future__ import annotations

import html
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from nbdeploy.exceptions import DeploymentError, NbdeployError, SchemaError
from nbdeploy.models import _badge, _table
from nbdeploy.schema import in_pandas_terms

if TYPE_CHECKING:
    import pandas as pd


def _call(
    url: str, body: bytes | None = None, token: str | None = None, timeout: float = 60.0
) -> Any:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = orjson.loads(exc.read())["error"]
        except Exception:
            error = {"code": str(exc.code), "message": exc.reason}
        if isinstance(error, dict) and error.get("code") in ("schema_violation", "bad_request"):
            raise SchemaError(error["message"], code=error["code"]) from None
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise DeploymentError(f"the server answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeploymentError(
            f"cannot reach the server at {url}: {exc}; is it running? (see nd.deployments())"
        ) from None


def call(url: str, payload: Any, token: str | None = None) -> Any:
    """POST a JSON object to a deployment route."""
    return _call(url, orjson.dumps(payload), token)


def health(url: str) -> bool:
    try:
        return _call(url + "/health", timeout=2.0).get("status") == "ready"
    except DeploymentError:
        return False


def status(dep: Deployment) -> dict[str, Any]:
    try:
        info: dict[str, Any] = _call(dep.url + "/info", token=dep.token, timeout=5.0)
        return info
    except DeploymentError as exc:
        return {"status": "unreachable", "error": str(exc)}


def split_payload(X: Any) -> bytes:
    """A DataFrame (or array) as MLflow's ``dataframe_split``; missing values as null."""
    import pandas as pd

    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
    values = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
    split: dict[str, Any] = {"data": values}
    if isinstance(X, pd.DataFrame):  # arrays go positionally, as they were trained
        split["columns"] = [str(c) for c in frame.columns]
    return orjson.dumps({"dataframe_split": split})


def predict(dep: Deployment, X: Any) -> pd.DataFrame:
    import pandas as pd

    try:
        answer = _call(dep.url + "/invocations", split_payload(X), dep.token)
    except SchemaError as exc:
        raise in_pandas_terms(exc, X) from None
    index = X.index if isinstance(X, pd.DataFrame) else None
    columns = {
        "prediction": answer["predictions"],
        "prediction_id": answer["prediction_ids"],
        "model_version": int(answer["model_version"]),
    }
    if "fallback" in answer:
        columns["fallback"] = answer["fallback"]
        columns["fallback_reason"] = answer["fallback_reason"]
    return pd.DataFrame(columns, index=index)


@dataclass(frozen=True)
class Deployment:
    """A running (or stopped) model server."""

    name: str
    ref: str
    url: str
    pid: int
    version: int | None = None
    token: str | None = field(default=None, repr=False)

    def predict(self, X: Any) -> pd.DataFrame:
        """Send rows to the server; returns predictions with their ids."""
        try:
            return predict(self, X)
        except NbdeployError as exc:  # the user's mistake: no frames from the client
            raise exc.with_traceback(None) from None

    def status(self) -> dict[str, Any]:
        return status(self)

    def stop(self) -> None:
        from nbdeploy.serving.process import stop

        stop(self.name)

    def _repr_html_(self) -> str:
        # every value the server sent is text to escape, whatever its type
        state = self.status()
        live = state.get("status") == "ready"
        warnings = state.get("warnings") or []
        warnings = warnings if isinstance(warnings, list) else [warnings]

        def text(value: Any) -> str:
            return html.escape(str(value))

        return _table(
            f"deployment {self.name}",
            [
                ("url", f"<code>{text(self.url)}</code>"),
                ("serves", text(f"{self.ref} (version {state.get('model_version', '?')})")),
                ("pid", text(self.pid)),
                ("requests", text(state.get("requests", ""))),
                ("predictions logged", text(state.get("predictions", ""))),
                ("warnings", text("; ".join(str(w) for w in warnings)) or "none"),
            ],
            _badge(str(state.get("status", "unknown")), live),
        )
