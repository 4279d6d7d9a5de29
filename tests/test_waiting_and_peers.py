"""The test helpers other tests lean on: `wait_for` returns what it waited for or fails saying
what; a missing optional dependency skips on a laptop and fails under CI; the kernel's socket
table shows bytes a receiver has not read and connections it has not closed."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from tests import peers
from tests.peers import kernel_sockets, read_to_the_end, require_file, require_module
from tests.waiting import wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "done", 5, interval=0.001) == "done"


def test_wait_for_fails_naming_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(
        AssertionError, match=r"after 0.1s waiting for the moon \(last value: \[\]\)"
    ):
        wait_for(lambda: [], 0.1, "the moon", interval=0.01)


def test_wait_for_without_a_description_shows_the_condition() -> None:
    with pytest.raises(AssertionError, match=r"waiting for .*lambda: 1 > 2"):
        wait_for(lambda: 1 > 2, 0.05, interval=0.01)


@pytest.mark.parametrize("in_ci", [False, True])
def test_a_missing_module_or_file_skips_on_a_laptop_and_fails_under_ci(
    in_ci: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "IN_CI", in_ci)
    outcome = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(outcome, match=r"no_such_module_xyz not installed.*\(pip install it\)"):
        require_module("no_such_module_xyz", "pip install it")
    with pytest.raises(outcome, match=r"absent \(made by a script\)"):
        require_file(Path("/nonexistent/reference.yml"), "made by a script")
    assert require_module("json", "stdlib").dumps([]) == "[]"


def test_the_socket_table_shows_unread_bytes_and_unclosed_connections() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        client.sendall(b"x" * 1000)
        wait_for(lambda: not read_to_the_end(port), 5, "the bytes in the server's socket")
        assert sum(s.unread for s in kernel_sockets(port) if s.local_port == port) == 1000
        assert server.recv(1000, socket.MSG_WAITALL) == b"x" * 1000
        wait_for(lambda: read_to_the_end(port), 5, "the server to have read everything")
        client.close()  # the server has not closed its end yet: CLOSE_WAIT
        wait_for(lambda: not read_to_the_end(port), 5, "the connection in CLOSE_WAIT")
        server.close()
        assert read_to_the_end(port)
