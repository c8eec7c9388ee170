"""The sudo password of --ask-sudo-password and --sudo-password-fd: read once, before any host
is touched, and afterwards only ever written to the stdin of `sudo -S` on a host."""

from __future__ import annotations

import contextlib
import getpass
import os

from deploy_flake.errors import UsageError

MAX_BYTES = 4096


def sudo_password(ask: bool, fd: int | None) -> bytes | None:
    if ask and fd is not None:
        raise UsageError("--ask-sudo-password and --sudo-password-fd exclude each other: give one")
    if fd is not None:
        password = _read_fd(fd)
    elif ask:
        password = _ask()
    else:
        return None
    if not password:
        raise UsageError("the sudo password is empty")
    if "\n" in password or "\0" in password:
        raise UsageError("the sudo password cannot contain a newline or NUL")
    return password.encode()


def _read_fd(fd: int) -> str:
    """The first line of what fd holds (up to MAX_BYTES), without its newline; fd is closed."""
    data = b""
    try:
        while b"\n" not in data and len(data) < MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise UsageError(
            f"cannot read the sudo password from --sudo-password-fd {fd}: {e.strerror}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    line = data.split(b"\n", 1)[0]
    try:
        return line.decode()
    except UnicodeDecodeError:
        raise UsageError(f"the sudo password from --sudo-password-fd {fd} is not UTF-8") from None


def _ask() -> str:
    """On the terminal (getpass opens /dev/tty): never echoed, never from a pipe."""
    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise UsageError(
            "--ask-sudo-password needs a terminal to ask on; for automation use --sudo-password-fd FD"
        ) from None
    try:
        return getpass.getpass("[deploy-flake] sudo password for the hosts: ")
    except (EOFError, KeyboardInterrupt):
        raise UsageError("no sudo password was given") from None
