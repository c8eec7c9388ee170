"""Where to deploy: `host`, `user@host` or `nixos://[user@]host[:port]/[config]`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from deploy_flake.errors import UsageError

# A configuration name becomes part of a flake attribute path and a remote
# argument: letters, digits, '_' and '-' only (no dots, no shell metacharacters).
CONFIG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
# Host names as ssh accepts them (aliases from ~/.ssh/config included).
HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")
USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
# An IPv6 zone id (fe80::1%eth0) is an interface name or number.
ZONE_ID = re.compile(r"[A-Za-z0-9_.-]+")


def check_config_name(name: str, origin: str) -> str:
    if not CONFIG_NAME.fullmatch(name):
        raise UsageError(
            f"{origin} {name!r} is not a valid configuration name "
            "(letters, digits, '_' and '-' only): pass the name explicitly as nixos://HOST/NAME"
        )
    return name


@dataclass(frozen=True)
class Destination:
    """A host to deploy to, parsed from the command line."""

    raw: str
    host: str
    user: str | None = None
    port: int | None = None
    config: str | None = None

    @classmethod
    def parse(cls, arg: str) -> Destination:
        if not arg or arg != arg.strip():
            raise UsageError(f"invalid destination {arg!r}: it is empty or has surrounding spaces")
        if arg.startswith("nixos://"):
            return cls._parse_url(arg)
        if "://" in arg:
            raise UsageError(f"invalid destination {arg!r}: only the nixos:// scheme is supported")
        user, _, host = arg.rpartition("@")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            _check_ipv6(arg, host)
        return cls(raw=arg, host=_check_host(arg, host), user=_check_user(arg, user or None))

    @classmethod
    def _parse_url(cls, arg: str) -> Destination:
        rest = arg[len("nixos://") :]
        authority, slash, path = rest.partition("/")
        if "?" in rest or "#" in rest:
            raise UsageError(f"invalid destination {arg!r}: query strings and fragments are not allowed")
        user, _, hostport = authority.rpartition("@")
        port: int | None = None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end < 0:
                raise UsageError(f"invalid destination {arg!r}: unclosed '[' in the IPv6 address")
            host, after = hostport[1:end], hostport[end + 1 :]
            _check_ipv6(arg, host)
            if after:
                if not after.startswith(":"):
                    raise UsageError(f"invalid destination {arg!r}: unexpected {after!r} after the address")
                port = _parse_port(arg, after[1:])
        else:
            host, colon, port_text = hostport.partition(":")
            if colon:
                port = _parse_port(arg, port_text)
        config = unquote(path) if slash and path else None
        if config is not None:
            check_config_name(config, f"in destination {arg!r}, the configuration")
        return cls(
            raw=arg,
            host=_check_host(arg, host),
            user=_check_user(arg, unquote(user) if user else None),
            port=port,
            config=config,
        )

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def label(self) -> str:
        """A short name for output prefixes."""
        return self.config_label if self.config else self.host

    @property
    def config_label(self) -> str:
        return f"{self.host}/{self.config}"


def _check_host(arg: str, host: str) -> str:
    if ":" in host:
        _check_ipv6(arg, host)  # also when it came without brackets
        return host
    if not host or not HOST_NAME.fullmatch(host) or host.startswith("-"):
        raise UsageError(f"invalid destination {arg!r}: {host!r} is not a valid host name")
    return host


def _check_ipv6(arg: str, host: str) -> None:
    address, percent, zone = host.partition("%")
    if percent and not ZONE_ID.fullmatch(zone):
        raise UsageError(
            f"invalid destination {arg!r}: {zone!r} is not a valid IPv6 zone id "
            "(letters, digits, '_', '.' and '-' only, like fe80::1%eth0)"
        )
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise UsageError(f"invalid destination {arg!r}: {host!r} is not an IPv6 address") from None


def _check_user(arg: str, user: str | None) -> str | None:
    if user is not None and not USER_NAME.fullmatch(user):
        raise UsageError(f"invalid destination {arg!r}: {user!r} is not a valid user name")
    return user


def _parse_port(arg: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid destination {arg!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class SshTarget:
    """Where ssh really connects for a destination, as `ssh -G` reports it."""

    dest: Destination
    hostname: str
    port: int
    user: str
    proxy: str = ""  # how ssh gets there: "" (directly), "ProxyCommand ..." or "ProxyJump ..."

    @classmethod
    def from_ssh_config(cls, dest: Destination, text: str) -> SshTarget:
        """Reads `ssh -G` output (one "key value" line per option; proxy lines only when set)."""
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            values.setdefault(key.lower(), value.strip())
        for key in ("hostname", "port", "user"):
            if not values.get(key):
                raise UsageError(f"ssh -G printed no {key} for {dest.raw!r}: check the ssh configuration")
        if not values["port"].isdigit():
            raise UsageError(f"ssh -G printed the port {values['port']!r} for {dest.raw!r}")
        proxy = ""
        if values.get("proxycommand", "none") != "none":
            alias = values.get("hostkeyalias", dest.host)
            proxy = "ProxyCommand " + _expand_alias_tokens(values["proxycommand"], dest.host, alias)
        elif values.get("proxyjump", "none") != "none":
            proxy = "ProxyJump " + values["proxyjump"]
        return cls(dest, values["hostname"], int(values["port"]), values["user"], proxy)

    @property
    def machine(self) -> tuple[str, int, str]:
        """Equal for two destinations that reach the same machine, whatever the login user."""
        return (self.hostname.lower(), self.port, self.proxy)


def _expand_alias_tokens(command: str, host: str, key_alias: str) -> str:
    """Expands the ProxyCommand tokens that name the destination itself (%n, %k): two aliases
    sharing `ProxyCommand virsh console %n` reach different machines. The others are left as
    they are: %h and %p are the same for the same hostname and port."""
    tokens = {"n": host, "k": key_alias}
    return re.sub(r"%(.)", lambda m: tokens.get(m.group(1), m.group(0)), command)


def check_distinct_hosts(targets: Sequence[SshTarget]) -> None:
    """Refuses two destinations that reach the same machine: the second deploy would fail on
    the host's deploy lock, or worse, replace what the first one just activated."""
    seen: dict[tuple[str, int, str], SshTarget] = {}
    for target in targets:
        first = seen.setdefault(target.machine, target)
        if first is not target:
            raise UsageError(_same_host_message(first, target))


def _same_host_message(a: SshTarget, b: SshTarget) -> str:
    where = f"{a.hostname} port {a.port}" + (f" (through the same {a.proxy.split()[0]})" if a.proxy else "")
    names = f"{a.dest.raw!r} and {b.dest.raw!r} are the same host"
    if a.user == b.user:
        return f"{names}: ssh connects to {a.user}@{where} for both; give each host only once"
    return (
        f"{names}, with different users: ssh connects to {where} for both, as {a.user} and as "
        f"{b.user}; a host takes one deploy at a time, so give it only once"
    )
