"""The exception tree of the core and of opsctl.

    OpsError                    base; the docstring is the default message
    ├── ConfigError             bad settings or policy: the CLI exits 2
    ├── ServiceUnavailable      a dependency (database, Redis, embedder) cannot be reached
    │   └── EmbedderError       the embedding backend failed (retryable)
    ├── NotFound                the thing asked for does not exist (or belongs to another company)
    └── OperationFailed         a command ran and its outcome is a failure: the CLI exits 1

HTTP input errors are not exceptions of this tree: the API turns them into 4xx JSON directly.
"""

from __future__ import annotations


class OpsError(Exception):
    """opsctl failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(OpsError):
    """Invalid configuration."""

    exit_code = 2


class ServiceUnavailable(OpsError):
    """A required service is unavailable."""


class EmbedderError(ServiceUnavailable):
    """The embedding backend failed."""


class NotFound(OpsError):
    """Not found."""


class OperationFailed(OpsError):
    """The operation failed."""
