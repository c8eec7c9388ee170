"""gc: old generations of a host's system profile go (never one it needs), then its boot
entries are written again, so the boot loader prunes /boot; with --collect-garbage the
store's garbage goes too. The host's agent does it under the deploy lock (agent/sh/gc.sh)."""

from __future__ import annotations

from deploy_flake.agent.calls import AgentCalls
from deploy_flake.deploy.host import HostJob
from deploy_flake.models import Outcome, Stage


async def collect_garbage(job: HostJob) -> None:
    """gc on the job's host, as its options say; the result's gc, outcome and error."""
    settings = job.opts.gc
    job.stage(Stage.GC)
    report = await AgentCalls(job.remote, job.deploy_id).gc(settings)
    if report is None:
        job.result.outcome = Outcome.UNKNOWN
        job.result.error = (
            "gc did not finish (its answer did not come whole): some old generations may be gone; "
            f"`deploy-flake status {job.dest.raw}` and `nix-env -p /nix/var/nix/profiles/system "
            "--list-generations` on the host show what is left"
        )
        return
    job.result.gc = report
    for generation, why in report.kept:
        job.line(f"keeps generation {generation}: {why}")
    verb = "would remove" if settings.dry_run else "removes"
    for generation, system, date in report.removed:
        job.line(f"{verb} generation {generation} ({date}): {system}")
    job.line(report.summary(settings.dry_run))
    if report.problem:
        job.result.outcome = Outcome.UNKNOWN if report.removed and not settings.dry_run else Outcome.FAILED
        job.result.error = report.problem
        return
    changed = bool(report.removed or report.store) and not settings.dry_run
    job.result.outcome = Outcome.CLEANED if changed else Outcome.UNCHANGED
    job.stage(Stage.DONE)
