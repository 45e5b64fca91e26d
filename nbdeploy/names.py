"""Names of models, deployments, aliases and jobs: one rule, checked where a name enters.

A name ends up in file paths (``deployments/<name>.json``), URLs, SQL rows, log lines,
generated files and the code the lab panel inserts into a notebook, where IPython
expands ``{expr}`` and ``$var`` in magics. So every name matches :data:`RULE` (ASCII
letters and digits, then also ``.``, ``_``, ``-``; at most 128 characters), checked
when it enters: by the API (``nd.register``, ``nd.serve(name=)``, ``nd.promote(to=)``,
refs, ``nd.schedule``), and therefore by every face built on it (magics, CLI, lab
REST), and when names are read back from files others could write.
"""

from __future__ import annotations

import re

from nbdeploy.exceptions import InvalidNameError

RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(RULE)


def is_valid(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check(name: object, kind: str = "model") -> str:
    """``name`` if it follows the rule, else an :class:`InvalidNameError` saying which rule."""
    if is_valid(name):
        return name  # type: ignore[return-value]
    raise InvalidNameError(
        f"{_shown(name)} is not a valid {kind} name: use 1 to 128 of A-Z a-z 0-9 . _ -, "
        f"starting with a letter or digit (e.g. 'churn'; rule {RULE})"
    )


def _shown(name: object) -> str:
    """The offending value on one line and short: repr escapes newlines and quotes."""
    text = repr(name)
    return text if len(text) <= 60 else text[:50] + "...' (" + f"{len(str(name))} characters)"
