"""Errors that end a command, each with its exit code and a one-line message."""

from __future__ import annotations


class ForwarderError(Exception):
    """A failure reported to the user as one line; `exit_code` is 1 (runtime) or 2 (usage)."""

    exit_code = 1


class ConfigError(ForwarderError):
    """An invalid setting or usage (exit 2). The message names the setting."""

    exit_code = 2


class SourceError(ForwarderError):
    """The audit-log source failed (API refused, unreachable, malformed input). `status` is the
    HTTP status of the API's answer, if the failure is one; `retry_after` the seconds the API
    asked to wait before the next attempt (`retry-after` and `x-ratelimit-reset-*` headers)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AuthError(SourceError):
    """The API refused the key (401/403)."""


class StateLockedError(ForwarderError):
    """Another process holds the lock on this stream."""


class StorageError(ForwarderError):
    """A passing fault of the machine under the state or the dead letters (disk full, a
    read-only file system, an I/O error): exit 1, and the daemon tries again next sweep."""


class Stopped(ForwarderError):
    """A stop signal arrived while a batch was not yet acknowledged: nothing was committed."""

    exit_code = 0


class DeliveryError(ForwarderError):
    """A sink did not accept a batch within the retry budget."""


def one_line(value: object) -> str:
    """`value` as text on one line: every run of whitespace (line breaks included) becomes
    one space. Errors are reported as one line, whatever a peer or a library put in them."""
    return " ".join(str(value).split())
