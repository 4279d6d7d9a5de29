"""Logging setup: text or JSON lines on stderr, with every known secret redacted."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import Any

import orjson

LOGGER_NAME = "forwarder"
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


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    CONTEXT = ("stream", "sink", "window")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "message": redact(record.getMessage()),
        }
        for key in self.CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = redact(str(value))
        if record.exc_info:
            doc["error"] = redact(self.formatException(record.exc_info).splitlines()[-1])
        return orjson.dumps(doc).decode()


def setup_logging(log_format: str = "text", verbosity: int = 0) -> logging.Logger:
    level = {-2: logging.CRITICAL, -1: logging.ERROR, 0: logging.INFO}.get(
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
