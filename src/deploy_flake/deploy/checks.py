"""What a deploy refuses before anything is changed, as pure functions: the new system's
sanity checks, and the preflight's verdict on the system the host runs."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from deploy_flake.errors import DeployError
from deploy_flake.host.target import ClosureFacts

# The units of the host's transactions (and their guard) are named so.
OUR_UNITS = "deploy-flake-"


def check_system(
    closure: ClosureFacts,
    *,
    toplevel: str | None,
    host_system: str,
    host: str,
    skip: Collection[str],
) -> None:
    """The new system toplevel (whose closure is described) is fit for the host, else a
    DeployError says why. skip: the checks --skip-check names."""
    c = closure
    if "switch-to-configuration" not in skip and not c.has_switch_to_configuration:
        raise DeployError(
            f"{toplevel} has no bin/switch-to-configuration: it is not a NixOS system "
            "(skip this check with --skip-check=switch-to-configuration)"
        )
    if "system-type" not in skip and c.system and host_system and c.system != host_system:
        raise DeployError(
            f"the new system is built for {c.system} but the host runs {host_system} "
            "(skip this check with --skip-check=system-type)"
        )
    if "sshd" not in skip and not (c.sshd_units and c.sshd_wanted):
        what = "does not have sshd" if not c.sshd_units else "has sshd but does not start it at boot"
        raise DeployError(
            f"the new configuration {what}: activating it would lock you out of "
            f"{host} (skip this check with --skip-check=sshd if that is intended)"
        )


def preflight_verdict(health: str | None, failed_units: Sequence[str]) -> str | None:
    """The preflight's verdict on the running system (health: systemctl is-system-running,
    None when not asked): None when it may be deployed to; a note when only an earlier
    transaction's units failed (the agent finishes that one first); else a DeployError."""
    ours = [u for u in failed_units if u.startswith(OUR_UNITS)]
    if health == "degraded" and ours and len(ours) == len(failed_units):
        return f"an earlier deploy's units failed ({', '.join(ours)}): it is finished first"
    if health is not None and health != "running":
        units = ", ".join(failed_units) if failed_units else "none listed"
        raise DeployError(
            f"System is not healthy. State: {health}; failed units: {units}. "
            "Fix them or deploy with --preflight-check=skip."
        )
    return None
