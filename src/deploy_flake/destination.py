"""Where to deploy: `host`, `user@host` or `nixos://[user@]host[:port]/[config]`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

from deploy_flake.errors import UsageError

# A configuration name becomes part of a flake attribute path and a remote
# argument: letters, digits, '_' and '-' only (no dots, no shell metacharacters).
CONFIG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
# Host names as ssh accepts them (aliases from ~/.ssh/config included).
HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")
USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


def check_config_name(name: str, origin: str) -> str:
    if not CONFIG_NAME.match(name):
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
        return host  # checked as IPv6 already
    if not host or not HOST_NAME.match(host) or host.startswith("-"):
        raise UsageError(f"invalid destination {arg!r}: {host!r} is not a valid host name")
    return host


def _check_ipv6(arg: str, host: str) -> None:
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        raise UsageError(f"invalid destination {arg!r}: {host!r} is not an IPv6 address") from None


def _check_user(arg: str, user: str | None) -> str | None:
    if user is not None and not USER_NAME.match(user):
        raise UsageError(f"invalid destination {arg!r}: {user!r} is not a valid user name")
    return user


def _parse_port(arg: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid destination {arg!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)
