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
from dataclasses import dataclass, replace
from pathlib import Path

from deploy_flake import nix, process
from deploy_flake.ask import Gate
from deploy_flake.destination import Destination
from deploy_flake.events import Events
from deploy_flake.host_deploy import HostDeploy, Run
from deploy_flake.models import DeployOptions, HostResult, Job
from deploy_flake.ssh import SshSettings


@dataclass(frozen=True)
class Target:
    """A host of the run, with its own options where the inventory gives some."""

    dest: Destination
    options: DeployOptions | None = None
    ssh_options: tuple[str, ...] = ()  # before the run's: ssh keeps the first value it reads


class InterruptedTwice(Exception):
    """A second Ctrl-C or SIGTERM: stop at once; every host's result as far as it is known."""

    def __init__(self, results: list[HostResult]) -> None:
        super().__init__("interrupted twice")
        self.results = results


async def deploy_all(
    destinations: Sequence[Destination | Target],
    options: DeployOptions,
    *,
    ssh_config: Path | None,
    ssh_options: tuple[str, ...],
    events: Events,
) -> list[HostResult]:
    """Runs options.job on every destination, at most options.jobs at a time; never raises
    for a host. Only a deploy or a plan reads the flake."""
    if options.job in (Job.DEPLOY, Job.PLAN):
        flake = await nix.flake_metadata(options.flake_dir)
    else:
        flake = nix.Flake(url="", store_path="")
    targets = [t if isinstance(t, Target) else Target(t) for t in destinations]
    with tempfile.TemporaryDirectory(prefix="deploy-flake-") as control_dir:
        ssh = SshSettings(control_dir=Path(control_dir), config_file=ssh_config, options=ssh_options)
        run = Run(
            flake=flake,
            options=options,
            ssh=ssh,
            events=events,
            run_id=time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3),
            holder=f"{getpass.getuser()}@{socket.gethostname()}",
            limit=asyncio.Semaphore(options.jobs or len(targets) or 1),
            gate=Gate(len(targets)) if options.ask and options.job is Job.DEPLOY else None,
        )
        limit = run.limit
        deploys = [
            HostDeploy(
                run,
                t.dest,
                i,
                options=t.options,
                ssh=replace(ssh, options=(*t.ssh_options, *ssh_options)) if t.ssh_options else None,
            )
            for i, t in enumerate(targets)
        ]

        async def one(deploy: HostDeploy) -> HostResult:
            try:
                await limit.acquire()
            except asyncio.CancelledError:  # interrupted while waiting for its turn (--jobs)
                return deploy.skipped("interrupted before it started; nothing was changed")
            try:
                return await deploy.deploy()
            finally:
                limit.release()
                if run.gate is not None and not deploy.arrived_at_gate:
                    run.gate.leave()

        tasks = [asyncio.create_task(one(d)) for d in deploys]
        hard_stop = asyncio.Event()
        _cancel_on_signals(tasks, hard_stop)
        everything = asyncio.gather(*tasks)
        stopper = asyncio.ensure_future(_wait_event(hard_stop))
        await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
        if everything.done():
            stopper.cancel()
            return list(everything.result())
        # Interrupted twice: every process of ours goes now; each host is reported as
        # far as it is known (the hosts' own agents still finish or roll back).
        process.kill_all()
        everything.cancel()
        results = [d.abandoned() for d in deploys]
        await asyncio.wait([everything], timeout=10)  # their processes are gone: quick
        if everything.done() and not everything.cancelled():
            everything.exception()  # retrieved: nothing left to report
        raise InterruptedTwice(results)


async def _wait_event(event: asyncio.Event) -> list[HostResult]:
    await event.wait()
    return []


def _cancel_on_signals(tasks: list[asyncio.Task[HostResult]], hard_stop: asyncio.Event) -> None:
    """The first Ctrl-C or SIGTERM lets every host roll back cleanly; a second one ends at once."""
    loop = asyncio.get_running_loop()
    hits = 0

    def handler() -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            hard_stop.set()
            return
        for t in tasks:
            t.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)
