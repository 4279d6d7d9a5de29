"""The syslog sink's encoding: records to RFC 5424 messages (`rfc5424.MessageBuilder`, with a
JSON or CEF body), each checked against `max_size` and the framing, and a batch of messages to
the bytes of a TCP/TLS stream (octet-counting or LF framing). Pure functions: no sockets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson

from forwarder.sinks.base import Record, Rejection

# What building one message can raise: orjson (JSONEncodeError is a TypeError), CEF, and
# time.gmtime on a timestamp out of the platform's range (OverflowError or OSError).
BUILD_ERRORS = (TypeError, ValueError, OverflowError, OSError)


def json_body(record: Record, severity: int) -> bytes:
    """The MSG of `format=json`: the mapped document."""
    return orjson.dumps(record.doc)


def messages(
    records: Sequence[Record],
    build: Callable[[Record], bytes],
    max_size: int,
    lf: bool,
    where: str,
) -> tuple[list[Record], list[bytes], list[Rejection]]:
    """(records sent, their messages, rejections): a record whose message cannot be built, is
    over `max_size` or (with `lf` framing) would break a line is rejected alone."""
    sent: list[Record] = []
    built: list[bytes] = []
    rejections: list[Rejection] = []
    for record in records:
        try:
            message = build(record)
        except BUILD_ERRORS as exc:
            rejections.append(Rejection(record, f"cannot render syslog message: {exc}"))
            continue
        if len(message) > max_size:
            rejections.append(
                Rejection(
                    record,
                    f"syslog message is {len(message)} bytes, over max_size={max_size} of {where}",
                )
            )
        elif lf and (b"\n" in message or b"\r" in message or b"\0" in message):
            # Unreachable as every field is escaped; kept so that framing never breaks.
            reason = "message contains a line break or NUL (framing=lf)"
            rejections.append(Rejection(record, reason))
        else:
            sent.append(record)
            built.append(message)
    return sent, built, rejections


def frame(messages: Sequence[bytes], framing: str) -> bytes:
    """The messages as one stream payload: `LEN MSG` each (octet-counting, RFC 6587), or one
    per line (`lf`)."""
    if framing == "lf":
        return b"\n".join(messages) + b"\n"
    parts: list[bytes] = []
    for message in messages:
        parts.append(b"%d " % len(message))
        parts.append(message)
    return b"".join(parts)
