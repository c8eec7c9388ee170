"""Whether and how a host's login user gets root: sudo or doas (remote.elevate), with or
without the password; checked once, at connect, before anything changes."""

from __future__ import annotations

from deploy_flake.errors import DeployError, ProcessTimeout
from deploy_flake.host.target import run_checked
from deploy_flake.models import Elevate
from deploy_flake.remote.elevate import WHICH_SCRIPT
from deploy_flake.remote.ssh import Remote


async def sudo_needs_password(remote: Remote) -> bool:
    """Whether the elevation (sudo, or doas: remote.elevate) asks this login for a password
    (False: it works without one). A host without it fails here, before anything changes.
    A password given with --ask-sudo-password is tried once here: a wrong one stops the host."""
    tool, host = remote.elevate, remote.dest.host
    done = await run_checked(remote.with_sudo(True), ["true"], f"checking {tool}", root=True, timeout=30)
    if done.ok:
        return False
    if done.returncode == 127:
        raise DeployError(await _missing_elevation(remote))
    if remote.settings.sudo_password is None:
        rule = "a nopass rule (doas.conf)" if tool is Elevate.DOAS else "NOPASSWD sudo"
        raise DeployError(
            f"{tool} does not work without a password for this user on {host} "
            f"({done.last_lines(1)}): allow {rule}, log in as root, or give the password "
            "with --ask-sudo-password"
        )
    try:
        done = await remote.with_sudo(True, password=True).run(["true"], root=True, timeout=30)
    except ProcessTimeout:
        # it asked with a prompt deploy-flake does not know (for sudo: a PAM prompt other
        # than "Password:"): the password is only ever sent after a known prompt
        known = (
            "the prompt deploy-flake gives sudo (-p), which replaces only PAM's usual 'Password:' "
            "prompt (unless sudoers sets passprompt_override)"
            if tool is Elevate.SUDO
            else "a prompt that ends in 'password:'"
        )
        raise DeployError(
            f"checking the {tool} password on {host} did not finish within 30s: the password is "
            f"sent only after {known}; nothing was changed"
        ) from None
    if not done.ok:
        raise DeployError(f"{tool} on {host} did not accept the password: {done.last_lines(1).strip()}")
    return True


async def _missing_elevation(remote: Remote) -> str:
    """The message for a host whose login has no `remote.elevate` on its PATH: which other
    elevation it has, if any."""
    tool, host = remote.elevate, remote.dest.host
    others = [e.value for e in Elevate if e is not tool]
    done = await run_checked(remote, ["sh", "-c", WHICH_SCRIPT, "sh", *others], "looking for sudo and doas")
    found = [line for line in done.stdout.split() if line in others]
    if found:
        hint = f'it has {found[0]}: use --elevate={found[0]} (or the inventory\'s elevate = "{found[0]}")'
    else:
        hint = f"it has neither sudo nor doas: install one ({tool.nixos_option}) or log in as root"
    return (
        f"{tool} is not installed for this user on {host} (not on the login's PATH): {hint}; "
        "nothing was changed"
    )
