"""`deadletter replay`: re-send dead letters and remove what was delivered. Letters are routed
to the sink that rejected them, or to the sinks of the schema that could not map them (or to
every `--sink` given, unless one of them is the sink that rejected the letter); what fails
again is dead-lettered again with the new reason. Also the warning that tells an operator a
sweep dead-lettered events, with the replay command for them."""

from __future__ import annotations

import shlex
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forwarder import PROG
from forwarder.config import Settings
from forwarder.deadletter import (
    CLAIMED,
    DeadLetter,
    DeadLetters,
    claim_for_replay,
    letter_event,
    read_file,
)
from forwarder.delivery import Delivery, Tally
from forwarder.intake import intake_problem
from forwarder.logs import get_logger
from forwarder.runtime import build_sinks
from forwarder.schemas import build_mappers
from forwarder.sinks.base import Sink
from forwarder.state import State, StreamLock


@dataclass
class ReplayResult:
    letters: int = 0
    delivered: int = 0
    kept: int = 0


def replay(settings: Settings, explicit_sinks: bool) -> ReplayResult:
    directory = settings.dead_letter_dir
    lock = StreamLock(settings.state_path, "dead letters")
    lock.acquire("deadletter replay")
    try:
        claimed = claim_for_replay(directory)
        if not claimed:
            return ReplayResult()
        letters = []
        for path in claimed:
            for _, number, letter in read_file(path):
                if "unreadable" in letter:
                    name = path.name.removesuffix(CLAIMED)
                    get_logger().warning(
                        "%s line %d: %s; kept as it is", name, number, letter["unreadable"]
                    )
                letters.append(letter)
        result = _deliver(settings, explicit_sinks, directory, letters)
        for path in claimed:
            path.unlink()
        return result
    finally:
        lock.release()


def _deliver(
    settings: Settings, explicit_sinks: bool, directory: Path, letters: list[dict[str, Any]]
) -> ReplayResult:
    sinks = build_sinks(settings, "replay")
    mappers = build_mappers(settings, {sink.mapping for sink in sinks})
    state = State(settings.state_path)
    stop = threading.Event()
    opener = Delivery(sinks, mappers, DeadLetters(directory, "replay"), stream="replay", stop=stop)
    result = ReplayResult(letters=len(letters))
    try:
        adopted = opener.open(state.sink_position)
        if adopted:
            state.set_sink_positions(adopted)
        groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
        unroutable: list[DeadLetter] = []
        now = time.time()
        for letter in letters:
            stream = str(letter.get("stream") or "replay")
            event = letter_event(letter)
            targets = _targets(letter, sinks, explicit_sinks)
            problem = intake_problem(event, now)
            if "unreadable" in letter:
                unroutable.append(_again(letter, stream, str(letter.get("reason"))))
            elif problem is not None:
                unroutable.append(_again(letter, stream, f"invalid event: {problem}"))
            elif not targets:
                unroutable.append(_again(letter, stream, "no configured sink for it"))
            else:
                groups[(stream, tuple(sink.name for sink in targets))].append(event)
        by_name = {sink.name: sink for sink in sinks}
        for (stream, names), events in groups.items():
            again = DeadLetters(directory, stream)
            delivery = Delivery(
                [by_name[name] for name in names],
                mappers,
                again,
                stream=stream,
                retry_timeout=settings.sink_retry_timeout,
                stop=stop,
            )
            for start in range(0, len(events), settings.batch_size):
                batch = events[start : start + settings.batch_size]
                delivery.deliver(batch)
                # The file sink's committed offset must cover what replay appended.
                state.set_sink_positions(opener.positions())
                opener.committed()
            result.kept += again.handed_in
            result.delivered += len(events) - again.handed_in
        opener.flush()
        DeadLetters(directory, "replay").add_many(unroutable)
        result.kept += len(unroutable)
        return result
    finally:
        opener.close()
        state.close()


def replay_command(settings: Settings, sinks: Sequence[str]) -> str:
    """The `deadletter replay` command, as a shell line, that sends the dead letters of a
    stream with these settings and `sinks` (their names) back to the sink that refused each,
    or to the sinks of the schema that could not map it."""
    args = [PROG, "deadletter", "replay", "--state", str(settings.state_path.resolve())]
    if settings.dead_letter is not None:
        args += ["--dead-letter", str(settings.dead_letter.resolve())]
    for sink in sinks:
        args += ["--sink", sink]
    if settings.output_schema != "ecs":
        args += ["--schema", settings.output_schema]
    if settings.ocsf_version is not None:
        args += ["--ocsf-version", settings.ocsf_version]
    if settings.original:
        args.append("--original")
    return shlex.join(args)


def warn_of_dead_letters(
    tally: Tally, settings: Settings, sinks: Sequence[str], stream: str, work: str
) -> None:
    """One warning for the dead letters a sweep or a backfill (`work`) wrote: how many, why
    (grouped), where, and the command that sends them again."""
    if not tally.dead_lettered:
        return
    get_logger().warning(
        "%d dead-lettered in this %s: %s; written to %s; after a fix, send them again with: %s",
        tally.dead_lettered,
        work,
        tally.reasons_text(),
        settings.dead_letter_dir.resolve(),
        replay_command(settings, sinks),
        extra={"stream": stream},
    )


def _targets(letter: dict[str, Any], sinks: list[Sink], explicit: bool) -> list[Sink]:
    if explicit:
        # Given the sink that refused it (as the command of `warn_of_dead_letters` does), a
        # letter goes back to that one alone; else to every sink given.
        own = [sink for sink in sinks if sink.name == letter.get("sink")]
        return own or sinks
    if letter.get("sink"):
        return [sink for sink in sinks if sink.name == letter["sink"]]
    schema = letter.get("schema")
    return [sink for sink in sinks if schema is None or schema in (sink.schema, sink.mapping)]


def _again(letter: dict[str, Any], stream: str, reason: str) -> DeadLetter:
    return DeadLetter(
        time.time(), stream, reason, letter_event(letter), letter.get("schema"), letter.get("sink")
    )
