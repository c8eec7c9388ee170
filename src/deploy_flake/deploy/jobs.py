"""The four jobs a run does to each host, step by step, and host_job: the one a run asks for.

status    connect, read the facts, report them
gc        connect, remove old generations, write the boot entries again (collect garbage)
plan      connect, copy the flake, build, inspect, show what would change
deploy    connect, copy the flake, build, inspect, check, activate, confirm (reboot)
rollback  connect, pick the generation, inspect, check, activate, confirm (reboot)
"""

from __future__ import annotations

from deploy_flake.deploy.build import build_system, copying_flake
from deploy_flake.deploy.gc import collect_garbage
from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.plan import show_plan
from deploy_flake.deploy.rollback_target import rollback_target
from deploy_flake.deploy.run import Run
from deploy_flake.deploy.status import show_status
from deploy_flake.deploy.transaction import TransactionJob
from deploy_flake.destination import Destination
from deploy_flake.errors import DeployError
from deploy_flake.host.target import HostFacts
from deploy_flake.models import DeployOptions, Job, Outcome
from deploy_flake.remote.ssh import SshSettings


async def _built(job: HostJob) -> tuple[HostFacts, str]:
    """plan's and deploy's start: the host's facts (root's commands through sudo where they
    need it) and its configuration's system, built while the flake was being copied."""
    async with copying_flake(job) as copy:
        facts = await job._facts()
        await job._use_sudo(facts)
        return facts, await build_system(job, facts, copy)


class StatusJob(HostJob):
    """status: what the host runs and how it is; nothing is changed."""

    async def _steps(self) -> None:
        facts = await self._facts()
        try:  # what boots the host is root's to read; the rest of the status is not
            await self._use_sudo(facts)
            boot_readable = True
        except DeployError as e:
            self.line(f"boot loader: not read ({e})")
            boot_readable = False
        await show_status(self, facts, boot=boot_readable)


class GcJob(HostJob):
    """gc: old system generations go (never one the host needs), the boot entries are
    written again; with --collect-garbage the store's garbage goes too."""

    async def _steps(self) -> None:
        facts = await self._facts()
        await self._use_sudo(facts)
        await collect_garbage(self)


class PlanJob(HostJob):
    """plan: builds the system and shows what activating it would change; nothing is changed."""

    builds = True

    async def _steps(self) -> None:
        facts, toplevel = await _built(self)
        self.result.system = toplevel
        seen = await self._inspect(toplevel, facts, preflight=False)
        await show_plan(self, toplevel, facts, seen)


class DeployJob(TransactionJob):
    """deploy: builds the flake's configuration for the host and makes it the host's system."""

    builds = True

    async def _steps(self) -> None:
        facts, toplevel = await _built(self)
        await self._change_to(toplevel, facts)


class RollbackJob(TransactionJob):
    """rollback: an earlier generation of the system profile (--to N, or the one before the
    current one) becomes the host's system again."""

    async def _steps(self) -> None:
        facts = await self._facts()
        await self._use_sudo(facts)
        held = self.opts.rollback_from
        if held is not None and facts.generation != held:  # an undo, and someone switched since
            self._moved_on(f"system-{held}-link", f"{facts.profile_link} ({facts.profile_system})")
            return
        toplevel, generation = rollback_target(facts, self.opts.rollback_to, self.dest.host)
        self.result.config = f"generation {generation}"
        self.note(f"rolling back to generation {generation}: {toplevel}")
        await self._change_to(toplevel, facts, generation)
        # the host's transaction found the profile moved on (after the look above): it changed
        # nothing, and the host runs what someone else switched to
        moved = self.replaced_link and self.replaced_link != self.profile_link
        if held is not None and self.result.outcome is Outcome.FAILED and moved:
            self._moved_on(f"system-{held}-link", f"{self.replaced_link} ({self.result.error})")

    def _moved_on(self, held: str, now: str) -> None:
        """An undo (--all-or-nothing) that must not happen: the profile is no longer at the
        generation the deploy committed, so going back would undo someone else's switch."""
        self.result.outcome = Outcome.UNKNOWN
        self.result.error = (
            f"the system profile moved on since this run committed {held}: it is now {now}. It was "
            "not rolled back, so that change is kept; check what the host runs with "
            f"`deploy-flake status {self.dest.raw}`"
        )


JOBS: dict[Job, type[HostJob]] = {
    Job.STATUS: StatusJob,
    Job.PLAN: PlanJob,
    Job.DEPLOY: DeployJob,
    Job.ROLLBACK: RollbackJob,
    Job.GC: GcJob,
}


def host_job(
    run: Run,
    dest: Destination,
    index: int,
    *,
    options: DeployOptions | None = None,
    ssh: SshSettings | None = None,
) -> HostJob:
    """The job the host's options (an inventory's per-host ones, else the run's) name, for
    the index-th host of the run; `await job.perform()` runs it."""
    job = (options or run.options).job
    return JOBS[job](run, dest, index, options=options, ssh=ssh)
