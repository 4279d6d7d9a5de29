"""The one place where an exception becomes an exit code: a `ForwarderError` its own
`exit_code` (1 runtime, 2 configuration), an interrupt 130, a reader of stdout that went away
141 (as a shell reports SIGPIPE), and anything else, a bug, 1. Every failure is one line on
stderr, redacted."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from forwarder import PROG
from forwarder.errors import ForwarderError, one_line
from forwarder.logs import get_logger, redact

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away
STDOUT_FD = 1


def handle_errors(func: Callable) -> Callable:
    """Turn every failure into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ForwarderError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`map ... | head`): stop quietly with the shell's SIGPIPE
            # status, and keep the interpreter's final flush from failing a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), STDOUT_FD)
            sys.exit(EXIT_PIPE_CLOSED)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # a bug: still one line, the traceback with -v
            get_logger().debug("internal error", exc_info=True)
            _fail(f"internal error: {type(exc).__name__}: {exc}", 1)

    return wrapper


def _fail(message: str, code: int) -> None:
    click.echo(f"{PROG}: error: {one_line(redact(message))}", err=True)
    sys.exit(code)
