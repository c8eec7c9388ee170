"""Destination parsing: the Rust tool's forms, plus ports, users and IPv6."""

from __future__ import annotations

import pytest

from deploy_flake.destination import Destination
from deploy_flake.errors import UsageError


@pytest.mark.parametrize(
    ("arg", "host", "user", "port", "config"),
    [
        # the forms the Rust deploy-flake accepts
        ("destination-host1", "destination-host1", None, None, None),
        ("nixos://destination-host2/webserver", "destination-host2", None, None, "webserver"),
        ("nixos://destination-host2/", "destination-host2", None, None, None),
        ("nixos://destination-host2", "destination-host2", None, None, None),
        ("foo.example.com", "foo.example.com", None, None, None),
        # users, ports, IPv6
        ("root@web1", "web1", "root", None, None),
        ("nixos://deploy@web1/web", "web1", "deploy", None, "web"),
        ("nixos://deploy@web1:2222/web", "web1", "deploy", 2222, "web"),
        ("nixos://[::1]:2222/web", "::1", None, 2222, "web"),
        ("nixos://root@[2001:db8::5]/", "2001:db8::5", "root", None, None),
        ("nixos://[fe80::1%25eth0]:22/x", "fe80::1%25eth0", None, 22, "x"),
        ("[::1]", "::1", None, None, None),
        ("admin@[::1]", "::1", "admin", None, None),
        ("192.0.2.7", "192.0.2.7", None, None, None),
        # IPv6 zone ids: interface names and numbers
        ("[fe80::1%eth0]", "fe80::1%eth0", None, None, None),
        ("root@[fe80::1%enp0s31f6.100]", "fe80::1%enp0s31f6.100", "root", None, None),
        ("nixos://[fe80::1%br-lan_0]:2222/web", "fe80::1%br-lan_0", None, 2222, "web"),
        ("fe80::1%3", "fe80::1%3", None, None, None),
        ("::1", "::1", None, None, None),
    ],
)
def test_parses(arg: str, host: str, user: str | None, port: int | None, config: str | None) -> None:
    d = Destination.parse(arg)
    assert (d.host, d.user, d.port, d.config) == (host, user, port, config)
    assert d.raw == arg


@pytest.mark.parametrize(
    "arg",
    [
        "",
        " host",
        "http://host/x",
        "nixos://",
        "nixos://host:notaport/x",
        "nixos://host:0/x",
        "nixos://host:70000/x",
        "nixos://[::1/x",
        "nixos://[nothex]/x",
        "nixos://host/we;b",
        "nixos://host/$(reboot)",
        "nixos://host/a.b",
        "nixos://host/x?y=1",
        "host;reboot",
        "-oProxyCommand=x",
        "us er@host",
        "nixos://host/a/b",
        # IPv6 zone ids: only letters, digits, '_', '.' and '-'
        "[fe80::1%eth0;reboot]",
        "[fe80::1%$(reboot)]",
        "[fe80::1%eth 0]",
        "[fe80::1%eth0/x]",
        "[fe80::1%]",
        "[fe80::1%a%b]",
        "nixos://[fe80::1%eth0;reboot]/x",
        "nixos://[fe80::1%`id`]:22/x",
        # without brackets, an address with a colon is checked as IPv6 too
        "fe80::1%eth0;reboot",
        "root@fe80::1%e'th0",
        "host:22",
        "-oProxyCommand=x:",
        # a trailing newline is not part of a valid name
        "nixos://host\n/x",
        "nixos://host/x%0A",
        "nixos://us%0Aer@host/x",
    ],
)
def test_rejects(arg: str) -> None:
    with pytest.raises(UsageError) as e:
        Destination.parse(arg)
    assert "\n" not in str(e.value)


def test_zone_id_error_names_it() -> None:
    with pytest.raises(UsageError) as e:
        Destination.parse("[fe80::1%eth0;reboot]")
    assert str(e.value) == (
        "invalid destination '[fe80::1%eth0;reboot]': 'eth0;reboot' is not a valid IPv6 zone id "
        "(letters, digits, '_', '.' and '-' only, like fe80::1%eth0)"
    )
