"""The one retry policy of the forwarder, built on tenacity. Every layer that retries (the API
source, `Delivery`, and the Fluentd, RELP and syslog sinks) gets its `Retrying` from `retrying`
here and only says which failures are passing (its classifier) and how to word them.

- Sleep: on the stop signal (`stop.wait`), raising `Stopped` as soon as it fires. tenacity's own
  `sleep_using_event` returns early and then makes one more attempt; tenacity calls the sleep
  outside the attempt, so raising there ends the loop with nothing half done.
- Stop: the stop signal, or the layer's budget (attempts, or seconds since the first attempt).
- Wait: `Backoff`: jittered exponential backoff with a cap, at least as long as a `retry_after`
  hint the failure carries (the server's own ask), still capped.
- `before_sleep` writes the warning and counts the retry: no call site logs its own retries.
- Giving up raises what the layer words from the last failure and the number of attempts;
  a failure the classifier does not retry is raised as it is.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from forwarder.errors import Stopped
from forwarder.logs import get_logger

# With a hint from the server, wait at least this share of the backoff: a server that keeps
# answering "retry-after: 0" is still backed off from.
HINT_SHARE = 0.25
_MAX_EXPONENT = 62  # 2.0 ** 1024 overflows; any cap is reached long before


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Backoff(wait_base):
    """Before retry n: a time drawn from [b/2, b] with b = min(cap, base * 2**(n-1)) ("equal
    jitter": clients spread apart, yet none retries at once). A failure that carries
    `retry_after` (seconds, from `retry_delay_from_headers`) is waited for at least that long.
    Never more than `cap`; with `budget` seconds, never past the budget's end, so that the last
    attempt comes at the end rather than a backoff before it."""

    def __init__(
        self,
        base: float,
        cap: float,
        budget: float | None = None,
        failures: Callable[[RetryCallState], int] = lambda state: state.attempt_number,
    ) -> None:
        self.base = base
        self.cap = cap
        self.budget = budget
        self.failures = failures  # n: attempts so far, or those in a row without progress

    def __call__(self, retry_state: RetryCallState) -> float:
        exponent = min(self.failures(retry_state) - 1, _MAX_EXPONENT)
        high = min(self.cap, self.base * 2.0**exponent)
        wait = random.uniform(high / 2, high)
        outcome = retry_state.outcome
        hint = getattr(outcome.exception(), "retry_after", None) if outcome else None
        if hint is not None:
            wait = max(float(hint), wait * HINT_SHARE)
        wait = min(wait, self.cap)
        if self.budget is not None:
            wait = min(wait, max(0.0, self.budget - (retry_state.seconds_since_start or 0.0)))
        return wait


def sleep_until_stopped(stop: threading.Event, what: str) -> Callable[[float], None]:
    """A tenacity sleep that wakes on `stop` and then raises `Stopped`."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopped(f"stopped while waiting to retry {what}")

    return sleep


def retrying(
    *,
    stop: threading.Event,
    what: str,
    passing: Callable[[BaseException], bool],
    base: float,
    cap: float,
    attempts: int | None = None,
    progress: Callable[[], int] | None = None,
    within: float | None = None,
    describe: Callable[[BaseException], str] = str,
    counter: _Counter | None = None,
    give_up: Callable[[BaseException, int], BaseException] | None = None,
    log_extra: Mapping[str, Any] | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> Retrying:
    """A retrier for one layer. `passing(exc)` says whether a failure is worth another attempt
    (the layer's one classifier); it waits `Backoff(base, cap)`. The budget is `attempts` (in
    all; with `progress`, in a row without progress, which also restarts the backoff), or
    `within` seconds from the first attempt, or both, whichever ends first. Each retry logs
    `describe(exc)` as a warning and counts on `counter`; after the last attempt
    `give_up(exc, attempts)` is raised (the last failure itself without it). `what` names the
    layer in a `Stopped`. `on_retry(text)` hears each retry too (/healthz shows it)."""
    failures = FailuresInARow(progress) if progress is not None else None
    budget: stop_base = stop_when_event_set(stop)
    if attempts is not None:
        budget = budget | (
            stop_after_failures(attempts, failures) if failures else stop_after_attempt(attempts)
        )
    if within is not None:
        budget = budget | stop_after_delay(within)
    log = get_logger()

    def before_sleep(state: RetryCallState) -> None:
        assert state.outcome is not None
        if counter is not None:
            counter.inc()
        text = f"{describe(state.outcome.exception())}; retry {state.attempt_number} in " + (
            f"{state.upcoming_sleep:.2f}s"
        )
        log.warning("%s", text, extra=dict(log_extra or {}))
        if on_retry is not None:
            on_retry(text)

    def last_failure(state: RetryCallState) -> Any:
        assert state.outcome is not None
        if stop.is_set():
            raise Stopped(f"stopped while waiting to retry {what}")
        exc = state.outcome.exception()
        assert exc is not None
        if give_up is None:
            raise exc
        raise give_up(exc, state.attempt_number) from None

    return Retrying(
        sleep=sleep_until_stopped(stop, what),
        stop=budget,
        wait=Backoff(base, cap, within, failures) if failures else Backoff(base, cap, within),
        retry=retry_if_exception(passing),
        before_sleep=before_sleep,
        retry_error_callback=last_failure,
    )


class FailuresInARow:
    """How many attempts in a row have failed without progress: `progress()` grows whenever an
    attempt got something through (RELP's acknowledged messages), and the count starts again
    from the attempt that moved it. Asked once or more per failed attempt, in order."""

    def __init__(self, progress: Callable[[], int]) -> None:
        self.progress = progress
        self._seen = progress()
        self._before = 0  # attempts before the run of failures that counts

    def __call__(self, retry_state: RetryCallState) -> int:
        if (now := self.progress()) != self._seen:
            self._seen = now
            self._before = retry_state.attempt_number - 1
        return retry_state.attempt_number - self._before


class stop_after_failures(stop_base):
    """Stop once `failures(state)` reaches `attempts`."""

    def __init__(self, attempts: int, failures: Callable[[RetryCallState], int]) -> None:
        self.attempts = attempts
        self.failures = failures

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.failures(retry_state) >= self.attempts
