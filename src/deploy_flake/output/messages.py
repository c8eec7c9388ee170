"""The deployer's own lines on stderr, beside the hosts' output: errors and notes."""

from __future__ import annotations

import click


def error(message: str) -> None:
    """Bad usage or input, or a run that could not go on: one line."""
    click.echo(f"deploy-flake: error: {message}", err=True)


def note(message: str) -> None:
    click.echo(f"deploy-flake: {message}", err=True)
