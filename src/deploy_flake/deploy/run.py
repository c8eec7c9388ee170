"""What every host of one invocation shares: the Run, and the builder it may be handed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from deploy_flake.models import DeployOptions
from deploy_flake.nix import Flake
from deploy_flake.output.ask import Gate
from deploy_flake.output.events import Events
from deploy_flake.process import LineSink
from deploy_flake.remote.ssh import SshSettings


class SystemBuilder(Protocol):
    """--build-on=local or HOST: builds each configuration once for the whole run (the
    fleet's Builder is one)."""

    @property
    def where(self) -> str:
        """Where it builds, as a message says it: "on the deployer", "on HOST"."""
        ...

    async def toplevel(self, config: str, *, on_line: LineSink, note: Callable[[str], None]) -> str:
        """The built system of config, in the deployer's store."""
        ...


@dataclass(frozen=True)
class Run:
    """What every host of one invocation shares."""

    flake: Flake
    options: DeployOptions
    ssh: SshSettings
    events: Events
    run_id: str
    holder: str
    limit: asyncio.Semaphore  # --jobs: hosts at work at once
    gate: Gate | None = None  # --ask: where every host waits for the one answer
    builder: SystemBuilder | None = None  # --build-on=local or HOST: one build per configuration
