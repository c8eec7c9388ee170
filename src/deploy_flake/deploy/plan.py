"""plan: what activating a new system would change on a host, and whether a deploy would
accept it; nothing is changed. A deploy with --ask shows it too, before the one answer."""

from __future__ import annotations

from deploy_flake.agent.calls import AgentCalls
from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.reboot import reboot_decision
from deploy_flake.errors import DeployError
from deploy_flake.host import inspection
from deploy_flake.host.target import HostFacts
from deploy_flake.models import HostPlan, Outcome, Stage


async def show_plan(
    job: HostJob,
    toplevel: str,
    facts: HostFacts,
    seen: inspection.Inspection,
    *,
    final: bool = True,
    generation: int | None = None,
) -> str:
    """plan: what activating toplevel would change; nothing is changed. The checks' verdict.

    final: the plan is all this run does for the host (plan, --dry-activate);
    generation: a rollback's (its boot entry is checked, as the host's transaction does).
    """
    verdict = "ok"
    try:
        job.sanity_checks(seen.closure, facts)
    except DeployError as e:
        verdict = str(e)
    # the boot loader, as the host's transaction would check it before changing anything
    reboot = seen.closure.reboot_reasons
    _, verified = reboot_decision(job, toplevel, facts, reboot)
    boot = await AgentCalls(job.remote, job.deploy_id).boot_info(
        toplevel, boot_once=verified, generation=generation
    )
    if boot is not None and boot.problem and verdict == "ok":
        verdict = boot.problem
    changes = list(seen.changes)
    if seen.closure.init_differs:  # switch-to-configuration refuses even to dry-activate it (exit 100)
        units: dict[str, list[str]] = {}
        job.line("units: not known: the new system's init starts only at a boot into it")
    else:
        activated = seen.closure.activates or toplevel  # its specialisation, when one is activated
        units = await inspection.dry_activate(job.remote, activated, timeout=job.t.activation)
    job.result.plan = HostPlan(
        closure_changes=tuple(changes),
        units={action: tuple(names) for action, names in units.items()},
        reboot_reasons=tuple(reboot),
        checks=verdict,
        specialisation=job.specialisation or None,
        boot=boot,
    )
    for change in changes:
        job.line(f"change: {change}")
    for action, names in units.items():
        job.line(f"would {action}: {', '.join(names)}")
    if not changes and not units:
        job.line("no change: the host runs this system already")
    if job.specialisation:
        job.line(f"specialisation: {job.specialisation}")
    job.line("reboot needed: " + (", ".join(reboot) if reboot else "no"))
    for line in boot.lines() if boot is not None else ["boot loader: not known (the host did not say)"]:
        job.line(line)
    job.line(f"checks: {verdict}")
    if final:
        job.result.outcome = Outcome.UNCHANGED if verdict == "ok" else Outcome.FAILED
        if verdict != "ok":
            job.result.error = f"a deploy would refuse this system: {verdict}"
        job.stage(Stage.DONE)
    return verdict
