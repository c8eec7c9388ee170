"""The ssh options a flake's inventory may give a host: where and how to log in, nothing that
runs a command on the deployer or weakens its checks.

A checked-out flake is input, not configuration: `deploy-flake status --on '*'` must not run
its code on this machine. ProxyCommand, LocalCommand, KnownHostsCommand and the like would
(and `StrictHostKeyChecking=no` or `BatchMode=no` would undo the deployer's own choices), so
only the options below are taken, each value checked; an ssh config file (--ssh-config) or
the command line's -o, which are the user's own, may say anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from deploy_flake.destination import USER_NAME

_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
_IPV6 = re.compile(r"^\[?[0-9A-Fa-f:.]+\]?$")
# one hop of ProxyJump: [user@]host[:port], an IPv6 address in brackets
_JUMP = re.compile(
    r"^(?:([A-Za-z_][A-Za-z0-9_.-]{0,31})@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]*)(?::(\d+))?$"
)
_PATH = re.compile(r"^[A-Za-z0-9_.,/~+=@%-]+$")  # a file name without white space or shell syntax


def _host(value: str) -> bool:
    return bool(_HOST.fullmatch(value) or (":" in value and _IPV6.fullmatch(value)))


def _port(value: str) -> bool:
    return value.isdigit() and 0 < int(value) < 65536


def _count(value: str) -> bool:
    return value.isdigit() and len(value) <= 6


def _yes_no(value: str) -> bool:
    return value.lower() in ("yes", "no")


def _jumps(value: str) -> bool:
    if value.lower() == "none":
        return True
    for hop in value.split(","):
        m = _JUMP.fullmatch(hop)
        if m is None or (m.group(3) is not None and not _port(m.group(3))):
            return False
    return True


# lower-case name -> (the name as ssh spells it, its value's check, what the value is)
_ALLOWED: Mapping[str, tuple[str, Callable[[str], bool], str]] = {
    name.lower(): (name, check, what)
    for name, check, what in (
        ("HostName", _host, "a host name or address"),
        ("Port", _port, "a port from 1 to 65535"),
        ("User", lambda v: bool(USER_NAME.fullmatch(v)), "a user name"),
        ("ProxyJump", _jumps, "[user@]host[:port], comma-separated, or none"),
        ("IdentityFile", lambda v: bool(_PATH.fullmatch(v)), "a file name"),
        ("CertificateFile", lambda v: bool(_PATH.fullmatch(v)), "a file name"),
        ("IdentitiesOnly", _yes_no, "yes or no"),
        ("HostKeyAlias", _host, "a host name"),
        ("ConnectTimeout", _count, "whole seconds"),
        ("ConnectionAttempts", _count, "a number"),
        ("ServerAliveInterval", _count, "whole seconds"),
        ("ServerAliveCountMax", _count, "a number"),
        ("AddressFamily", lambda v: v.lower() in ("any", "inet", "inet6"), "any, inet or inet6"),
        ("Compression", _yes_no, "yes or no"),
    )
}
ALLOWED_OPTIONS: tuple[str, ...] = tuple(spelled for spelled, _, _ in _ALLOWED.values())


def inventory_option_problem(option: str) -> str | None:
    """Why the inventory may not give this KEY=VALUE ssh option; None when it may."""
    key, _, value = option.partition("=")
    allowed = _ALLOWED.get(key.lower())
    if allowed is None:
        return (
            f"{key} is not allowed in an inventory (a flake must not run commands on this machine "
            f"or change how ssh checks hosts; put it in an ssh config file, --ssh-config); "
            f"allowed: {', '.join(ALLOWED_OPTIONS)}"
        )
    spelled, check, what = allowed
    if not check(value):
        return f"{spelled}={value!r}: the value must be {what}"
    return None
