"""Private files and directories: what holds event data or state is for its owner only."""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dirs(directory: Path) -> None:
    """`mkdir -p` in which every directory created is 0700; `Path.mkdir(parents=True)` would
    give the missing parents the default mode (0755) and only the last one `mode`."""
    missing = []
    for part in [directory, *directory.parents]:
        if part.is_dir():
            break
        missing.append(part)
    for part in reversed(missing):
        part.mkdir(mode=0o700, exist_ok=True)


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` (files created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
