"""What a flake's inventory may do to ssh on this machine: only the allowed options, read
without building anything, and each host checked for duplicates with its own options."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_flake.destination import Destination
from deploy_flake.errors import UsageError
from deploy_flake.fleet.inventory import load_inventory, parse_inventory
from deploy_flake.remote.inventory_options import ALLOWED_OPTIONS
from deploy_flake.remote.ssh_config import check_distinct_destinations
from tests.lab import deploy_argv

needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")


def options_error(*options: str) -> str:
    with pytest.raises(UsageError) as e:
        parse_inventory({"web1": {"ssh_options": list(options)}}, origin="the flake at /f")
    return str(e.value)


# ---- which options an inventory may give
@pytest.mark.parametrize(
    "option",
    [
        "ProxyCommand=touch /tmp/owned",
        "proxycommand=touch /tmp/owned",  # ssh's keys are case-insensitive: so is the check
        "LocalCommand=touch /tmp/owned",
        "PermitLocalCommand=yes",
        "KnownHostsCommand=/bin/sh -c id",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=no",
        "ControlPath=/tmp/elsewhere",
        "Include=/tmp/more",
    ],
)
def test_an_option_that_could_run_code_or_weaken_checks_is_refused(option: str) -> None:
    key = option.split("=", 1)[0]
    message = options_error("HostName=10.0.0.5", option)
    assert message.startswith(f"inventory host 'web1': 'ssh_options': {key} is not allowed in an inventory")
    assert "allowed: HostName, Port, User, ProxyJump, IdentityFile" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("Port=0", "Port='0': the value must be a port from 1 to 65535"),
        ("HostName=web;id", "HostName='web;id': the value must be a host name or address"),
        ("User=root$(id)", "User='root$(id)': the value must be a user name"),
        ("ProxyJump=bastion -oProxyCommand=id", "ProxyJump='bastion -oProxyCommand=id': the value must be"),
        ("ProxyJump=a@b:70000", "ProxyJump='a@b:70000': the value must be"),
        ("IdentityFile=$(id)", "IdentityFile='$(id)': the value must be a file name"),
        ("ConnectTimeout=5s", "ConnectTimeout='5s': the value must be whole seconds"),
    ],
)
def test_an_allowed_option_with_a_bad_value_is_refused(option: str, message: str) -> None:
    assert message in options_error(option)


def test_the_allowed_options_are_taken_as_written() -> None:
    options = [
        "HostName=10.0.0.5",
        "hostname=db1.example.org",
        "Port=2222",
        "User=deploy",
        "ProxyJump=admin@bastion:2222,[2001:db8::1]:22,jump2",
        "ProxyJump=none",
        "IdentityFile=~/.ssh/id_fleet",
        "IdentitiesOnly=yes",
        "HostKeyAlias=db1",
        "ConnectTimeout=5",
        "ServerAliveInterval=10",
    ]
    host = parse_inventory({"web1": {"ssh_options": options}}, origin="the flake at /f")["web1"]
    assert host.ssh_options == tuple(options)
    assert ALLOWED_OPTIONS[:5] == ("HostName", "Port", "User", "ProxyJump", "IdentityFile")


# ---- the inventory read without building
def write_flake(directory: Path, outputs: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(f"{{ outputs = {{ self }}: {outputs}; }}\n")
    return directory


@needs_nix
def test_an_inventory_that_imports_from_a_derivation_builds_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "built"
    flake = write_flake(
        tmp_path / "ifd",
        f"""{{
          deployFlake.hosts = import (derivation {{
            name = "inventory"; system = "x86_64-linux"; builder = "/bin/sh";
            args = [ "-c" "echo built > {marker}; echo '{{ web1 = {{ }}; }}' > $out" ];
          }});
        }}""",
    )
    with pytest.raises(UsageError) as e:
        asyncio.run(load_inventory(flake))
    message = str(e.value)
    assert message.startswith(f"deployFlake.hosts of the flake at {flake} imports from a derivation"), message
    assert "allow-import-from-derivation" in message
    assert not marker.exists()


# ---- the same machine, with each host's own options (ssh -G, no host needed)
def dest(text: str) -> Destination:
    return Destination.parse(text)


def test_hosts_that_their_own_options_take_to_one_machine_are_refused() -> None:
    targets = [
        (dest("nixos://web1/web1"), ("HostName=10.0.0.5",)),
        (dest("nixos://web2/web2"), ("HostName=10.0.0.5",)),
    ]
    with pytest.raises(UsageError, match="'nixos://web1/web1' and 'nixos://web2/web2' are the same host"):
        check_distinct_destinations(targets, None)
    # the same through one jump host, to one address and port
    jumped = [
        (dest("nixos://a/a"), ("HostName=10.0.0.5", "ProxyJump=bastion")),
        (dest("nixos://b/b"), ("HostName=10.0.0.5", "ProxyJump=bastion")),
    ]
    with pytest.raises(UsageError, match="through the same ProxyJump"):
        check_distinct_destinations(jumped, None)


def test_hosts_that_differ_only_by_their_own_options_are_distinct() -> None:
    check_distinct_destinations(
        [
            (dest("nixos://shared/web1"), ("Port=2201",)),
            (dest("nixos://shared/web2"), ("Port=2202",)),
            (dest("nixos://shared/web3"), ("ProxyJump=bastion1",)),
            (dest("nixos://shared/web4"), ("ProxyJump=bastion2",)),
            (dest("nixos://shared/web5"), ("HostName=10.0.0.6",)),
        ],
        None,
    )


# ---- the command line: exit 2, one line, before anything runs
def run_status(flake: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        deploy_argv("status", "--on", "*", ssh_config=None, flake=flake),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@needs_nix
def test_status_refuses_an_inventory_that_would_run_a_command_here(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    flake = write_flake(
        tmp_path / "evil",
        f'{{ deployFlake.hosts.web1.ssh_options = [ "ProxyCommand=touch {marker}" ]; }}',
    )
    done = run_status(flake)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ProxyCommand is not allowed in an inventory" in lines[0], done.stderr
    assert not marker.exists()


@needs_nix
def test_two_inventory_hosts_that_differ_by_their_port_option_are_both_asked(tmp_path: Path) -> None:
    flake = write_flake(
        tmp_path / "ports",
        """{ deployFlake.hosts = {
             web1 = { destination = "nixos://127.0.0.1/web1"; ssh_options = [ "Port=1" ]; };
             web2 = { destination = "nixos://127.0.0.1/web2"; ssh_options = [ "Port=2" ]; };
           }; }""",
    )
    done = run_status(flake)
    assert "the same host" not in done.stderr, done.stderr
    assert done.returncode == 1, done  # both asked, neither answered (nothing listens there)
    assert done.stdout.count("127.0.0.1") >= 2, done.stdout
