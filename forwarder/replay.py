"""`deadletter replay`: re-send dead letters and remove what was delivered. Letters are routed
to the sink that rejected them, or to the sinks of the schema that could not map them (or to
every `--sink` given); what fails again is dead-lettered again with the new reason."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forwarder.config import Settings
from forwarder.deadletter import (
    CLAIMED,
    DeadLetter,
    DeadLetters,
    claim_for_replay,
    letter_event,
    read_file,
)
from forwarder.delivery import Delivery
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


def _targets(letter: dict[str, Any], sinks: list[Sink], explicit: bool) -> list[Sink]:
    if explicit:
        return sinks
    if letter.get("sink"):
        return [sink for sink in sinks if sink.name == letter["sink"]]
    schema = letter.get("schema")
    return [sink for sink in sinks if schema is None or schema in (sink.schema, sink.mapping)]


def _again(letter: dict[str, Any], stream: str, reason: str) -> DeadLetter:
    return DeadLetter(
        time.time(), stream, reason, letter_event(letter), letter.get("schema"), letter.get("sink")
    )
