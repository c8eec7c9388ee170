"""The deployer's own lines on stderr, beside the hosts' output: errors and notes. A stderr
nobody reads any more is dropped (output/stream.py), never raised from."""

from __future__ import annotations

from deploy_flake.output.stream import STDERR


def error(message: str) -> None:
    """Bad usage or input, or a run that could not go on: one line."""
    STDERR.print(f"deploy-flake: error: {message}")


def note(message: str) -> None:
    STDERR.print(f"deploy-flake: {message}")
