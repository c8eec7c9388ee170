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
    ],
)
def test_rejects(arg: str) -> None:
    with pytest.raises(UsageError) as e:
        Destination.parse(arg)
    assert "\n" not in str(e.value)
