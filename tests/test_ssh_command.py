"""The ssh command lines deploy-flake runs, and the same options handed to Nix's ssh-ng.

Every argument quoted, the user's options before the defaults, a fresh connection never
multiplexed, IPv6 in brackets in a store URI, and options Nix cannot carry refused."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deploy_flake.errors import UsageError
from deploy_flake.remote.destination import Destination
from deploy_flake.remote.ssh import Remote, SshSettings


def _remote(arg: str, **kw: object) -> Remote:
    settings = SshSettings(
        control_dir=Path("/tmp/cm"), config_file=Path("/etc/lab.cfg"), options=("IdentityFile=/k",)
    )
    return Remote(Destination.parse(arg), settings, **kw)  # type: ignore[arg-type]


def test_ssh_command_quotes_every_argument() -> None:
    argv = _remote("nixos://deploy@[::1]:2222/web", sudo=True).command(["echo", "a b", "$(x)"], root=True)
    assert argv[:3] == ["ssh", "-F", "/etc/lab.cfg"]
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "deploy"
    assert argv[-2] == "::1"
    assert shlex.split(argv[-1]) == ["sudo", "-n", "--", "echo", "a b", "$(x)"]
    # the user's options come before the defaults, so they win
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert opts.index("IdentityFile=/k") < opts.index("BatchMode=yes")
    assert "ControlMaster=no" in opts and any(o.startswith("ControlPath=/tmp/cm/") for o in opts)


def test_fresh_connection_never_multiplexes() -> None:
    argv = _remote("web1").command(["true"], fresh=True)
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert opts[:2] == ["ControlMaster=no", "ControlPath=none"]
    assert not any(o.startswith("ControlPath=/tmp") for o in opts)


def test_nix_gets_the_same_ssh_options() -> None:
    r = _remote("nixos://deploy@web1:2222/x")
    assert r.nix_store_uri() == "ssh-ng://deploy@web1"
    sshopts = r.nix_sshopts().split()
    assert sshopts == r.command(["x"])[1:-4]  # everything but "-T -- host cmd"


def test_nix_store_uri_brackets_ipv6() -> None:
    assert _remote("nixos://root@[::1]:2222/x").nix_store_uri() == "ssh-ng://root@[::1]"
    assert _remote("[2001:db8::5]").nix_store_uri() == "ssh-ng://[2001:db8::5]"


def test_nix_sshopts_refuse_white_space() -> None:
    settings = SshSettings(control_dir=Path("/tmp/cm"), options=("ProxyCommand=nc %h 22",))
    with pytest.raises(UsageError):
        Remote(Destination.parse("web1"), settings).nix_sshopts()
