"""How a command gets root on a host whose login user is not root: sudo (sudo-rs is a drop-in
for it: NixOS's security.sudo-rs installs it as /run/wrappers/bin/sudo) or doas (NixOS's
security.doas, OpenBSD's doas as opendoas), --elevate or an inventory host's `elevate`."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from deploy_flake.errors import UsageError

# sudo -S's prompt (a line of its own), and the line its command prints first: the two
# points at which deploy-flake writes to the stdin of a command run through `sudo -S`.
SUDO_PROMPT = "@@deploy-flake-sudo-password"
SUDO_STARTED = "@@deploy-flake-sudo-started"


class Elevate(StrEnum):
    SUDO = "sudo"
    DOAS = "doas"

    @classmethod
    def parse(cls, text: str, where: str) -> Elevate:
        try:
            return cls(text)
        except ValueError:
            raise UsageError(f"{where}: {text!r} is not an elevation: sudo or doas") from None

    @property
    def nixos_option(self) -> str:
        """The NixOS option that installs it, for the messages."""
        if self is Elevate.DOAS:
            return "security.doas.enable"
        return "security.sudo.enable or security.sudo-rs.enable"


def elevated(argv: Sequence[str], elevate: Elevate, *, password: bool) -> list[str]:
    """argv run as root through `elevate`. Without password: non-interactive (-n), it fails
    rather than ask. With password (sudo only, see password_problem): `sudo -S`, which reads
    it from stdin only when it asks for one, and a rule (NOPASSWD for some commands) may let
    it ask for none: so stdin waits for the prompt (SUDO_PROMPT, then the password is sent)
    or for the command itself (SUDO_STARTED, printed as root: then the command's own stdin),
    see ssh.Remote.sudo_dialogue. -k: ignore a cached credential, so that the prompt comes
    whenever it is needed."""
    if not password:
        return [elevate.value, "-n", "--", *argv]
    if elevate is not Elevate.SUDO:
        raise AssertionError(f"{elevate} has no password path on stdin")
    started = f'echo {SUDO_STARTED} >&2 && exec "$@"'
    return ["sudo", "-S", "-k", "-p", f"{SUDO_PROMPT}\n", "--", "/bin/sh", "-c", started, "sh", *argv]


def password_problem(elevate: Elevate, host: str) -> str | None:
    """Why `elevate` cannot be given a password on host (None: it can). doas reads it only
    from a terminal (readpassphrase with RPP_REQUIRE_TTY, through PAM too), never from
    stdin, and deploy-flake's commands have none: its password would have to go through a
    pseudo-terminal that also carries the command's output."""
    if elevate is Elevate.DOAS:
        return (
            f"doas on {host} asks this user for a password, and doas reads it only from a "
            "terminal, which deploy-flake's commands do not have: give the user a `permit nopass` "
            "rule (NixOS: security.doas.extraRules with noPass = true), log in as root, or use "
            "--elevate=sudo"
        )
    return None


# A host's elevation tools, one a line: which of them the login's PATH has.
WHICH_SCRIPT = 'for t in "$@"; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done; true'
