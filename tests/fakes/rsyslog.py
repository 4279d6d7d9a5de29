"""A real rsyslogd for tests: started in the foreground on loopback ports with imudp, imtcp,
imtcp over TLS (gtls, a trustme CA), imrelp (plain and TLS), writing every parsed message as
one JSON line (pri, timestamp, hostname, app_name, procid, msgid, structured_data, msg).
`drain()` returns once rsyslog wrote everything it received: how a test sees "no duplicate"
and "nothing sent" without a fixed sleep."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import trustme

from tests.peers import free_port, listening, missing_peer, read_to_the_end
from tests.waiting import wait_for

INSTALL_HINT = "rsyslog not installed: apt-get install rsyslog rsyslog-gnutls rsyslog-relp"
MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog")

# The rsyslog default is 8 KB; the sinks' stream default max_size is 64 KiB, so the peer
# matches it explicitly (and the hostile-strings test sends 9 KB values).
MAX_MESSAGE_SIZE = 65536

# The body of the end marker `drain()` sends; lines carrying it are never shown to tests.
DRAIN_MARKER = "rsyslog-peer-drain-marker"

TEMPLATE = """
template(name="jsonl" type="list" option.jsonf="on") {
  property(outname="input" name="inputname" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}
"""


def rsyslogd_path() -> str:
    """The rsyslogd executable, or skip (fail under CI) with the install hint."""
    for candidate in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd"):
        if os.access(candidate, os.X_OK):
            return candidate
    missing_peer(INSTALL_HINT)
    raise AssertionError("unreachable")


def _module_missing(name: str) -> bool:
    return not any(os.path.exists(os.path.join(d, f"{name}.so")) for d in MODULE_DIRS)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL rsyslogd when the test process dies (Linux), so that
    an interrupted test run leaves no daemon behind. (Linux ties this to the thread that
    started it: call `start` from a thread that lives as long as the peer.)"""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Rsyslog:
    """One rsyslogd with its own config, pid file, work directory and output file."""

    def __init__(self, workdir: Path, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.binary = rsyslogd_path()
        for module in ("imudp", "imtcp", "imrelp", "lmnsd_gtls"):
            if _module_missing(module):
                missing_peer(f"rsyslog module {module} missing: {INSTALL_HINT}")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "work").mkdir(exist_ok=True)
        self.output = self.dir / "messages.jsonl"
        self.log = self.dir / "rsyslogd.log"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.conf = self.dir / "rsyslog.conf"
        self.max_message_size = max_message_size
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.relp_port = free_port()
        self.relp_tls_port = free_port()
        self.ca = trustme.CA()
        self.ca_file = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(self.ca_file)
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert_file = self.dir / "server.pem"
        self.key_file = self.dir / "server.key"
        server.cert_chain_pems[0].write_to_path(self.cert_file)
        server.private_key_pem.write_to_path(self.key_file)
        # rsyslog's imrelp over TLS insists on a client certificate (mutual TLS).
        client = self.ca.issue_cert("forwarder.test")
        self.client_cert_file = self.dir / "client.pem"
        self.client_key_file = self.dir / "client.key"
        client.cert_chain_pems[0].write_to_path(self.client_cert_file)
        client.private_key_pem.write_to_path(self.client_key_file)
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._parsed: list[dict[str, Any]] = []
        self._markers: set[str] = set()
        self._write_config()

    def _write_config(self) -> None:
        d = self.dir
        tls_files = (
            f'streamDriver.CAFile="{self.ca_file}" streamDriver.CertFile="{self.cert_file}" '
            f'streamDriver.KeyFile="{self.key_file}"'
        )
        self.conf.write_text(
            f"""
global(workDirectory="{d / "work"}" maxMessageSize="{self.max_message_size}"
       defaultNetstreamDriverCAFile="{self.ca_file}")
main_queue(queue.timeoutShutdown="10000" queue.dequeueBatchSize="1024" queue.workerThreads="1")
module(load="imudp")
module(load="imtcp" maxSessions="500")
module(load="imrelp")
input(type="imudp" name="udp" address="127.0.0.1" port="{self.udp_port}" ruleset="out"
      rcvbufSize="4m")
input(type="imtcp" name="tcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="out")
input(type="imtcp" name="tls" address="127.0.0.1" port="{self.tls_port}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon" {tls_files})
input(type="imrelp" name="relp" address="127.0.0.1" port="{self.relp_port}" ruleset="out"
      maxDataSize="{self.max_message_size + 1024}")
input(type="imrelp" name="relptls" address="127.0.0.1" port="{self.relp_tls_port}"
      ruleset="out" maxDataSize="{self.max_message_size + 1024}" tls="on"
      tls.caCert="{self.ca_file}" tls.myCert="{self.cert_file}"
      tls.myPrivKey="{self.key_file}" tls.authMode="certvalid")
{TEMPLATE}
ruleset(name="out") {{
  action(type="omfile" file="{self.output}" template="jsonl" ioBufferSize="256k")
}}
"""
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Rsyslog:
        if self.process is not None and self.process.poll() is None:
            return self
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                preexec_fn=_die_with_parent,
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited at start: {self.log.read_text()[-2000:]}")
            ports = (self.tcp_port, self.tls_port, self.relp_port, self.relp_tls_port)
            return all(map(listening, ports)) and listening(self.udp_port, udp=True)

        try:
            wait_for(ready, timeout, "rsyslogd to listen on its ports")
        except AssertionError as exc:
            self.kill()
            raise RuntimeError(f"{exc}: {self.log.read_text()[-2000:]}") from None
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop (SIGTERM): rsyslog drains its queue to the output file."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Crash (SIGKILL): whatever sits in socket buffers or queues is gone."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the receiver (SIGSTOP): the kernel keeps accepting into socket buffers.
        Returns once every thread of rsyslogd is stopped (the signal takes effect later than
        it is sent; until then rsyslog still reads)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")

        def stopped() -> bool:
            states = set()
            for task in tasks.iterdir():
                with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                    states.add((task / "stat").read_text().rpartition(")")[2].split()[0])
            return states <= {"t", "T"}

        wait_for(stopped, 10, "rsyslogd to stop on SIGSTOP")

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    # -- what arrived ------------------------------------------------------------------

    def _read(self) -> None:
        """Parse what rsyslog appended since the last read (a partially written last line is
        left for the next one); drain markers are set aside."""
        if not self.output.exists():
            return
        with open(self.output, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].split(b"\n"):
            if line:
                message = json.loads(line)
                if message["msg"].startswith(DRAIN_MARKER):
                    self._markers.add(message["msg"])
                else:
                    self._parsed.append(message)
        self._offset += end

    def messages(self) -> list[dict[str, Any]]:
        """Every message rsyslog wrote so far; the file is read incrementally, so polling it
        stays cheap."""
        self._read()
        return list(self._parsed)

    def count(self) -> int:
        """How many messages rsyslog wrote so far."""
        self._read()
        return len(self._parsed)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        """Wait until at least `count` messages arrived; returns the messages seen. (More may
        still come: `drain()` before counting duplicates or asserting that nothing came.)"""
        wait_for(lambda: self.count() >= count, timeout, f"{count} messages in rsyslog")
        return self.messages()

    def drain(self, timeout: float = 30.0) -> list[dict]:
        """Return (the messages) once rsyslog wrote everything it had received: first every
        input socket is read to the end (no byte unread, every connection its client closed
        closed by rsyslog too), then an end marker sent now comes out. rsyslog puts what it
        reads into one queue and its one worker writes it in order (queue.workerThreads=1),
        so what was read before the marker is in the file before it. Call it once the sender
        is done (its sink closed, its process exited)."""
        ports = [self.tcp_port, self.tls_port, self.relp_port, self.relp_tls_port]
        wait_for(
            lambda: (
                all(read_to_the_end(port) for port in ports)
                and read_to_the_end(self.udp_port, udp=True)
            ),
            timeout,
            "rsyslog to read every input socket to the end",
        )
        marker = f"{DRAIN_MARKER} {uuid.uuid4().hex}"
        frame = f"<14>1 - - rsyslog-peer - - - {marker}".encode()
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=10) as conn:
            conn.sendall(b"%d %s" % (len(frame), frame))

        def marker_written() -> bool:
            self._read()
            return marker in self._markers

        wait_for(marker_written, timeout, "rsyslog to write the drain marker")
        return self.messages()

    def url(self, transport: str, port: int | None = None, **params: str | int) -> str:
        """A sink URL for this peer (`udp`, `tcp`, `tls`, `relp`, `relp+tls`); `port`
        overrides the peer's port (to aim at a port where nothing listens)."""
        port = (
            port
            or {
                "udp": self.udp_port,
                "tcp": self.tcp_port,
                "tls": self.tls_port,
                "relp": self.relp_port,
                "relp+tls": self.relp_tls_port,
            }[transport]
        )
        scheme = "syslog+relp" if transport == "relp+tls" else f"syslog+{transport}"
        if transport in {"tls", "relp+tls"}:
            params.setdefault("ca_file", str(self.ca_file))
            params.setdefault("server_name", "localhost")
        if transport == "relp+tls":
            params.setdefault("tls", "true")
            params.setdefault("cert_file", str(self.client_cert_file))
            params.setdefault("key_file", str(self.client_key_file))
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{scheme}://127.0.0.1:{port}" + (f"?{query}" if query else "")
