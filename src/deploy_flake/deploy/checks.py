"""What a deploy refuses before anything is changed, as pure functions: the new system's
sanity checks, and the preflight's verdict on the system the host runs."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from deploy_flake.errors import DeployError
from deploy_flake.host.inspection import ClosureFacts

# The units of the host's transactions (and their guard) are named so.
OUR_UNITS = "deploy-flake-"


# The Nix systems a kernel of each machine (uname -m) runs, beside MACHINE-linux: Nix's own
# extra platforms (i686 on x86_64; armv6l and armv5tel on armv7l), and the names uname and
# Nix spell differently (ppc64le is powerpc64le, arm64 is aarch64, i386..i686 are i686,
# armv8l is a 32-bit ARM kernel's view of an ARMv8 CPU; mips64 does not say its byte order).
_PLATFORMS: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86_64-linux", "i686-linux"),
    "amd64": ("x86_64-linux", "i686-linux"),
    "i386": ("i686-linux",),
    "i486": ("i686-linux",),
    "i586": ("i686-linux",),
    "i686": ("i686-linux",),
    "aarch64": ("aarch64-linux",),
    "arm64": ("aarch64-linux",),
    "armv8l": ("armv7l-linux", "armv6l-linux", "armv5tel-linux"),
    "armv7l": ("armv7l-linux", "armv6l-linux", "armv5tel-linux"),
    "armv6l": ("armv6l-linux", "armv5tel-linux"),
    "ppc64le": ("powerpc64le-linux",),
    "ppc64": ("powerpc64-linux",),
    "ppc": ("powerpc-linux",),
    "mips64": ("mips64el-linux", "mips64-linux"),
    "mips": ("mipsel-linux", "mips-linux"),
}


def host_platforms(machine: str) -> tuple[str, ...]:
    """The Nix systems (a NixOS system's `system` file) a host whose kernel is machine runs."""
    return _PLATFORMS.get(machine, (f"{machine}-linux",))


def check_system(
    closure: ClosureFacts,
    *,
    toplevel: str | None,
    host_machine: str,
    host: str,
    skip: Collection[str],
    activate_now: bool = True,
    boot_only: str = "deploy it with --test=skip --reboot=if-needed",
) -> None:
    """The new system toplevel (whose closure is described) is fit for the host, else a
    DeployError says why. skip: the checks --skip-check names. activate_now: it is to be
    activated now (switch-to-configuration test), not only at the next boot (--test=skip).
    boot_only: what to do for a system that only a boot can start."""
    c = closure
    if "switch-to-configuration" not in skip and not c.has_switch_to_configuration:
        raise DeployError(
            f"{toplevel} has no bin/switch-to-configuration: it is not a NixOS system "
            "(skip this check with --skip-check=switch-to-configuration)"
        )
    platforms = host_platforms(host_machine)
    if "system-type" not in skip and c.system and host_machine and c.system not in platforms:
        raise DeployError(
            f"the new system is built for {c.system} but the host runs {' or '.join(platforms)} "
            f"(uname -m: {host_machine}; skip this check with --skip-check=system-type)"
        )
    if activate_now and c.init_differs:
        raise DeployError(
            f"the new system's init ({c.init_interface}) is incompatible with the running one's "
            f"({c.running_init_interface or 'none'}): switch-to-configuration test would refuse it "
            f'("won\'t take effect until you reboot"), so nothing was changed; {boot_only}'
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


def wanted_specialisation(asked: str | None, running: str, *, activate_now: bool) -> str:
    """The new system's specialisation to activate ("": the system itself). asked:
    --specialisation (None: not given; "": the system itself); running: the one the host runs.
    Only an activation picks one: the boot entry is always the system itself, as on NixOS."""
    if not activate_now:
        return ""
    return running if asked is None else asked


def check_specialisation(
    closure: ClosureFacts, *, wanted: str, asked: str | None, running: str, host: str
) -> str | None:
    """The new system has the specialisation to activate, else a DeployError; a note to show
    when the host's own specialisation is followed, or left on purpose."""
    if not wanted:
        if running and asked == "":
            return (
                f"{host} leaves its specialisation {running} for the new system itself (--specialisation '')"
            )
        return None
    if closure.activates:
        if asked is None:
            return (
                f"{host} runs the specialisation {wanted} of its system: activating the new system's "
                f"{wanted} (its boot entry is the system itself, as on NixOS; --specialisation picks another)"
            )
        return None
    has = ", ".join(closure.specialisations) or "none"
    if asked is None:
        raise DeployError(
            f"{host} runs the specialisation {running} of its system, but the new system has no "
            f"specialisation {running} (it has: {has}), so nothing was changed; pick one with "
            "--specialisation NAME, or --specialisation '' for the new system itself"
        )
    raise DeployError(f"the new system has no specialisation {asked} (--specialisation; it has: {has})")
