"""status: what a host runs and how it is, as its facts say; nothing is changed."""

from __future__ import annotations

from deploy_flake.deploy.host import HostJob
from deploy_flake.host.target import HostFacts
from deploy_flake.models import Outcome, Stage


def show_status(job: HostJob, facts: HostFacts) -> None:
    """status: what the host runs and how it is, as the facts say."""
    job.result.outcome = Outcome.UNCHANGED
    job.result.system = facts.current_system or None
    job.result.details = status_details(facts)
    job.stage(Stage.DONE)


def status_details(facts: HostFacts) -> dict[str, object]:
    """The status of a host, by the names `deploy-flake status --json` promises."""
    return {
        "reachable": True,
        "state": facts.state or "unknown",
        "failed_units": list(facts.failed_units),
        "current_system": facts.current_system or None,
        "booted_system": facts.booted_system or None,
        "profile_system": facts.profile_system or None,
        "generation": facts.generation,
        "reboot_needed": bool(facts.reboot_reasons),
        "reboot_reasons": list(facts.reboot_reasons),
        "last_deploy": dict(facts.last_deploy) or None,
    }
