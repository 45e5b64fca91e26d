"""What to tell a user who mistyped a name, in the words of the face they used.

Error messages name the Python call that fixes the problem (``nd.promote('churn/1',
to='champion')``). Someone who typed ``%deploy promote ...`` should read the magic
instead: :func:`as_magic` rewrites those calls at the magic's boundary, so each
message is written once. :func:`unknown_name` turns a name that matches nothing
into a "did you mean" from the deployments and registered models that exist.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from nbdeploy.exceptions import NbdeployError

_Q = r"'([^']*)'"
_SUBCOMMANDS = "register|test|promote|rollback|history|serve|stop|logs|feedback|score|audit|compare"
#: Python call in a message -> the %deploy line that does the same
_MAGIC = [
    (re.compile(r"nd\.deployments\(\)"), "%deploy list"),
    (re.compile(rf"nd\.promote\({_Q}, to={_Q}\)"), r"%deploy promote \1 --to \2"),
    (re.compile(rf"nd\.test\({_Q}, (\w+), (\w+)\)"), r"%deploy test \1 --data \2 \3"),
    (
        re.compile(rf"nd\.register\(model, {_Q}, X, y\)"),
        r"%deploy register MODEL_VAR --name \1 --data X_VAR Y_VAR",
    ),
    (
        re.compile(r"nd\.register\(model, name, X, y\)"),
        "%deploy register MODEL_VAR --name NAME --data X_VAR Y_VAR",
    ),
    (re.compile(rf"nd\.(stop|history|logs|monitor|compare)\({_Q}\)"), r"%deploy \1 \2"),
    (re.compile(r"nd\.logs\(name\)"), "%deploy logs NAME"),
    (re.compile(rf"nd\.({_SUBCOMMANDS})\b(?!\()"), r"%deploy \1"),  # "run nd.test on it first"
    (re.compile(r"force=True"), "--force"),
    (re.compile(r"another name="), "another --name"),
]


def as_magic(message: str) -> str:
    """``message`` with its ``nd.<call>(...)`` hints written as ``%deploy`` lines."""
    for pattern, replacement in _MAGIC:
        message = pattern.sub(replacement, message)
    return message


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` was most likely a typo of, if any is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def known_names() -> list[str]:
    """Names a user may pass where a deployment or model is meant."""
    from nbdeploy import config, registry

    deployments = [p.stem for p in config.settings().deployments_dir.glob("*.json")]
    return sorted({*deployments, *registry.model_names()})


def unknown_name(name: str) -> NbdeployError | None:
    """The error for ``name`` when no deployment or registered model has it, else None."""
    known = known_names()
    if name in known:
        return None
    guess = closest(name, known)
    if guess is not None:
        return NbdeployError(f"no deployment or model is named {name!r}; did you mean {guess!r}?")
    listed = ", ".join(map(repr, known[:10])) or "none yet"
    return NbdeployError(f"no deployment or model is named {name!r} (known: {listed})")
