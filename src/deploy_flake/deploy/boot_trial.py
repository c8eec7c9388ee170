"""--reboot, verified: the new system is booted once (systemd-boot's one-shot entry) and made
the default only when it came back on that system, healthy, and a new login confirmed it.

Before it changes anything, the host's transaction checks its boot loader (one without a
one-shot entry fails the host, unless --reboot-unverified), and it stages the trial at commit
(agent/sh/trial.sh); this module reboots the host, waits for it, and either confirms the
trial boot (trial-commit) or learns how the host's own guard ended it: the new system did
not boot (the boot loader started the old default again), or it was sent back (no login
within the guard's window, or unhealthy)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from deploy_flake.agent.client import Agent
from deploy_flake.agent.protocol import TrialStatus
from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.reboot import start_reboot
from deploy_flake.errors import DeployError
from deploy_flake.host import target
from deploy_flake.host_reports import TrialState
from deploy_flake.models import Outcome, Stage

TRIAL_POLL_S = 2.0  # how often the trial's status is asked for while the host's guard acts


async def reboot_trial(job: HostJob, agent: Agent, expected: str, reasons: tuple[str, ...]) -> None:
    """The trial is staged on the host: reboot, and conclude the job's outcome from what the
    host came back on. expected: the system the one-shot entry boots (NEW, or its
    specialisation)."""
    window = agent.settings.trial_window_s()
    limit = job.t.reboot + window  # a trial boot nobody confirms comes back a second time
    why = f" for the new {', '.join(reasons)}" if reasons else ""
    t0 = await start_reboot(
        job,
        f"rebooting{why} into the new system once (its one-shot boot entry; the default stays the "
        f"old system); waiting up to {limit:.0f}s for it to come back",
        lambda e: (
            f"the new system is confirmed and its one boot armed, but the reboot was not done: {e}. "
            "The next reboot starts it once; unless it is confirmed then, the host returns to its "
            f"old default by itself; `deploy-flake status {job.dest.raw}` shows it"
        ),
    )
    if t0 is None:
        return
    deadline = t0 + limit
    try:
        await _after_reboot(job, agent, expected, t0, deadline)
    except DeployError as e:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = (
            f"rebooted for a verified boot, and then {e}; check `deploy-flake status {job.dest.raw}`"
        )


async def _after_reboot(job: HostJob, agent: Agent, expected: str, t0: float, deadline: float) -> None:
    host = job.dest.host
    facts = await target.wait_for_new_boot(job.remote, job.boot_id, deadline)
    if facts is None:
        _unknown(job, f"rebooted, but {host} did not come back within {deadline - t0:.0f}s")
        return
    job.line(
        f"back after {time.monotonic() - t0:.0f}s, boot id {facts.boot_id}, booted {facts.booted_system}"
    )
    job.boot_id = facts.boot_id
    job.identity = facts.identity
    if facts.booted_system != expected:
        await _ended_by_host(job, agent, deadline)
        return
    # the trial boot: healthy, and steady for the settle window, then the confirmation
    await job.connect(max(1.0, min(job.t.connect, deadline - time.monotonic())))
    state, failed = await target.system_health(
        job.remote, max(1.0, min(job.t.health, deadline - time.monotonic()))
    )
    if state == "running" and job.t.settle > 0:
        await asyncio.sleep(job.t.settle)
        state, failed = await target.system_health(
            job.remote, max(1.0, min(job.t.health, deadline - time.monotonic()))
        )
    if state != "running":
        units = ", ".join(failed) if failed else "none listed"
        await agent.trial("trial-reject", f"the new system booted {state} (failed units: {units})")
        await _sent_back(job, agent, deadline)
        return
    status = await agent.trial("trial-commit", timeout=job.t.boot + 60)
    if status is not None and status.state is TrialState.COMMITTED:
        job.result.outcome = Outcome.ACTIVATED
        job.note(
            f"booted the new system once in {time.monotonic() - t0:.0f}s; it is running and a new "
            "login confirmed it: it is now the default boot entry"
        )
        job.stage(Stage.DONE)
        return
    if status is not None and status.state is TrialState.FAILED:
        _unknown(job, f"the new system booted and was confirmed, but {status.reason}")
        return
    if status is not None and status.state is TrialState.RETURNING:
        await _sent_back(job, agent, deadline)
        return
    await _ended_by_host(job, agent, deadline, status)


async def _sent_back(job: HostJob, agent: Agent, deadline: float) -> None:
    """The trial boot was sent back (unhealthy, or its commit failed): wait for the host on
    its old default, then learn how the guard ended the trial."""
    with contextlib.suppress(Exception):
        await job.remote.disconnect()
    facts = await target.wait_for_new_boot(job.remote, job.boot_id, deadline)
    if facts is None:
        _unknown(
            job, f"the new system was sent back to the old default, but {job.dest.host} did not come back"
        )
        return
    job.boot_id = facts.boot_id
    job.identity = facts.identity
    await _ended_by_host(job, agent, deadline)


async def _ended_by_host(
    job: HostJob, agent: Agent, deadline: float, status: TrialStatus | None = None
) -> None:
    """The host runs something other than the trial boot: its guard ends the trial (puts the
    profile and entries back) at boot; wait for that and report it."""
    while status is None or status.state not in (
        TrialState.ROLLED_BACK,
        TrialState.COMMITTED,
        TrialState.FAILED,
    ):
        if time.monotonic() >= deadline:
            _unknown(
                job,
                "the host's guard did not end the verified reboot "
                f"({status.state if status else 'no answer'})",
            )
            return
        await asyncio.sleep(TRIAL_POLL_S)
        with contextlib.suppress(DeployError):
            await job.connect(max(1.0, min(job.t.connect, deadline - time.monotonic())))
            status = await agent.trial("trial-status")
    if status.state is TrialState.COMMITTED:  # confirmed by a call whose answer was lost
        job.result.outcome = Outcome.ACTIVATED
        job.stage(Stage.DONE)
        return
    job.result.outcome = Outcome.ROLLED_BACK if status.state is TrialState.ROLLED_BACK else Outcome.FAILED
    job.result.error = f"rolled back: {status.reason or 'the verified reboot was undone'}"
    job.stage(Stage.ROLLBACK)


def _unknown(job: HostJob, what: str) -> None:
    job.result.outcome = Outcome.UNKNOWN
    job.result.error = (
        f"{what}. Its default boot entry is still the old system, and the new one was to boot once; "
        f"check the host's console, then `deploy-flake status {job.dest.raw}`"
    )
