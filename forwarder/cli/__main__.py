"""`python -m forwarder.cli` runs the command-line interface, as `python -m forwarder` does."""

from __future__ import annotations

from forwarder.cli import main

main()
