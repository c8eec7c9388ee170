"""--on-rollback-failure=reboot: the last resort when re-activating the previous system
failed twice (rollback-failed), and the host may be left on the unconfirmed system.

The transaction writes the new system's boot entry only once it was confirmed, so the boot
entry still names the system the host ran before: a reboot boots it. Only a host whose boot
entry is checked to be untouched is rebooted; what it came back on, seen over a new
connection, decides the outcome: rolled back when it runs the previous system and is
healthy, else unknown with what to check.
"""

from __future__ import annotations

import contextlib
import time

from deploy_flake.deploy.host import HostJob
from deploy_flake.errors import DeployError
from deploy_flake.host import target
from deploy_flake.models import Outcome, Stage

OPTION = "--on-rollback-failure=reboot"


async def reboot_to_previous(job: HostJob, reason: str) -> None:
    """job's transaction ended rollback-failed for `reason` (the agent's words), its outcome
    unknown and its error saying what to do by hand: reboot into the old boot entry, wait for
    the host within --reboot-timeout and check what it came back on. Never raises a
    DeployError: whatever happens is the host's outcome and error."""
    job.stage(Stage.REBOOT)
    by_hand = job.result.error or reason
    try:
        problem = await target.boot_entry_problem(job.remote, job.deploy_id, job.profile_link)
    except DeployError as e:
        problem = f"it could not be checked ({e})"
    if problem is not None:
        job.result.error = (
            f"{by_hand}. Not rebooted ({OPTION}): its boot entry may not be the previous system: {problem}"
        )
        return
    limit = job.t.reboot
    job.line(
        f"re-activating the previous system failed twice: rebooting into its boot entry ({OPTION}); "
        f"waiting up to {limit:.0f}s (--reboot-timeout) for it to come back"
    )
    t0 = time.monotonic()
    try:
        job.boot_id = await target.request_reboot(job.remote) or job.boot_id
    except DeployError as e:
        job.result.error = f"{by_hand}. The reboot ({OPTION}) was not done: {e}"
        return
    with contextlib.suppress(Exception):  # its host is going down: the master goes with it
        await job.remote.disconnect()
    try:
        await _after_reboot(job, reason, t0)
    except DeployError as e:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = (
            f"{reason}; rebooted into the previous system's boot entry ({OPTION}), and then {e}; "
            f"check `deploy-flake status {job.dest.raw}`"
        )


async def _after_reboot(job: HostJob, reason: str, t0: float) -> None:
    limit = job.t.reboot
    deadline = t0 + limit
    host = job.dest.host
    previous = job.result.previous_system or ""
    rebooted = f"{reason}; rebooted into the previous system's boot entry ({OPTION})"
    job.result.outcome = Outcome.UNKNOWN  # until the host is seen back on its previous system
    facts = await target.wait_for_new_boot(job.remote, job.boot_id, deadline)
    if facts is None:
        job.result.error = (
            f"{rebooted}, but {host} did not come back within {limit:.0f}s (--reboot-timeout): "
            f"check the host's console, then `deploy-flake status {job.dest.raw}`"
        )
        return
    job.line(f"back after {time.monotonic() - t0:.0f}s, boot id {facts.boot_id}")
    job.boot_id = facts.boot_id
    if not previous or facts.current_system != previous:
        job.result.error = (
            f"{rebooted}, but {host} came back running {facts.current_system or 'no known system'} "
            f"(booted {facts.booted_system or 'unknown'}), not the previous system "
            f"{previous or '(unknown)'}: check `readlink /nix/var/nix/profiles/system`, the boot "
            "loader's default and `systemctl --failed`"
        )
        return
    await job.remote.connect(max(1.0, min(job.t.connect, deadline - time.monotonic())))
    state, failed = await target.system_health(job.remote, max(1.0, deadline - time.monotonic()))
    if state != "running":
        units = ", ".join(failed) if failed else "none listed"
        job.result.error = (
            f"{rebooted}; {host} came back on the previous system {previous}, but it is {state} "
            f"(failed units: {units}): check `systemctl --failed` on the host"
        )
        return
    job.result.outcome = Outcome.ROLLED_BACK
    job.result.error = (
        f"rolled back by a reboot: {reason}; {host} was rebooted ({OPTION}) and came back on "
        "the previous system, healthy"
    )
    job.note(
        f"rebooted into the previous system in {time.monotonic() - t0:.0f}s ({OPTION}); "
        "verified over a new SSH connection: it is running"
    )
