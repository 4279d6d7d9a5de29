"""Logging setup: text or JSON lines on stderr, with every known secret redacted. Each line
names the stream it belongs to: a stream's work runs inside `stream_context(NAME)` (its
thread, or the part of a loop that sweeps it), so the source, the delivery, the sinks and the
retry policy need not pass the name along; threads a stream starts carry it (`carry_context`).

Verbosity: 0 INFO; 1 (`-v`) adds the start-up line and one line per API request and per sink
batch (the logger `forwarder.verbose`, silent below -v, so that a command that fails at start
prints its one error line alone); 2 (`-vv`) DEBUG; -1 ERROR; -2 CRITICAL."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

LOGGER_NAME = "forwarder"
# The start-up line, one line per API request and per sink batch: shown from -v on.
VERBOSE_LOGGER = "forwarder.verbose"
# The stream whose work the current thread (or loop) does; see `stream_context`.
_STREAM: contextvars.ContextVar[str | None] = contextvars.ContextVar("stream", default=None)
REDACTED = "[REDACTED]"
_SECRETS: set[str] = set()
# Any OpenAI key shape (sk-admin-…, sk-proj-…, sk-…), also one we were never given, such as a
# key echoed back by a proxy; and the user:password part of a URL (endpoint_url=, base URLs).
_KEY_TOKEN = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*.]{6,}")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@?#]+@")


def register_secret(secret: str | None) -> None:
    """Never let this value reach any output: the whole value and each of its lines (a key
    file with a second line must not leak that line either)."""
    if not secret:
        return
    for part in [secret, *secret.splitlines()]:
        part = part.strip()
        if len(part) >= 6:
            _SECRETS.add(part)


def redact(text: str) -> str:
    """`text` with every registered secret, every `sk-…` token and every URL password
    replaced. The one place every output path (logs, errors, /healthz, dead-letter reasons)
    goes through."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return strip_url_credentials(_KEY_TOKEN.sub(_redact_key_token, text))


def _redact_key_token(match: re.Match[str]) -> str:
    """A key, or a key masked by the API (`sk-adm****wxyz`), is redacted; a hint that names a
    key's shape (`sk-admin-...`) is not a key and stays readable."""
    token = match.group()
    if "*" in token or sum(char.isalnum() for char in token) >= 16:
        return REDACTED
    return token


def strip_url_credentials(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://[REDACTED]@host`, wherever it appears
    (also inside a parameter such as `endpoint_url=`)."""
    return _URL_CREDENTIALS.sub(REDACTED + "@", text)


@contextlib.contextmanager
def stream_context(stream: str) -> Iterator[None]:
    """Every log line of this thread names `stream` until the block ends (a line's own
    `extra={"stream": ...}` still wins)."""
    token = _STREAM.set(stream)
    try:
        yield
    finally:
        _STREAM.reset(token)


def carry_context(target: Callable[..., Any]) -> Callable[..., Any]:
    """`target` to run in a new thread with the caller's context (its stream): a thread
    starts with an empty one. Call once per thread (a context runs in one thread at once)."""
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> Any:
        return context.run(target, *args, **kwargs)

    return run


# Where a line belongs, in this order: text lines show them in brackets, JSON as keys.
CONTEXT = ("stream", "sink", "window")


def _context(record: logging.LogRecord) -> dict[str, str]:
    found = {}
    for key in CONTEXT:
        value = getattr(record, key, None)
        if value is None and key == "stream":
            value = _STREAM.get()
        if value is not None:
            found[key] = redact(str(value))
    return found


class _TextFormatter(logging.Formatter):
    """`TIME LEVEL [stream=NAME sink=URL window=FROM/TO] message`; the brackets only when the
    line belongs to a stream, a sink or a window."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = _context(record)
        where = " ".join(f"{key}={value}" for key, value in context.items())
        where = f"[{where}] " if where else ""
        return f"{record.asctime} {record.levelname} {where}{record.message}"

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": redact(record.getMessage()),
        }
        doc.update(_context(record))
        if record.exc_info:
            doc["error"] = redact(self.formatException(record.exc_info).splitlines()[-1])
        return orjson.dumps(doc).decode()


def setup_logging(log_format: str = "text", verbosity: int = 0) -> logging.Logger:
    level = {-2: logging.CRITICAL, -1: logging.ERROR, 0: logging.INFO, 1: logging.INFO}.get(
        verbosity, logging.DEBUG if verbosity > 0 else logging.ERROR
    )
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # The start-up, request and batch lines from -v on; below, only its warnings pass.
    verbose = logging.getLogger(VERBOSE_LOGGER)
    verbose.setLevel(logging.NOTSET if verbosity > 0 else logging.WARNING)
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    threading.excepthook = _log_thread_crash
    # Library warnings (an unverified TLS request, …) through the same redacting handler.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = [handler]
    logging.getLogger("py.warnings").propagate = False
    return logger


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    """A thread that dies of a bug is logged through the redacting formatter, instead of
    Python's default traceback on stderr, which would show the exception text as it is."""
    if args.exc_type is SystemExit:
        return
    get_logger().error(
        "internal error in thread %s: %s: %s",
        args.thread.name if args.thread else "?",
        args.exc_type.__name__,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def verbose_logger() -> logging.Logger:
    """The logger of the start-up line and the per-request and per-batch lines (`-v`)."""
    return logging.getLogger(VERBOSE_LOGGER)
