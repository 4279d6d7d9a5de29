"""The sink interface: a sink takes a batch of mapped records and returns only once the
receiver has accepted it (or raises), so that the collector may commit its checkpoint.

Also what every sink's configuration shares (the URL, typed parameters, the TLS client
context) and `short_reason`, a failure as the one line an error message carries."""

from __future__ import annotations

import math
import socket
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from forwarder import errors
from forwarder.logs import REDACTED, strip_url_credentials
from mappings.ocsf_versions import check_version


@dataclass(frozen=True, slots=True)
class Record:
    """One audit-log event rendered in the sink's schema.

    `id`, `type` and `effective_at` come from the source event (for keys, timestamps,
    severities); `doc` is the mapped document the sink serializes. `line` is `doc` as one
    orjson NDJSON line, made for sinks that set `Sink.ndjson_lines` (empty: not made); when
    only such sinks take the schema, `doc` is then left empty.
    """

    id: str
    type: str
    effective_at: int
    doc: dict[str, Any]
    line: bytes = b""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the receiver refused for good (too large, invalid): it goes to dead letters."""

    record: Record
    reason: str


# What encoding one document can raise: orjson (JSONEncodeError is a TypeError; nested deeper
# than 254 levels, a lone surrogate, an integer beyond 64 bits), msgpack, pyarrow.
ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)


def encode_each(
    records: Sequence[Record], encode: Callable[[Record], bytes], what: str
) -> tuple[list[bytes], list[Rejection]]:
    """Encode every record, the whole batch at once; if that fails, one by one, so that a
    record that cannot be encoded becomes a rejection (a dead letter), not a failed batch."""
    try:
        return [encode(record) for record in records], []
    except ENCODE_ERRORS:
        pass
    encoded: list[bytes] = []
    rejections: list[Rejection] = []
    for record in records:
        try:
            encoded.append(encode(record))
        except ENCODE_ERRORS as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rejections.append(Rejection(record, f"cannot encode as {what}: {reason}"))
    return encoded, rejections


class SinkError(Exception):
    """The batch was not accepted. The message is one line.

    The collector retries it with backoff, unless `permanent`: a refusal that retrying cannot
    change until someone acts (certificate or key rejected, no such bucket, access denied).
    Then the sweep fails at once: `run --once` and backfill exit 1, the daemon tries again at
    its next sweep."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def sink_failure_is_passing(exc: BaseException) -> bool:
    """The sinks' classifier for the retry policy (`forwarder.retry`): a `SinkError` that is
    not `permanent` may pass."""
    return isinstance(exc, SinkError) and not exc.permanent


class SinkConfigError(ValueError):
    """A sink URL or parameter is invalid (exit code 2). The message names the setting."""


@dataclass(frozen=True)
class SinkSpec:
    """A parsed sink URL: `scheme://host:port/path?param=value`, plus the schema to render."""

    url: str
    scheme: str
    host: str | None
    port: int | None
    path: str
    params: dict[str, str] = field(default_factory=dict)
    schema: str = "ecs"
    original: bool = False  # `original=true`: event.original / raw_data in the documents
    # `ocsf_version=` (or the global setting): the OCSF version of an `ocsf` sink's documents;
    # None renders the mapper's own (1.8.0).
    ocsf_version: str | None = None
    # Where a sink that keeps events locally before sending (the S3 Parquet spool) keeps
    # them: beside the state database. None: such a sink needs a directory in its URL.
    spool_root: Path | None = None

    @property
    def mapping(self) -> str:
        """The map function this sink's documents come from (schemas.build_mappers):
        `SCHEMA[@OCSF_VERSION][+original]`."""
        name = self.schema
        if self.ocsf_version is not None and self.schema == "ocsf":
            name += f"@{self.ocsf_version}"
        return name + "+original" if self.original else name

    @property
    def display(self) -> str:
        """The URL without user info (also none in a parameter such as `endpoint_url=`), safe
        for logs, metric labels and the state."""
        parts = urlsplit(self.url)
        if parts.username or parts.password:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return strip_url_credentials(parts._replace(netloc=netloc).geturl())
        return strip_url_credentials(self.url)

    def take(self, name: str, default: str | None = None) -> str | None:
        """Read a parameter (sinks call this for each one they know)."""
        return self.params.get(name, default)

    def reject_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.params) - known - COMMON_PARAMS)
        if unknown:
            # Without the parameters' values: an unknown one may be a secret (shared_key=).
            raise SinkConfigError(
                f"sink {safe_url(self.url)}: unknown parameter {unknown[0]!r} "
                f"(allowed: {', '.join(sorted(known | COMMON_PARAMS))})"
            )

    def int_param(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SinkConfigError(
                f"sink {self.display}: {name}={raw!r} is not an integer"
            ) from None
        if value < minimum:
            raise SinkConfigError(f"sink {self.display}: {name} must be >= {minimum}")
        return value

    def float_param(
        self, name: str, default: float, minimum: float = 0.0, maximum: float = 86_400.0
    ) -> float:
        """A number of seconds (timeouts, backoff): finite, and at most a day by default."""
        raw = self.params.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SinkConfigError(f"sink {self.display}: {name}={raw!r} is not a number") from None
        # float() accepts nan and inf; nan passes every comparison, so test it by name.
        if not math.isfinite(value) or not minimum <= value <= maximum:
            raise SinkConfigError(
                f"sink {self.display}: {name}={raw!r} must be between {minimum:g} and {maximum:g}"
            )
        return value

    def bool_param(self, name: str, default: bool) -> bool:
        raw = self.params.get(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SinkConfigError(f"sink {self.display}: {name}={raw!r} is not true or false")

    def choice_param(self, name: str, default: str, allowed: Sequence[str]) -> str:
        value = self.params.get(name, default)
        if value not in allowed:
            raise SinkConfigError(
                f"sink {self.display}: {name}={value!r} is not one of {', '.join(allowed)}"
            )
        return value

    def require_host_port(self) -> tuple[str, int]:
        if not self.host or not self.port:
            raise SinkConfigError(f"sink {self.display}: needs HOST:PORT")
        return self.host, self.port


def safe_url(url: str) -> str:
    """`url` fit for an error message about it: without user info, however odd the password
    (a `/`, `?` or `#` in it leaves the URL unparsable, so the last `@` ends it), and without
    parameter values (an unknown parameter may be a secret)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = REDACTED + rest[rest.rindex("@") :]
    base, question, query = f"{scheme}{sep}{rest}".partition("?")
    if question:
        names = [part.split("=", 1)[0] for part in query.split("#")[0].split("&") if part]
        base += "?" + "&".join(f"{name}=..." for name in names)
    return base


# Parameters every sink URL may carry (parse_sink_url reads them).
COMMON_PARAMS = {"schema", "original", "ocsf_version"}


def parse_sink_url(
    url: str, default_schema: str = "ecs", default_ocsf_version: str | None = None
) -> SinkSpec:
    """Split a sink URL into its parts. `file:PATH` and `stdout:` have no authority.
    `default_ocsf_version` is the global setting, for sinks without `ocsf_version=`."""
    parts = urlsplit(url)
    if not parts.scheme:
        raise SinkConfigError(
            f"sink {safe_url(url)!r}: missing scheme (e.g. file:PATH, stdout:, s3://...)"
        )
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in params:
            raise SinkConfigError(f"sink {safe_url(url)!r}: parameter {key!r} given twice")
        params[key] = value
    try:
        port = parts.port
    except ValueError:
        raise SinkConfigError(f"sink {safe_url(url)!r}: invalid port") from None
    # file:relative/path, file:/abs/path and file:///abs/path all name a path.
    path = unquote(parts.path)
    spec = SinkSpec(
        url=url,
        scheme=parts.scheme.lower(),
        host=parts.hostname,
        port=port,
        path=path,
        params=params,
        schema=params.get("schema", default_schema),
    )
    if "original" in params:
        spec = replace(spec, original=spec.bool_param("original", False))
    version = params.get("ocsf_version", default_ocsf_version)
    if version is not None:
        try:
            check_version(version)
        except ValueError as exc:
            raise SinkConfigError(f"sink {spec.display}: ocsf_version: {exc}") from None
        spec = replace(spec, ocsf_version=version)
    return spec


class Sink(ABC):
    """A destination. The collector calls `open`, `restore`, then `write` per batch, commits
    its state with `position()` after each successful write and then calls `committed` (or
    `restore` when the batch failed), and `close` at the end."""

    # The sink writes each `doc` as `orjson.dumps(doc, option=OPT_APPEND_NEWLINE)`: delivery
    # then serializes it into `Record.line` right after mapping, while it is still in cache.
    ndjson_lines = False

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.stop = threading.Event()

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: SinkSpec) -> Sink:
        """Build (not yet connect) the sink a parsed URL names: `spec.reject_unknown` first,
        then its typed parameters. A bad parameter is a `SinkConfigError` here (exit 2), never
        a failure at the first write."""

    def bind_stop(self, stop: threading.Event) -> None:
        """The stop signal every wait of this sink wakes on, ending it with `Stopped` (a sink
        never sleeps or waits past it). `Delivery` binds its own; unbound (as in `check`), a
        sink waits only as long as its timeouts."""
        self.stop = stop

    @property
    def name(self) -> str:
        """Stable identity used as the key for this sink's progress in the state database."""
        return self.spec.display

    @property
    def schema(self) -> str:
        return self.spec.schema

    @property
    def mapping(self) -> str:
        return self.spec.mapping

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or prepare. Idempotent; `write` may call it lazily after a failure."""

    def restore(self, position: str | None) -> None:  # noqa: B027 - optional hook
        """Receive the last committed position (for sinks that can cut an uncommitted tail)."""

    @abstractmethod
    def write(self, records: Sequence[Record]) -> Sequence[Rejection]:
        """Deliver `records`; return only once the receiver has accepted them.

        Return the records the receiver refused permanently (they go to dead letters);
        raise `SinkError` if the batch as a whole was not accepted (the collector retries).
        """

    def position(self) -> str | None:
        """A position to commit with the state after a successful write (None: nothing)."""
        return None

    def committed(self) -> None:  # noqa: B027 - optional hook
        """The batch written last is committed: release what was kept for it until then (the
        file sink's lock, which holds a rotation off until the batch is committed or cut)."""

    def follow(self) -> bool:
        """Before each batch: notice that the destination moved (a file rotated, truncated,
        or SIGHUP) and point at where it is now. True when `position()` changed: the caller
        commits it before `write`, so that a crash in between cuts the right tail."""
        return False

    @abstractmethod
    def check(self) -> str:
        """Connect and verify without sending events; return a short description of what was
        checked. Raise `SinkError` with a one-line reason when the sink is not usable."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Send what the sink holds of committed batches and is due (the S3 Parquet spool):
        called after each sweep, once its batches are committed. Raise `SinkError` as
        `write` does."""

    def status(self) -> dict[str, Any] | None:
        """What the sink holds back, for /healthz (None: nothing)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""


def short_reason(exc: BaseException) -> str:
    """A connection, TLS or file failure as a short reason on one line, for the message of a
    `SinkError` or `SinkConfigError` (the receiver is "the server")."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return errors.one_line(exc.strerror)
    return errors.one_line(str(exc)) or type(exc).__name__


def tls_context(spec: SinkSpec, *, client_cert: bool = False) -> ssl.SSLContext:
    """The TLS client context of a sink's `ca_file=` and `verify=` parameters (and, with
    `client_cert`, `cert_file=` and `key_file=`): TLS 1.2 at least, the receiver's certificate
    and host name verified unless `verify=false`. A file that cannot be loaded is a
    `SinkConfigError` naming the parameter, at build time."""
    verify = spec.bool_param("verify", True)
    ca_file = spec.take("ca_file")
    where = f"sink {spec.display}: TLS setup"
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SinkConfigError(
            f"{where}: ca_file {ca_file!r} cannot be loaded: {short_reason(exc)}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        cert_file, key_file = spec.take("cert_file"), spec.take("key_file")
        if key_file and not cert_file:
            raise SinkConfigError(f"sink {spec.display}: key_file needs cert_file")
        if cert_file:
            try:
                context.load_cert_chain(cert_file, key_file)
            except (OSError, ssl.SSLError) as exc:
                files = f"cert_file {cert_file!r}"
                if key_file:
                    files += f", key_file {key_file!r}"
                raise SinkConfigError(
                    f"{where}: {files} cannot be loaded: {short_reason(exc)}"
                ) from None
    return context
