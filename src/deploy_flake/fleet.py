"""Many hosts at once: each host's failure stays its own."""

from __future__ import annotations

import asyncio
import getpass
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from deploy_flake import nix
from deploy_flake.destination import Destination
from deploy_flake.events import Events
from deploy_flake.host_deploy import HostDeploy, Run
from deploy_flake.models import DeployOptions, HostResult
from deploy_flake.ssh import SshSettings


async def deploy_all(
    destinations: Sequence[Destination],
    options: DeployOptions,
    *,
    ssh_config: Path | None,
    ssh_options: tuple[str, ...],
    events: Events,
) -> list[HostResult]:
    """Deploys to every destination, at most options.jobs at a time; never raises for a host."""
    flake = await nix.flake_metadata(options.flake_dir)
    with tempfile.TemporaryDirectory(prefix="deploy-flake-") as control_dir:
        run = Run(
            flake=flake,
            options=options,
            ssh=SshSettings(control_dir=Path(control_dir), config_file=ssh_config, options=ssh_options),
            events=events,
            run_id=time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3),
            holder=f"{getpass.getuser()}@{socket.gethostname()}",
        )
        limit = asyncio.Semaphore(options.jobs or len(destinations) or 1)

        async def one(i: int, dest: Destination) -> HostResult:
            deploy = HostDeploy(run, dest, i)
            async with limit:
                return await deploy.deploy()

        tasks = [asyncio.create_task(one(i, d)) for i, d in enumerate(destinations)]
        _cancel_on_signals(tasks)
        return list(await asyncio.gather(*tasks))


def _cancel_on_signals(tasks: list[asyncio.Task[HostResult]]) -> None:
    """The first Ctrl-C or SIGTERM lets every host roll back cleanly; a second one ends at once."""
    loop = asyncio.get_running_loop()
    hits = 0

    def handler() -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            raise SystemExit(130)
        for t in tasks:
            t.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)
