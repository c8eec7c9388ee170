"""status: what a host runs and how it is, as its facts say; nothing is changed."""

from __future__ import annotations

from deploy_flake.agent.calls import AgentCalls
from deploy_flake.deploy.host import HostJob
from deploy_flake.host.target import HostFacts
from deploy_flake.host_reports import BootInfo
from deploy_flake.models import HostStatus, Outcome, Stage


async def show_status(job: HostJob, facts: HostFacts, *, boot: bool = True) -> None:
    """status: what the host runs and how it is, as the facts say, and (boot: root's commands
    work) what boots it: the agent's boot-info, for the system the host boots by default."""
    default = facts.profile_system or facts.current_system
    info = await AgentCalls(job.remote, job.deploy_id).boot_info(default) if boot and default else None
    job.result.outcome = Outcome.UNCHANGED
    job.result.system = facts.current_system or None
    job.result.status = host_status(facts, info)
    job.stage(Stage.DONE)


def host_status(facts: HostFacts, boot: BootInfo | None = None) -> HostStatus:
    """The status of a host, as its facts say."""
    return HostStatus(
        state=facts.state or "unknown",
        failed_units=tuple(facts.failed_units),
        current_system=facts.current_system or None,
        booted_system=facts.booted_system or None,
        profile_system=facts.profile_system or None,
        generation=facts.generation,
        reboot_reasons=tuple(facts.reboot_reasons),
        last_deploy=dict(facts.last_deploy) or None,
        specialisation=facts.specialisation or None,
        boot=boot,
    )
