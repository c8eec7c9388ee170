"""The deploy-flake command line (click only): parse, then hand the typed options to the app.

Importing it stays quick (no asyncio, rich or Nix code): `--help` and bad usage never wait
for the deploy machinery, which is imported only when a command runs.
"""

from deploy_flake.cli.commands import deploy_flake, main, main_group

__all__ = ["deploy_flake", "main", "main_group"]
