"""The code base stays `ruff check` and `ruff format` clean (the rules live in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff") or shutil.which("ruff", path=str(REPO / ".venv" / "bin"))
    command = [exe, *args] if exe else [sys.executable, "-m", "ruff", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")])
def test_ruff_is_clean(args: tuple[str, ...]) -> None:
    result = ruff(*args)
    assert result.returncode == 0, result.stdout + result.stderr
