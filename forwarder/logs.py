"""Logging setup: text or JSON lines on stderr, with every known secret redacted."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

LOGGER_NAME = "forwarder"
_SECRETS: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Never let this value reach a log line."""
    if secret and len(secret) >= 6:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


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
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
