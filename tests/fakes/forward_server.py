"""A Fluentd Forward-protocol v1 server for tests and benchmarks, written from the specification:
the four event modes, `chunk` acks, HELO/PING/PONG shared-key (and user) auth, and TLS."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

__all__ = ["Batch", "EventTimeValue", "ForwardServer", "sha512_hex"]


class EventTimeValue(NamedTuple):
    """A decoded EventTime (msgpack ext type 0): seconds and nanoseconds."""

    sec: int
    nsec: int


@dataclass(frozen=True, slots=True)
class Batch:
    """One forward message as received: which chunk id it carried and where its entries are."""

    chunk: str | None
    mode: str
    start: int
    count: int


def sha512_hex(*parts: bytes | str) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:
        return EventTimeValue(*struct.unpack(">II", data))
    return msgpack.ExtType(code, data)


def _new_unpacker() -> msgpack.Unpacker:
    # surrogateescape: v0 clients may send packed entries as a str; they are re-encoded losslessly.
    return msgpack.Unpacker(
        raw=False, ext_hook=_ext_hook, unicode_errors="surrogateescape", max_buffer_size=256 << 20
    )


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _event_time(value: Any) -> EventTimeValue:
    if isinstance(value, EventTimeValue):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"invalid event time {value!r}")
    sec = int(value)
    return EventTimeValue(sec, round((value - sec) * 1e9))


_TIME_FORMATS = {EventTimeValue: "EventTime", int: "int", float: "float"}


class _Drop(Exception):
    """Close this connection now (a control asked for it, or the peer broke the protocol)."""


class ForwardServer:
    """A Forward server on a loopback port, running in threads.

    Received events are in `entries` as (tag, EventTimeValue, record); each forward message is a
    `Batch` in `batches`; `received_chunks` / `acked_chunks` list chunk ids in arrival order;
    `time_formats` counts how event times came (EventTime, int, float).
    Controls (set at any time): `ack_delay` seconds before each ack; `withhold_acks` = N leaves
    the next N chunks stored but unacked; `corrupt_acks` = N answers the next N chunks with an
    ack for another id; `drop_connection_after(n, store)` closes the connection
    that carries the n-th next message, without acking it. `stop()` then `start()` reopens the
    same port, as a restarted receiver would.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shared_key: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        require_ack: bool = True,
        users: dict[str, str] | None = None,
        hostname: str = "forward-server",
        keepalive: bool = True,
        accept_any_key: bool = False,
        store: bool = True,
        decode: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.shared_key = shared_key
        self.ssl_context = ssl_context
        self.require_ack = require_ack
        self.users = users
        self.hostname = hostname
        self.keepalive = keepalive
        # An impostor that does not know the key: accepts any PING, answers with its own key.
        self.accept_any_key = accept_any_key
        self.store = store
        # decode=False (benchmarks): packed entries are only framed and counted, not built.
        self.decode = decode

        self.entries: list[tuple[str, EventTimeValue, dict[str, Any]]] = []
        self.batches: list[Batch] = []
        self.received_chunks: list[str] = []
        self.acked_chunks: list[str] = []
        self.modes: Counter[str] = Counter()
        self.time_formats: Counter[str] = Counter()
        self.entry_count = 0
        self.messages = 0
        self.connections = 0
        self.auth_failures: list[str] = []
        self.errors: list[str] = []

        self.ack_delay = 0.0
        self.withhold_acks = 0
        self.corrupt_acks = 0
        self._drop_countdown: int | None = None
        self._drop_store = False

        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ForwardServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(0.25)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._running = True
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"forward-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection abruptly (unacked chunks stay unacked)."""
        self._running = False
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns.values())
            threads = list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
        self._listener = None

    def __enter__(self) -> ForwardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, scheme: str = "fluentd", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{scheme}://{self.host}:{self.port}" + (f"?{query}" if query else "")

    def drop_connection_after(self, n: int, *, store: bool = False) -> None:
        """Close the connection carrying the n-th next message without acking it; with
        `store` its entries are kept first (an ack lost), otherwise discarded (data lost)."""
        with self._lock:
            self._drop_countdown = n
            self._drop_store = store

    def chunk_of_entry(self) -> list[str | None]:
        """The chunk id each entry arrived in (parallel to `entries`)."""
        owners: list[str | None] = [None] * len(self.entries)
        for batch in self.batches:
            owners[batch.start : batch.start + batch.count] = [batch.chunk] * batch.count
        return owners

    # -- connections ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while self._running:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self.connections += 1
                self._conns[id(thread)] = conn
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        key = id(threading.current_thread())
        try:
            if self.ssl_context is not None:
                conn.settimeout(10)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
                with self._lock:
                    self._conns[key] = conn
                if not self._running:
                    return
            messages = self._messages(conn)
            if self.shared_key is not None and not self._handshake(conn, messages):
                return
            for message in messages:
                self._handle(conn, message)
        except _Drop:
            pass
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            if self._running:
                self._error(f"connection error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._conns.pop(key, None)
            with contextlib.suppress(OSError):
                conn.close()

    def _messages(self, conn: socket.socket) -> Iterator[Any]:
        unpacker = _new_unpacker()
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            unpacker.feed(data)
            yield from unpacker

    def _send(self, conn: socket.socket, obj: Any) -> None:
        conn.sendall(msgpack.packb(obj, use_bin_type=True))

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    # -- handshake -------------------------------------------------------------------------------

    def _handshake(self, conn: socket.socket, messages: Iterator[Any]) -> bool:
        assert self.shared_key is not None
        nonce = os.urandom(16)
        # Like in_forward: with <security> the HELO always carries a 16-byte user-auth salt,
        # also when user_auth is off (users=None); clients answer with username '' then.
        auth_salt = os.urandom(16)
        self._send(
            conn,
            ["HELO", {"nonce": nonce, "auth": auth_salt, "keepalive": self.keepalive}],
        )
        ping = next(messages, None)
        if (
            not isinstance(ping, list)
            or len(ping) != 6
            or ping[0] != "PING"
            or not all(isinstance(p, str | bytes) for p in ping[1:])
        ):
            self._error(f"invalid PING: {ping!r:.200}")
            return False
        _, client_hostname, salt, digest, username, password_digest = ping
        salt_b = _as_bytes(salt)
        if not self.accept_any_key:
            expected = sha512_hex(salt_b, _as_bytes(client_hostname), nonce, self.shared_key)
            if digest != expected:
                return self._reject(conn, "shared_key mismatch")
            if self.users:
                password = self.users.get(username) if isinstance(username, str) else None
                if password is None or password_digest != sha512_hex(auth_salt, username, password):
                    return self._reject(conn, "username/password mismatch")
        server_digest = sha512_hex(salt_b, self.hostname, nonce, self.shared_key)
        self._send(conn, ["PONG", True, "", self.hostname, server_digest])
        return True

    def _reject(self, conn: socket.socket, reason: str) -> bool:
        with self._lock:
            self.auth_failures.append(reason)
        self._send(conn, ["PONG", False, reason, "", ""])
        return False

    # -- events --------------------------------------------------------------------------------

    def _handle(self, conn: socket.socket, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 2 or not isinstance(message[0], str):
            self._error(f"invalid message: {message!r:.200}")
            raise _Drop
        tag, second = message[0], message[1]
        option: Any = None
        if isinstance(second, list):
            mode = "Forward"
            raw_entries = second
            option = message[2] if len(message) > 2 else None
        elif isinstance(second, bytes | str):
            option = message[2] if len(message) > 2 else None
            data = _as_bytes(second)
            if isinstance(option, dict) and option.get("compressed") == "gzip":
                mode = "CompressedPackedForward"
                data = gzip.decompress(data)  # handles several concatenated gzip members
            else:
                mode = "PackedForward"
            if not self.decode:
                self._count_only(conn, tag, mode, data, option)
                return
            unpacker = _new_unpacker()
            unpacker.feed(data)
            raw_entries = list(unpacker)
        else:
            mode = "Message"
            if len(message) < 3:
                self._error(f"invalid Message mode: {message!r:.200}")
                raise _Drop
            raw_entries = [[second, message[2]]]
            option = message[3] if len(message) > 3 else None
        if option is not None and not isinstance(option, dict):
            self._error(f"option is not a map: {option!r:.200}")
            raise _Drop
        option = option or {}
        entries = []
        formats: Counter[type] = Counter()
        for entry in raw_entries:
            if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], dict):
                self._error(f"invalid entry in {mode}: {entry!r:.200}")
                raise _Drop
            entries.append((tag, _event_time(entry[0]), entry[1]))
            formats[type(entry[0])] += 1
        if "size" in option and option["size"] != len(entries):
            self._error(f"size option {option['size']!r} but {len(entries)} entries")
        chunk = option.get("chunk")

        with self._lock:
            self.messages += 1
            drop = False
            if self._drop_countdown is not None:
                self._drop_countdown -= 1
                if self._drop_countdown <= 0:
                    self._drop_countdown = None
                    drop = True
            if drop and not self._drop_store:
                raise _Drop
            if chunk is not None:
                self.received_chunks.append(chunk)
            self.modes[mode] += 1
            for kind, count in formats.items():
                self.time_formats[_TIME_FORMATS.get(kind, kind.__name__)] += count
            self.batches.append(Batch(chunk, mode, self.entry_count, len(entries)))
            self.entry_count += len(entries)
            if self.store:
                self.entries.extend(entries)
            if drop:
                raise _Drop
            withhold = False
            if chunk is not None and self.withhold_acks > 0:
                self.withhold_acks -= 1
                withhold = True
        self._ack(conn, chunk, withhold)

    def _count_only(
        self, conn: socket.socket, tag: str, mode: str, data: bytes, option: Any
    ) -> None:
        unpacker = msgpack.Unpacker()
        unpacker.feed(data)
        count = 0
        while True:
            try:
                unpacker.skip()
            except msgpack.OutOfData:
                break
            count += 1
        chunk = option.get("chunk") if isinstance(option, dict) else None
        with self._lock:
            self.messages += 1
            self.modes[mode] += 1
            if chunk is not None:
                self.received_chunks.append(chunk)
            self.batches.append(Batch(chunk, mode, self.entry_count, count))
            self.entry_count += count
        self._ack(conn, chunk, False)

    def _ack(self, conn: socket.socket, chunk: str | None, withhold: bool) -> None:
        if chunk is None or not self.require_ack or withhold:
            return
        if self.ack_delay:
            time.sleep(self.ack_delay)
        ack = chunk
        with self._lock:
            if self.corrupt_acks > 0:
                self.corrupt_acks -= 1
                ack = "not-" + chunk
            else:
                # Recorded before sending: once the client has the ack, it is in this list.
                self.acked_chunks.append(chunk)
        self._send(conn, {"ack": ack})


def main() -> None:
    """Run a server from the command line (for manual tests): prints its port, stops on Enter."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=24224)
    parser.add_argument("--shared-key-env", help="environment variable holding the shared key")
    args = parser.parse_args()
    key = os.environ[args.shared_key_env] if args.shared_key_env else None
    with ForwardServer(port=args.port, shared_key=key, store=False) as server:
        print(f"listening on 127.0.0.1:{server.port}; press Enter to stop", flush=True)
        sys.stdin.readline()
        print(f"{server.entry_count} entries in {server.messages} messages", flush=True)


if __name__ == "__main__":
    main()
