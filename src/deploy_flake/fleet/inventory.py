"""The hosts described in the flake itself, and choosing among them with `--on`.

The flake's output `deployFlake.hosts` maps a name to a host:

    deployFlake.hosts.web1 = {
      destination = "nixos://admin@web1.example.org/web";  # optional: nixos://<name>/<name>
      tags = [ "web" "eu" ];                 # letters, digits, '_', '-' and '.'
      user = "deploy";                       # overrides the destination's user
      port = 2222;                           # overrides the destination's port
      ssh_options = [ "ProxyJump=bastion" ];  # KEY=VALUE, for this host: only where and how
                                             # to log in (remote/inventory_options.py)
      sudo = true;
      elevate = "doas";                      # how: "sudo" (sudo-rs too) or "doas"
      timeouts = { build = "2h"; settle = 0; };  # durations or whole seconds
      skip_checks = [ "system-type" ];
    };

Every key is optional; unknown keys, wrong types and null values are refused. The name
must be a valid configuration name (letters, digits, '_' and '-'). It is the configuration
to deploy when the destination names none (node name = configuration name, as in colmena
and deploy-rs; unlike a destination on the command line, whose configuration defaults to
the host name the host reports), and without a destination it is the host too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_flake import nix
from deploy_flake.destination import CONFIG_NAME, USER_NAME, Destination
from deploy_flake.durations import parse_whole_seconds
from deploy_flake.errors import UsageError
from deploy_flake.models import SANITY_CHECKS, DeployOptions, Elevate
from deploy_flake.remote.inventory_options import inventory_option_problem
from deploy_flake.remote.ssh import SSH_OPTION

TAG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# Per-stage limits an inventory host may set, with their smallest value in seconds.
TIMEOUT_MINIMUMS: Mapping[str, int] = {
    "copy": 1,
    "build": 1,
    "preflight": 1,
    "activation": 1,
    "health": 1,
    "settle": 0,
    "confirm": 1,
    "boot": 1,
    "reboot": 1,
}
HOST_KEYS = (
    "destination",
    "tags",
    "user",
    "port",
    "ssh_options",
    "sudo",
    "elevate",
    "timeouts",
    "skip_checks",
)
_GLOB_CHARS = frozenset("*?[")
_LISTED = 20  # names shown in a "no match" message


@dataclass(frozen=True)
class InventoryHost:
    """One host of the flake's inventory, with its own settings (None/empty: the run's)."""

    name: str
    destination: Destination  # always with a configuration
    tags: frozenset[str] = frozenset()
    ssh_options: tuple[str, ...] = ()
    sudo: bool | None = None
    elevate: Elevate | None = None
    timeouts: Mapping[str, float] = field(default_factory=dict, hash=False)
    skip_checks: frozenset[str] = frozenset()

    def deploy_options(self, options: DeployOptions) -> DeployOptions:
        """The run's options with this host's settings: its sudo, elevate and timeouts win, its
        skipped checks are added. (Its ssh_options go to the host's SshSettings.)"""
        timeouts: dict[str, Any] = dict(self.timeouts)
        return dataclasses.replace(
            options,
            sudo=options.sudo if self.sudo is None else self.sudo,
            elevate=options.elevate if self.elevate is None else self.elevate,
            skip_checks=options.skip_checks | self.skip_checks,
            timeouts=dataclasses.replace(options.timeouts, **timeouts),
        )


# ---------------------------------------------------------------- parsing
def parse_inventory(data: object, *, origin: str) -> dict[str, InventoryHost]:
    """Checks the JSON value of deployFlake.hosts; the hosts by name, sorted by name."""
    if not isinstance(data, dict):
        raise UsageError(f"{origin}: deployFlake.hosts must be an attribute set of hosts, not {_kind(data)}")
    return {name: _parse_host(name, data[name]) for name in sorted(data)}


def _parse_host(name: str, spec: object) -> InventoryHost:
    if not CONFIG_NAME.fullmatch(name):
        raise UsageError(
            f"inventory host {name!r}: not a valid host name (letters, digits, '_' and '-' only, "
            "as it is the default configuration name)"
        )
    where = f"inventory host {name!r}"
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: must be an attribute set, not {_kind(spec)}")
    unknown = sorted(set(spec) - set(HOST_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(HOST_KEYS)})")
    for key, value in spec.items():
        if value is None:
            raise UsageError(f"{where}: {key!r} is null; leave it out instead")
    return InventoryHost(
        name=name,
        destination=_destination(where, name, spec),
        tags=frozenset(_tags(where, spec.get("tags", []))),
        ssh_options=tuple(_ssh_options(where, spec.get("ssh_options", []))),
        sudo=_optional_bool(where, "sudo", spec.get("sudo")),
        elevate=_elevate(where, spec.get("elevate")),
        timeouts=_timeouts(where, spec.get("timeouts", {})),
        skip_checks=frozenset(_skip_checks(where, spec.get("skip_checks", []))),
    )


def _destination(where: str, name: str, spec: dict[str, object]) -> Destination:
    raw = spec.get("destination", f"nixos://{name}/{name}")
    if not isinstance(raw, str):
        raise UsageError(f"{where}: 'destination' must be a string, not {_kind(raw)}")
    try:
        dest = Destination.parse(raw)
    except UsageError as e:
        raise UsageError(f"{where}: 'destination': {e}") from None
    user = spec.get("user", dest.user)
    if user is not None and not isinstance(user, str):
        raise UsageError(f"{where}: 'user' must be a string, not {_kind(user)}")
    if user is not None and not USER_NAME.fullmatch(user):
        raise UsageError(f"{where}: 'user': {user!r} is not a valid user name")
    port = spec.get("port", dest.port)
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise UsageError(f"{where}: 'port' must be a number from 1 to 65535, not {port!r}")
    # The final destination, written out in full and parsed again: the user is checked,
    # and what a report or a message shows is what is used.
    host = f"[{dest.host}]" if dest.is_ipv6 else dest.host
    login = "" if user is None else f"{user}@"
    colon_port = "" if port is None else f":{port}"
    full = f"nixos://{login}{host}{colon_port}/{dest.config or name}"
    try:
        return Destination.parse(full)
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None


def _string_list(where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where}: {key!r} must be a list of strings")
    return list(value)


def _tags(where: str, value: object) -> list[str]:
    tags = _string_list(where, "tags", value)
    for tag in tags:
        if not TAG_NAME.fullmatch(tag):
            raise UsageError(
                f"{where}: 'tags': {tag!r} is not a valid tag (letters, digits, '_', '-' and '.' only)"
            )
    return tags


def _ssh_options(where: str, value: object) -> list[str]:
    options = _string_list(where, "ssh_options", value)
    for opt in options:
        if not SSH_OPTION.match(opt):
            raise UsageError(f"{where}: 'ssh_options': {opt!r} is not KEY=VALUE, like ConnectTimeout=5")
        problem = inventory_option_problem(opt)
        if problem is not None:
            raise UsageError(f"{where}: 'ssh_options': {problem}")
    return options


def _optional_bool(where: str, key: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise UsageError(f"{where}: {key!r} must be true or false, not {_kind(value)}")
    return value


def _elevate(where: str, value: object) -> Elevate | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f'{where}: \'elevate\' must be "sudo" or "doas", not {_kind(value)}')
    return Elevate.parse(value, f"{where}: 'elevate'")


def _timeouts(where: str, value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: 'timeouts' must be an attribute set of durations, not {_kind(value)}")
    timeouts: dict[str, float] = {}
    for stage, text in sorted(value.items()):
        if stage not in TIMEOUT_MINIMUMS:
            raise UsageError(
                f"{where}: 'timeouts': unknown stage {stage!r} (known: {', '.join(TIMEOUT_MINIMUMS)})"
            )
        if isinstance(text, bool) or not isinstance(text, (str, int)):
            raise UsageError(
                f"{where}: 'timeouts.{stage}' must be a duration like \"90s\" or whole seconds, "
                f"not {_kind(text)}"
            )
        try:
            seconds = parse_whole_seconds(str(text), minimum=TIMEOUT_MINIMUMS[stage])
        except UsageError as e:
            raise UsageError(f"{where}: 'timeouts.{stage}': {e}") from None
        timeouts[stage] = float(seconds)
    return timeouts


def _skip_checks(where: str, value: object) -> list[str]:
    checks = _string_list(where, "skip_checks", value)
    for check in checks:
        if check not in SANITY_CHECKS:
            raise UsageError(
                f"{where}: 'skip_checks': unknown check {check!r} (known: {', '.join(SANITY_CHECKS)})"
            )
    return checks


def _kind(value: object) -> str:
    """What a JSON value from Nix is, in Nix's words."""
    match value:
        case None:
            return "null"
        case bool():
            return f"the boolean {str(value).lower()}"
        case int() | float():
            return f"the number {value}"
        case str():
            return f"the string {value!r}"
        case list():
            return "a list"
        case dict():
            return "an attribute set"
    return type(value).__name__


# ---------------------------------------------------------------- selection
def select(hosts: Mapping[str, InventoryHost], selectors: Sequence[str]) -> list[InventoryHost]:
    """The hosts that any selector matches, sorted by name, each once.

    A selector is a name, a glob on names (`web*`, `db[12]`, `*`), or `@tag`, exactly or as a
    glob on tags (`@e*`). Every selector must match a host: a typo is not silently ignored.
    """
    if not selectors:
        raise UsageError("select hosts with --on (use --on '*' for all)")
    if not hosts:
        raise UsageError("the inventory has no hosts (deployFlake.hosts is empty)")
    chosen: set[str] = set()
    for selector in selectors:
        matched = _matches(hosts, selector)
        if not matched:
            raise UsageError(_no_match(hosts, selector))
        chosen.update(matched)
    return [hosts[name] for name in sorted(chosen)]


def _matches(hosts: Mapping[str, InventoryHost], selector: str) -> set[str]:
    if selector != selector.strip() or selector in ("", "@"):
        raise UsageError(f"--on {selector!r}: give a host name, a glob like 'web*', or @TAG")
    if selector.startswith("@"):
        pattern = selector[1:]
        return {name for name, host in hosts.items() if any(_match(tag, pattern) for tag in host.tags)}
    return {name for name in hosts if _match(name, selector)}


def _match(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) if _GLOB_CHARS & set(pattern) else name == pattern


def _no_match(hosts: Mapping[str, InventoryHost], selector: str) -> str:
    if not selector.startswith("@"):
        return f"--on {selector!r}: no host in the inventory matches; hosts: {_listing(hosts)}"
    tags = sorted({tag for host in hosts.values() for tag in host.tags})
    known = f"tags: {_listing(tags)}" if tags else "no host has any tags"
    pattern = selector[1:]
    if _GLOB_CHARS & set(pattern):
        return f"--on {selector!r}: no host has a tag that matches {pattern!r}; {known}"
    return f"--on {selector!r}: no host has the tag {pattern!r}; {known}"


def _listing(names: Sequence[str] | Mapping[str, object]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:_LISTED])
    return shown if len(ordered) <= _LISTED else f"{shown}, ... ({len(ordered) - _LISTED} more)"


# ---------------------------------------------------------------- loading
async def load_inventory(flake_dir: Path) -> dict[str, InventoryHost]:
    """The flake's hosts: one local evaluation of deployFlake.hosts, nothing built."""
    data = await nix.eval_inventory(flake_dir)
    return parse_inventory(data, origin=f"the flake at {flake_dir}")
