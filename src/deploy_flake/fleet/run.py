"""Many hosts at once: each host's failure stays its own."""

from __future__ import annotations

import asyncio
import getpass
import resource
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from deploy_flake import nix, process
from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.jobs import host_job
from deploy_flake.deploy.run import Run
from deploy_flake.destination import Destination
from deploy_flake.errors import DeployError
from deploy_flake.fleet.builder import Builder
from deploy_flake.fleet.rollout import Rollout, wave_runs
from deploy_flake.models import BuildPlace, DeployOptions, HostResult, Job, Outcome
from deploy_flake.output.events import Events
from deploy_flake.remote.ssh import SshSettings


@dataclass(frozen=True)
class Target:
    """A host of the run, with its own options where the inventory gives some."""

    dest: Destination
    options: DeployOptions | None = None
    ssh_options: tuple[str, ...] = ()  # before the run's: ssh keeps the first value it reads


class InterruptedTwice(DeployError):
    """A second Ctrl-C or SIGTERM: the deployer stops at once, with every host's result as far
    as it is known."""

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
    sudo_password: bytes | None = None,
) -> list[HostResult]:
    """Runs options.job on every destination, at most options.jobs at a time; never raises
    for a host. Only a deploy or a plan reads the flake."""
    if options.job in (Job.DEPLOY, Job.PLAN):
        flake = await nix.flake_metadata(options.flake_dir)
    else:
        flake = nix.Flake(url="", store_path="")
    targets = [t if isinstance(t, Target) else Target(t) for t in destinations]
    with tempfile.TemporaryDirectory(prefix="deploy-flake-") as control_dir:
        ssh = SshSettings(
            control_dir=Path(control_dir),
            config_file=ssh_config,
            options=ssh_options,
            sudo_password=sudo_password,
        )
        run = Run(
            flake=flake,
            options=options,
            ssh=ssh,
            events=events,
            run_id=time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3),
            holder=f"{getpass.getuser()}@{socket.gethostname()}",
            limit=asyncio.Semaphore(options.jobs or default_jobs(len(targets))),
        )
        builder = None
        if options.build_on.place is not BuildPlace.TARGET and options.job in (Job.DEPLOY, Job.PLAN):
            builder = Builder(
                options.build_on,
                flake,
                options.flake_dir,
                ssh=ssh,
                workdir=Path(control_dir),
                run_id=run.run_id,
                build_args=options.build_args,
                timeouts=options.timeouts,
            )
            run = replace(run, builder=builder)
        try:
            return await _run_all(run, targets, ssh, ssh_options)
        finally:
            if builder is not None:
                await asyncio.shield(builder.close())


async def _run_all(
    run: Run, targets: list[Target], ssh: SshSettings, ssh_options: tuple[str, ...]
) -> list[HostResult]:
    """Every host of the run, as the rollout options say (canary, max failures, all or nothing)."""
    options = run.options
    runs = wave_runs(run, len(targets))  # with --ask, each wave's gate
    deploys = [
        host_job(
            runs[i],
            t.dest,
            i,
            options=t.options,
            ssh=replace(ssh, options=(*t.ssh_options, *ssh_options)) if t.ssh_options else None,
        )
        for i, t in enumerate(targets)
    ]
    rollout = Rollout(run, deploys)
    tasks = [asyncio.create_task(rollout.one(i, d)) for i, d in enumerate(deploys)]
    hard_stop = asyncio.Event()
    _cancel_on_signals(tasks, hard_stop, rollout.interrupted)
    results = await _all_or_hard_stop(tasks, deploys, hard_stop)
    if options.all_or_nothing and options.job is Job.DEPLOY:
        await _undo_activated(run, deploys, results, tasks, hard_stop)
    return results


# Descriptors a host at work may hold here (pipes of its current step, its ControlMaster's
# socket, with room to spare; and its run log, open until it finishes); and what the run
# itself keeps open.
FDS_PER_HOST = 9
FDS_RESERVED = 64


def default_jobs(hosts: int) -> int:
    """Every host at once, as far as the open-file limit allows: the soft limit is raised to
    the hard one first (as Nix does), and each host at work is given FDS_PER_HOST."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(1, min(hosts, (soft - FDS_RESERVED) // FDS_PER_HOST))


async def _all_or_hard_stop(
    tasks: list[asyncio.Task[HostResult]], deploys: list[HostJob], hard_stop: asyncio.Event
) -> list[HostResult]:
    """Every host's result; on a second Ctrl-C, InterruptedTwice with what is known."""
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


async def _undo_activated(
    run: Run,
    deploys: list[HostJob],
    results: list[HostResult],
    tasks: list[asyncio.Task[HostResult]],
    hard_stop: asyncio.Event,
) -> None:
    """--all-or-nothing: when a host was not activated, the hosts this run activated go back
    to the generation they ran before, through the rollback transaction."""
    others = [r.destination for r in results if r.outcome is not Outcome.ACTIVATED]
    if not others:
        return
    undo_run = replace(run, run_id=run.run_id + "u", gate=None)
    undos: list[tuple[HostResult, HostJob, int]] = []
    for i, (deploy, result) in enumerate(zip(deploys, results, strict=True)):
        # back to the generation the host's transaction replaced (not the one seen at connect:
        # a switch by someone else meanwhile stays), and only from the one it committed
        generation = _generation_number(deploy.replaced_link)
        committed = _generation_number(deploy.committed_link)
        if result.outcome is not Outcome.ACTIVATED:
            continue
        if generation is None or committed is None:
            result.outcome = Outcome.UNKNOWN
            result.error = (
                "--all-or-nothing: the generation it ran before is not known; it runs the new system"
            )
            continue
        options = replace(
            deploy.opts,
            job=Job.ROLLBACK,
            rollback_to=generation,
            rollback_from=committed,
            canary=0,
            max_failures=0,
        )
        undo_deploy = host_job(undo_run, deploy.dest, i, options=options, ssh=deploy.remote.settings)
        undos.append((result, undo_deploy, generation))

    async def undo(deploy: HostJob) -> HostResult:
        async with run.limit:
            return await deploy.perform()

    new_tasks = [asyncio.create_task(undo(d)) for _, d, _ in undos]
    tasks.extend(new_tasks)  # the first Ctrl-C reaches them too
    try:
        undone = await _all_or_hard_stop(new_tasks, [d for _, d, _ in undos], hard_stop)
    except InterruptedTwice as e:  # every host of the run is in the report, not only these
        _record_undos(undos, e.results, others)
        raise InterruptedTwice(results) from None
    _record_undos(undos, undone, others)


def _record_undos(
    undos: list[tuple[HostResult, HostJob, int]], undone: list[HostResult], others: list[str]
) -> None:
    """Each undone host's result, from what its rollback did (as far as it is known)."""
    why = ", ".join(others)
    for (result, _, generation), back in zip(undos, undone, strict=True):
        if back.outcome is Outcome.ACTIVATED:
            result.outcome = Outcome.ROLLED_BACK
            result.error = (
                f"rolled back by --all-or-nothing to generation {generation}, because {why} "
                "did not end activated"
            )
        elif back.outcome is Outcome.UNKNOWN:
            result.outcome = Outcome.UNKNOWN
            result.error = (
                f"--all-or-nothing was rolling it back to generation {generation} ({back.error}; "
                f"its previous system there is the one this run activated); {why} did not end activated"
            )
        else:
            result.outcome = Outcome.ACTIVATED
            result.error = (
                f"--all-or-nothing could not roll it back ({back.error}); {why} did not end activated"
            )


def _generation_number(profile_link: str) -> int | None:
    name = profile_link.rsplit("/", 1)[-1]
    if name.startswith("system-") and name.endswith("-link") and name[7:-5].isdigit():
        return int(name[7:-5])
    return None


async def _wait_event(event: asyncio.Event) -> list[HostResult]:
    await event.wait()
    return []


def _cancel_on_signals(
    tasks: list[asyncio.Task[HostResult]], hard_stop: asyncio.Event, on_first: Callable[[], None]
) -> None:
    """The first Ctrl-C or SIGTERM lets every host roll back cleanly (on_first: no more
    questions); a second one ends at once."""
    loop = asyncio.get_running_loop()
    hits = 0

    def handler() -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            hard_stop.set()
            return
        on_first()
        for t in tasks:
            t.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)
