"""How a command gets root on a host whose login user is not root: sudo (sudo-rs is a drop-in
for it: NixOS's security.sudo-rs installs it as /run/wrappers/bin/sudo) or doas (NixOS's
security.doas, OpenBSD's doas as opendoas), --elevate or an inventory host's `elevate`."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from importlib import resources

from deploy_flake.models import Elevate
from deploy_flake.process import Answer, Dialogue

# sudo -S's prompt (a line of its own), and the line its command prints first: the two
# points at which deploy-flake writes to the stdin of a command run through `sudo -S`.
SUDO_PROMPT = "@@deploy-flake-sudo-password"
SUDO_STARTED = "@@deploy-flake-sudo-started"
DOAS_PASSWORD_SCRIPT = resources.files("deploy_flake.host").joinpath("doas_password.sh").read_text()


def elevated(argv: Sequence[str], elevate: Elevate, *, password: bool) -> list[str]:
    """argv run as root through `elevate`. Without password: non-interactive (-n), it fails
    rather than ask. With password, the command's stdin waits (see password_dialogue) for
    the prompt (then the password is sent) or for the command itself (SUDO_STARTED, printed
    as root: then the command's own stdin): a rule may let a command run without one.
    sudo: `sudo -S`, with a prompt of ours (-p) on a line of its own; -k: a cached
    credential is ignored, so that the prompt comes whenever it is needed. doas reads a
    password only from a terminal: it runs in one of its own (host/doas_password.sh)."""
    if not password:
        return [elevate.value, "-n", "--", *argv]
    if elevate is Elevate.DOAS:
        return ["sh", "-c", DOAS_PASSWORD_SCRIPT, "sh", shlex.join(argv)]
    started = f'echo {SUDO_STARTED} >&2 && exec "$@"'
    return ["sudo", "-S", "-k", "-p", f"{SUDO_PROMPT}\n", "--", "/bin/sh", "-c", started, "sh", *argv]


def _asks(elevate: Elevate, line: str) -> bool:
    """Whether a line of the command's stderr, before it started, is the password prompt:
    sudo's is ours (-p), which sudo-rs shows inside a frame of its own; doas's is PAM's
    ("Password:") or its own ("doas (user@host) password:"), cut at its ':' by
    doas_password.sh."""
    if elevate is Elevate.SUDO:
        return line.endswith(SUDO_PROMPT)  # sudo-rs frames it: "[sudo: PROMPT] Password: "
    return line.strip().lower().endswith("password")


def password_dialogue(elevate: Elevate, password: bytes, data: bytes | None) -> Dialogue:
    """The stdin of a command built with elevated(argv, password=True): the password only
    once the tool asked for it, and the command's own stdin (data) only once the command runs
    (SUDO_STARTED; doas_password.sh reads a first line, empty where doas did not ask). A second
    prompt (a wrong password) is not answered: stdin is closed, the tool fails."""
    asked = ended = False

    def answer(line: str) -> Answer | None:
        nonlocal asked, ended
        if ended:
            return None  # the command's own output from here on
        if _asks(elevate, line):
            if asked:
                ended = True
                return Answer(close=True)
            asked = True
            return Answer(password + b"\n")
        if elevate is Elevate.DOAS and not line.strip():
            return Answer()  # what is left of the terminal's line after a prompt: not shown
        if elevate is Elevate.SUDO and asked and line.startswith("] "):
            return Answer()  # the end of sudo-rs's frame around our prompt: not shown
        if line == SUDO_STARTED:
            ended = True
            first = b"\n" if elevate is Elevate.DOAS and not asked else b""
            return Answer(first + (data or b""), close=True)
        return None

    return answer


# A host's elevation tools, one a line: which of them the login's PATH has.
WHICH_SCRIPT = 'for t in "$@"; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done; true'
