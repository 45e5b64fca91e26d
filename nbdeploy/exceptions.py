"""All nbdeploy exceptions.

Every message says what went wrong and what to do about it. The magics turn any
``NbdeployError`` into a one-line IPython ``UsageError``; raised from a Python call in
a notebook, it shows as one line too (``_render_traceback_``), since the frames inside
nbdeploy say nothing the message does not (``%xmode verbose`` shows them).

::

    NbdeployError
     ├── ConfigError            a setting is malformed
     ├── InvalidNameError       a name breaks the naming rule (also ValueError)
     ├── RegistryError          registry lookups and writes
     │    ├── ModelNotFoundError    (also a LookupError)
     │    ├── SignatureError        no signature can be built from the data
     │    └── PromotionError        gate not passed, nothing to roll back to
     ├── IntegrityError         artifact hashes do not match what nd.register wrote
     ├── SchemaError            input does not match the model's signature (also ValueError)
     ├── DeploymentError        a server failed to start, or a name is taken
     ├── AuditLogError          the prediction log cannot be read or written
     └── JobError               a job or schedule is malformed (also ValueError)
"""

from __future__ import annotations


class NbdeployError(Exception):
    """Root of every error nbdeploy raises on purpose."""

    def _render_traceback_(self) -> list[str]:
        """What IPython prints instead of a traceback: the error's one line."""
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:  # pragma: no cover - IPython calls this, so it is there
            shell = None
        tb = getattr(shell, "InteractiveTB", None)
        if tb is not None and tb.mode == "Verbose":  # asked for every frame: debugging
            lines: list[str] = tb.structured_traceback(type(self), self, self.__traceback__)
            return lines
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class ConfigError(NbdeployError):
    """An ``NBDEPLOY_*`` setting or argument is malformed."""


class InvalidNameError(NbdeployError, ValueError):
    """A model, deployment, alias or job name breaks the rule of ``nbdeploy.names``."""


class RegistryError(NbdeployError):
    """The MLflow registry refused or could not answer."""


class ModelNotFoundError(RegistryError, LookupError):
    """A ref names no registered model, version or alias."""

    def __init__(self, message: str, ref: str = "") -> None:
        super().__init__(message)
        self.ref = ref

    def __reduce__(self):  # keep the field when pickled across processes
        return (type(self), (str(self), self.ref))


class SignatureError(RegistryError):
    """nbdeploy cannot build an input signature for the model."""


class PromotionError(RegistryError):
    """An alias move was refused (failed gate, nothing to roll back to)."""


class IntegrityError(NbdeployError):
    """An artifact's sha256 differs from the one recorded at registration."""


class SchemaError(NbdeployError, ValueError):
    """Input rows do not match the model's signature.

    ``code`` is the HTTP error code the server answers with (``schema_violation``
    or ``bad_request``); ``column`` names the offending column when there is one.
    """

    def __init__(self, message: str, column: str | None = None, code: str = "schema_violation"):
        super().__init__(message)
        self.column = column
        self.code = code

    def __reduce__(self):
        return (type(self), (str(self), self.column, self.code))


class DeploymentError(NbdeployError):
    """A deployment could not be started, found or stopped."""


class AuditLogError(NbdeployError):
    """The prediction log could not be written or read."""


class JobError(NbdeployError, ValueError):
    """A job cannot run as asked: unknown notebook, parameter, kernel or schedule."""
