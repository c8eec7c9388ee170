"""--reboot: whether a host reboots into its new, committed system, and the reboot itself:
wait for the host to come back on a new boot, then check what it booted and how it is."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from deploy_flake.deploy.host import HostJob
from deploy_flake.errors import DeployError
from deploy_flake.host import target
from deploy_flake.host.target import HostFacts
from deploy_flake.models import Outcome, RebootPolicy, Stage


def reboot_wanted(
    policy: RebootPolicy, *, test: bool, reboot_reasons: tuple[str, ...], toplevel: str, current_system: str
) -> bool:
    """After toplevel was activated and committed: whether the host reboots into it.
    reboot_reasons: what of it takes a reboot to use; test: it was activated at once
    (--test, the default), not only made the boot entry."""
    if policy is RebootPolicy.ALWAYS:
        return True
    if policy is RebootPolicy.NEVER:
        return False
    # --test=skip: the new system runs only once the host boots it
    boot_only = not test and toplevel != current_system
    return bool(reboot_reasons) or boot_only


def reboot_decision(
    job: HostJob, toplevel: str, facts: HostFacts, reasons: tuple[str, ...]
) -> tuple[bool, bool]:
    """For toplevel on the job's host, as its options say: whether the host reboots after the
    commit, and whether that reboot boots toplevel once first (verified). The transaction and
    the plan decide it here alike."""
    wanted = reboot_wanted(
        job.opts.reboot,
        test=job.opts.test,
        reboot_reasons=reasons,
        toplevel=toplevel,
        current_system=facts.current_system,
    )
    verified = boots_once(
        wanted, unverified=job.opts.reboot_unverified, toplevel=toplevel, default_system=facts.profile_system
    )
    return wanted, verified


def boots_once(wanted: bool, *, unverified: bool, toplevel: str, default_system: str) -> bool:
    """Whether --reboot boots toplevel once before it becomes the default (verified): a
    reboot is wanted, --reboot-unverified was not given, and toplevel is not the boot default
    already (the system profile's: a reboot into it needs no trial, the plain reboot checks
    that it came back on it)."""
    return wanted and not unverified and toplevel != default_system


async def reboot_into(job: HostJob, toplevel: str, reboot_reasons: tuple[str, ...]) -> None:
    """The new system is committed (profile and boot entry): reboot into it, wait for the
    host to come back on a new boot within --reboot-timeout, and check what it booted."""
    limit = job.t.reboot
    why = f" for the new {', '.join(reboot_reasons)}" if reboot_reasons else ""
    t0 = await start_reboot(
        job,
        f"rebooting{why}; waiting up to {limit:.0f}s (--reboot-timeout) for it to come back",
        lambda e: f"the new system is active and its boot entry written, but the reboot was not done: {e}",
    )
    if t0 is None:
        return
    try:
        await _after_reboot(job, toplevel, t0, t0 + limit)
    except DeployError as e:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = f"rebooted, and then {e}; check `deploy-flake status {job.dest.raw}`"


async def start_reboot(job: HostJob, announce: str, not_done: Callable[[DeployError], str]) -> float | None:
    """The reboot stage's start, for a plain and a verified reboot alike: say `announce`, ask
    the host to reboot, and let its connection go. Returns when the wait for the host began
    (time.monotonic()), or None when the host was not rebooted: the job is then unknown, with
    not_done(why) as its error."""
    job.stage(Stage.REBOOT)
    job.line(announce)
    t0 = time.monotonic()
    try:
        # the boot our reboot ends is the one the host runs now, not the one seen at connect
        job.boot_id = await target.request_reboot(job.remote) or job.boot_id
    except DeployError as e:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = not_done(e)
        return None
    with contextlib.suppress(Exception):  # its host is going down: the master goes with it
        await job.remote.disconnect()
    return t0


async def _after_reboot(job: HostJob, toplevel: str, t0: float, deadline: float) -> None:
    limit = job.t.reboot
    facts = await target.wait_for_new_boot(job.remote, job.boot_id, deadline)
    host = job.dest.host
    if facts is None:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = (
            f"rebooted, but {host} did not come back within {limit:.0f}s (--reboot-timeout). Its "
            f"boot entry is the new system {toplevel}; check the host's console, then "
            f"`deploy-flake status {job.dest.raw}`"
        )
        return
    job.line(f"back after {time.monotonic() - t0:.0f}s, boot id {facts.boot_id}")
    job.boot_id = facts.boot_id
    job.identity = facts.identity  # a new login's: this host, whatever its new boot changed
    if facts.booted_system != toplevel or facts.current_system != toplevel:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = (
            f"rebooted, but {host} came back running {facts.current_system or 'no known system'} "
            f"(booted {facts.booted_system or 'unknown'}), not the new system {toplevel}: the boot "
            "loader did not start the new entry; check `readlink /nix/var/nix/profiles/system` "
            "and the boot loader's default"
        )
        return
    await job.connect(max(1.0, min(job.t.connect, deadline - time.monotonic())))
    state, failed = await target.system_health(job.remote, max(1.0, deadline - time.monotonic()))
    if state != "running":
        units = ", ".join(failed) if failed else "none listed"
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = (
            f"rebooted into the new system, but it is {state} (failed units: {units}); "
            f"`deploy-flake rollback --reboot=if-needed {job.dest.raw}` returns it to the "
            "previous generation"
        )
        return
    job.note(f"rebooted into the new system in {time.monotonic() - t0:.0f}s; it is running")
    job.stage(Stage.DONE)
