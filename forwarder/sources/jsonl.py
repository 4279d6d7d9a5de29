"""The file source of `--input`: a file (or stdin) of whatever `map` reads (events, saved list
responses, arrays; one per line, pretty-printed or one after the other). The whole input is
checked before anything is delivered, so a malformed line stops the run with its line number
and the state untouched. The API's list filters apply to the file as the API applies them."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from forwarder.effective_at import normalize
from forwarder.errors import SourceError
from forwarder.eventfile import read_events, where
from forwarder.intake import minimal_problem
from forwarder.sources import Page, Source

PAGE_SIZE = 500


class JsonlSource(Source):
    live = False

    def __init__(self, path: str, filters: dict[str, Any] | None = None) -> None:
        self.label = "stdin" if path == "-" else path
        self._spool: IO[bytes] | None = None
        if path == "-":
            # stdin can be read once; keep a copy so it can be checked, then delivered.
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            shutil.copyfileobj(sys.stdin.buffer, self._spool)
            self._spool.seek(0)
            self.path = None
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise SourceError(f"input {path}: no such file")
        filters = filters or {}
        self._types = set(filters.get("event_types") or ())
        self._projects = set(filters.get("project_ids") or ())
        self._actor_ids = set(filters.get("actor_ids") or ())
        self._actor_emails = set(filters.get("actor_emails") or ())
        self._resource_ids = set(filters.get("resource_ids") or ())
        self.count = self._validate()

    def _open(self) -> IO[bytes]:
        if self._spool is not None:
            self._spool.seek(0)
            return open(self._spool.fileno(), "rb", closefd=False)
        assert self.path is not None
        return self.path.open("rb")

    def _validate(self) -> int:
        first: list[str] = []
        total = bad = 0

        def malformed(place: str, problem: str) -> None:
            nonlocal bad
            bad += 1
            if not first:
                first.append(f"{place}: {problem}")

        with self._open() as handle:
            for event, number, path in read_events(handle, malformed):
                total += 1
                normalize(event)
                problem = minimal_problem(event)
                if problem:
                    malformed(where(number, path), problem)
        if bad:
            more = f" ({bad - 1} more malformed lines)" if bad > 1 else ""
            raise SourceError(f"input {self.label}: {first[0]}{more}")
        return total

    def _events(self) -> Iterator[dict[str, Any]]:
        with self._open() as handle:
            for event, _, _ in read_events(handle, self._changed):
                if type(event["effective_at"]) is not int:
                    normalize(event)  # a float, numeric or ISO 8601 effective_at
                yield event

    def _changed(self, where: str, problem: str) -> None:
        # Checked whole before: only a file rewritten since can get here.
        raise SourceError(f"input {self.label}: {where}: {problem} (changed while read)")

    def _wanted(self, event: dict[str, Any]) -> bool:
        """Whether the API would list `event` under the same filters: each filter given
        must match one of its values."""
        if self._types and event["type"] not in self._types:
            return False
        if self._projects:
            project = event.get("project")
            if not (isinstance(project, dict) and project.get("id") in self._projects):
                return False
        if self._actor_ids or self._actor_emails:
            ids, emails = actor_keys(event)
            if self._actor_ids and self._actor_ids.isdisjoint(ids):
                return False
            if self._actor_emails and self._actor_emails.isdisjoint(emails):
                return False
        if self._resource_ids:
            return not self._resource_ids.isdisjoint(resource_ids(event.get(event["type"])))
        return True

    def pages(self, start: int, end: int | None) -> Iterator[Page]:
        page: Page = []
        for event in self._events():
            at = event["effective_at"]
            if at < start or (end is not None and at >= end) or not self._wanted(event):
                continue
            page.append(event)
            if len(page) >= PAGE_SIZE:
                yield page
                page = []
        if page:
            yield page

    def check(self) -> str:
        return f"input {self.label}: {self.count} well-formed events"

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def actor_keys(event: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(ids, emails) that `actor_ids[]` and `actor_emails[]` match: the user's id and email of
    a session, and of an API key the key's tracking id and its user's or service account's
    id (and email)."""
    ids: set[str] = set()
    emails: set[str] = set()
    actor = event.get("actor")
    if not isinstance(actor, dict):
        return ids, emails
    people = []
    session = actor.get("session")
    if isinstance(session, dict):
        people.append(session.get("user"))
    key = actor.get("api_key")
    if isinstance(key, dict):
        ids.add(key.get("id"))
        people += [key.get("user"), key.get("service_account")]
    for person in people:
        if isinstance(person, dict):
            ids.add(person.get("id"))
            emails.add(person.get("email"))
    ids.discard(None)
    emails.discard(None)
    return ids, emails


def resource_ids(payload: Any, depth: int = 0) -> set[str]:
    """The ids `resource_ids[]` matches: the payload's `id`, and every `id` or `*_id` string
    nested in it (a role binding's `resource_id`, a connector's `details.id`), three levels
    down at most."""
    found: set[str] = set()
    if depth > 3:
        return found
    if isinstance(payload, dict):
        for key, value in payload.items():
            if isinstance(value, str) and (key == "id" or key.endswith("_id")):
                found.add(value)
            elif isinstance(value, dict | list):
                found |= resource_ids(value, depth + 1)
    elif isinstance(payload, list):
        for value in payload:
            found |= resource_ids(value, depth + 1)
    return found
