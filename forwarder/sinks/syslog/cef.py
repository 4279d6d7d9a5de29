"""CEF rendering for the syslog sink (`format=cef`): one ArcSight Common Event Format line per
event, with CEF's header and extension escaping and a small, fixed extension set."""

from __future__ import annotations

import re
from typing import Any

import orjson

from forwarder import __version__
from forwarder.sinks.base import Record
from forwarder.sinks.syslog.rfc5424 import INFORMATIONAL, NOTICE, WARNING

CEF_SEVERITY = {INFORMATIONAL: 3, NOTICE: 5, WARNING: 6}

# Extension -> dotted paths tried in order in the mapped document (ECS, OCSF and raw audit-log
# shapes; OCSF's actor first, as its `user` is a target); the first scalar found wins and a
# missing one leaves the extension out.
LOOKUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("act", ("event.action", "metadata.event_code", "type")),
    ("outcome", ("event.outcome", "status")),
    (
        "suser",
        (
            "actor.user.email_addr",
            "actor.user.name",
            "actor.user.uid",
            "user.email",
            "user.name",
            "user.id",
            "actor.session.user.email",
            "actor.api_key.user.email",
            "actor.api_key.service_account.id",
        ),
    ),
    ("src", ("source.ip", "src_endpoint.ip", "actor.session.ip_address")),
)
PROJECT_PATHS = ("openai.audit.project.id", "unmapped.project.id", "project.id")

_HEADER_SPECIALS = re.compile(r"[\\|\x00-\x1f\x7f]")
_EXT_SPECIALS = re.compile(r"[\\=\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EXT_REPLACEMENTS = {"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"}


def escape_header(value: str) -> str:
    """Header field: backslash and pipe escaped; line breaks and other control characters
    (not allowed) become spaces."""
    return _HEADER_SPECIALS.sub(lambda m: "\\" + m.group() if m.group() in "\\|" else " ", value)


def escape_extension(value: str) -> str:
    """Extension value: `\\` and `=` escaped, CR/LF as `\\r`/`\\n`; other control
    characters except tab (which CEF cannot carry) become spaces; `cs6` keeps the originals."""
    if not _EXT_SPECIALS.search(value):
        return value
    return _EXT_SPECIALS.sub(lambda m: _EXT_REPLACEMENTS.get(m.group(), " "), value)


def _dig(doc: dict[str, Any], path: str) -> Any:
    if path in doc:  # flattened ("event.action": ...) documents
        return doc[path]
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
        if node is None:
            return None
    return node


def _scalar(doc: dict[str, Any], paths: tuple[str, ...]) -> str | None:
    for path in paths:
        value = _dig(doc, path)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float) and value != "":
            return str(value)
    return None


class CefBody:
    """Callable that renders a record as `CEF:0|OpenAI|Audit Log|VERSION|type|name|sev|ext`."""

    def __init__(self, include_doc: bool = True) -> None:
        self._include_doc = include_doc
        self._prefix = f"CEF:0|OpenAI|Audit Log|{escape_header(__version__)}|"
        self._headers: dict[tuple[str, int], str] = {}

    def _header(self, event_type: str, severity: int) -> str:
        header = self._headers.get((event_type, severity))
        if header is None:
            name = event_type.replace(".", " ").replace("_", " ")
            header = (
                f"{self._prefix}{escape_header(event_type)}|{escape_header(name)}|"
                f"{CEF_SEVERITY.get(severity, 3)}|"
            )
            if len(self._headers) > 4096:
                self._headers.clear()
            self._headers[(event_type, severity)] = header
        return header

    def __call__(self, record: Record, severity: int) -> bytes:
        doc = record.doc
        ext = [f"rt={int(record.effective_at) * 1000}", f"externalId={escape_extension(record.id)}"]
        for key, paths in LOOKUPS:
            value = _scalar(doc, paths)
            if value is None and key == "act":
                value = record.type
            if value is None and key == "outcome":
                verb = record.type.rpartition(".")[2]
                value = {"failed": "failure", "succeeded": "success"}.get(verb)
            if value is not None:
                ext.append(f"{key}={escape_extension(value)}")
        project = _scalar(doc, PROJECT_PATHS)
        if project is not None:
            ext.append(f"cs1Label=project cs1={escape_extension(project)}")
        if self._include_doc:
            text = orjson.dumps(doc).decode()
            ext.append(f"cs6Label=document cs6={escape_extension(text)}")
        return (self._header(record.type, severity) + " ".join(ext)).encode()
