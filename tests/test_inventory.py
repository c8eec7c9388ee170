"""The flake's inventory (deployFlake.hosts): parsing, --on selection, and the real nix eval."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_flake import nix, process
from deploy_flake.errors import UsageError
from deploy_flake.fleet.inventory import InventoryHost, load_inventory, parse_inventory, select
from deploy_flake.models import DeployOptions, Elevate, Timeouts
from tests.lab import FIXTURE_FLAKE


def parse(hosts: object) -> dict[str, InventoryHost]:
    return parse_inventory(hosts, origin="the flake at /f")


def parse_one(spec: object, name: str = "web1") -> InventoryHost:
    return parse({name: spec})[name]


def error(hosts: object) -> str:
    with pytest.raises(UsageError) as e:
        parse(hosts)
    return str(e.value)


# ---- parsing deployFlake.hosts: every field, its defaults, and each error's message
def test_full_host() -> None:
    h = parse_one(
        {
            "destination": "nixos://admin@web1.example.org/web",
            "tags": ["web", "eu", "web"],
            "ssh_options": ["ConnectTimeout=5", "IdentityFile=/k"],
            "sudo": False,
            "elevate": "doas",
            "timeouts": {"build": "2h", "settle": 0, "confirm": 45, "copy": "1m30s"},
            "skip_checks": ["system-type", "sshd"],
        }
    )
    assert h.name == "web1"
    d = h.destination
    assert (d.host, d.user, d.port, d.config) == ("web1.example.org", "admin", None, "web")
    assert d.raw == "nixos://admin@web1.example.org/web"
    assert h.tags == {"web", "eu"}
    assert h.ssh_options == ("ConnectTimeout=5", "IdentityFile=/k")
    assert h.sudo is False
    assert h.elevate is Elevate.DOAS
    assert h.timeouts == {"build": 7200, "settle": 0, "confirm": 45, "copy": 90}
    assert h.skip_checks == {"system-type", "sshd"}


def test_defaults_without_destination() -> None:
    # no destination: the name is the host and the configuration
    h = parse_one({})
    assert (h.destination.host, h.destination.user, h.destination.port) == ("web1", None, None)
    assert h.destination.config == "web1"
    assert h.destination.raw == "nixos://web1/web1"
    assert (h.tags, h.ssh_options, h.sudo, dict(h.timeouts), h.skip_checks) == (
        frozenset(),
        (),
        None,
        {},
        frozenset(),
    )


@pytest.mark.parametrize(
    ("spec", "raw", "user", "port", "config"),
    [
        # a destination without a configuration: the inventory name is the configuration
        ({"destination": "web1.example.org"}, "nixos://web1.example.org/web1", None, None, "web1"),
        ({"destination": "nixos://10.0.0.7/"}, "nixos://10.0.0.7/web1", None, None, "web1"),
        # user and port override the destination's
        (
            {"destination": "nixos://admin@h:2222/web", "user": "deploy", "port": 22},
            "nixos://deploy@h:22/web",
            "deploy",
            22,
            "web",
        ),
        ({"destination": "root@h", "port": 2200}, "nixos://root@h:2200/web1", "root", 2200, "web1"),
        (
            {"destination": "nixos://[2001:db8::5]/x", "user": "u"},
            "nixos://u@[2001:db8::5]/x",
            "u",
            None,
            "x",
        ),
    ],
)
def test_destination(
    spec: dict[str, object], raw: str, user: str | None, port: int | None, config: str
) -> None:
    d = parse_one(spec).destination
    assert (d.raw, d.user, d.port, d.config) == (raw, user, port, config)


def test_hosts_are_sorted_by_name() -> None:
    assert list(parse({"c": {}, "a": {}, "b": {}})) == ["a", "b", "c"]
    assert parse({}) == {}


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "the flake at /f: deployFlake.hosts must be an attribute set of hosts, not a list"),
        ("x", "the flake at /f: deployFlake.hosts must be an attribute set of hosts, not the string 'x'"),
        ({"web.1": {}}, "inventory host 'web.1': not a valid host name (letters, digits, '_' and '-' only"),
        ({"-x": {}}, "inventory host '-x': not a valid host name"),
        ({"": {}}, "inventory host '': not a valid host name"),
        ({"web1": "nixos://web1"}, "inventory host 'web1': must be an attribute set, not the string"),
        ({"web1": {"tag": ["a"]}}, "inventory host 'web1': unknown key 'tag' (known: destination, tags,"),
        ({"web1": {"sudo": None}}, "inventory host 'web1': 'sudo' is null; leave it out instead"),
        (
            {"web1": {"destination": 3}},
            "inventory host 'web1': 'destination' must be a string, not the number 3",
        ),
        (
            {"web1": {"destination": "http://web1/x"}},
            "inventory host 'web1': 'destination': invalid destination 'http://web1/x': only the nixos://",
        ),
        (
            {"web1": {"destination": "nixos://web1/a.b"}},
            "inventory host 'web1': 'destination': in destination 'nixos://web1/a.b', the configuration",
        ),
        ({"web1": {"user": 0}}, "inventory host 'web1': 'user' must be a string, not the number 0"),
        ({"web1": {"user": "a b"}}, "inventory host 'web1': 'user': 'a b' is not a valid user name"),
        ({"web1": {"user": ""}}, "inventory host 'web1': 'user': '' is not a valid user name"),
        (
            {"web1": {"port": "22"}},
            "inventory host 'web1': 'port' must be a number from 1 to 65535, not '22'",
        ),
        ({"web1": {"port": 0}}, "inventory host 'web1': 'port' must be a number from 1 to 65535, not 0"),
        ({"web1": {"port": 65536}}, "inventory host 'web1': 'port' must be a number from 1 to 65535"),
        (
            {"web1": {"port": True}},
            "inventory host 'web1': 'port' must be a number from 1 to 65535, not True",
        ),
        ({"web1": {"tags": "web"}}, "inventory host 'web1': 'tags' must be a list of strings"),
        ({"web1": {"tags": ["web", 1]}}, "inventory host 'web1': 'tags' must be a list of strings"),
        (
            {"web1": {"tags": ["we b"]}},
            "inventory host 'web1': 'tags': 'we b' is not a valid tag "
            "(letters, digits, '_', '-' and '.' only)",
        ),
        ({"web1": {"tags": ["@web"]}}, "inventory host 'web1': 'tags': '@web' is not a valid tag"),
        ({"web1": {"tags": [""]}}, "inventory host 'web1': 'tags': '' is not a valid tag"),
        ({"web1": {"ssh_options": "A=b"}}, "inventory host 'web1': 'ssh_options' must be a list of strings"),
        (
            {"web1": {"ssh_options": ["-oProxyCommand=x"]}},
            "inventory host 'web1': 'ssh_options': '-oProxyCommand=x' is not KEY=VALUE, "
            "like ConnectTimeout=5",
        ),
        (
            {"web1": {"ssh_options": ["Port"]}},
            "inventory host 'web1': 'ssh_options': 'Port' is not KEY=VALUE",
        ),
        (
            {"web1": {"sudo": "yes"}},
            "inventory host 'web1': 'sudo' must be true or false, not the string 'yes'",
        ),
        (
            {"web1": {"elevate": "su"}},
            "inventory host 'web1': 'elevate': 'su' is not an elevation: sudo or doas",
        ),
        (
            {"web1": {"elevate": True}},
            "inventory host 'web1': 'elevate' must be \"sudo\" or \"doas\", not",
        ),
        (
            {"web1": {"timeouts": ["5m"]}},
            "inventory host 'web1': 'timeouts' must be an attribute set of durations, not a list",
        ),
        (
            {"web1": {"timeouts": {"connect": "5s"}}},
            "inventory host 'web1': 'timeouts': unknown stage 'connect' (known: copy, build, preflight, "
            "activation, health, settle, confirm, boot, reboot)",
        ),
        (
            {"web1": {"timeouts": {"build": 1.5}}},
            "inventory host 'web1': 'timeouts.build' must be a duration like \"90s\" or whole seconds, "
            "not the number 1.5",
        ),
        (
            {"web1": {"timeouts": {"build": True}}},
            "inventory host 'web1': 'timeouts.build' must be a duration",
        ),
        (
            {"web1": {"timeouts": {"build": "1500ms"}}},
            "inventory host 'web1': 'timeouts.build': '1500ms' is not a whole number of seconds",
        ),
        (
            {"web1": {"timeouts": {"health": 0}}},
            "inventory host 'web1': 'timeouts.health': '0' is less than 1s: use whole seconds, at least 1s",
        ),
        (
            {"web1": {"timeouts": {"settle": "soon"}}},
            "inventory host 'web1': 'timeouts.settle': 'soon' is not a duration",
        ),
        (
            {"web1": {"timeouts": {"boot": -5}}},
            "inventory host 'web1': 'timeouts.boot': '-5' is not a duration",
        ),
        (
            {"web1": {"skip_checks": ["sshd", "firewall"]}},
            "inventory host 'web1': 'skip_checks': unknown check 'firewall' (known: sshd, "
            "switch-to-configuration, system-type)",
        ),
        ({"web1": {"skip_checks": "sshd"}}, "inventory host 'web1': 'skip_checks' must be a list of strings"),
    ],
)
def test_parse_errors(hosts: object, message: str) -> None:
    text = error(hosts)
    assert text.startswith(message), text
    assert "\n" not in text


def test_settle_may_be_zero_and_others_one() -> None:
    h = parse_one({"timeouts": {"settle": "0s", "health": "1s"}})
    assert h.timeouts == {"settle": 0, "health": 1}


def test_deploy_options_with_a_host_settings() -> None:
    base = DeployOptions(flake_dir=Path("."), sudo=None, skip_checks=frozenset({"sshd"}))
    h = parse_one(
        {
            "sudo": True,
            "elevate": "doas",
            "timeouts": {"build": "2h", "settle": 0},
            "skip_checks": ["system-type"],
        }
    )
    o = h.deploy_options(base)
    assert o.sudo is True and o.elevate is Elevate.DOAS
    assert o.skip_checks == {"sshd", "system-type"}
    assert o.timeouts == Timeouts(build=7200, settle=0)
    # nothing set: the run's options as they are
    assert parse_one({}).deploy_options(base) == base


# ---- --on selection: names, globs and @tags, and what a selection that matches nothing says
HOSTS = parse(
    {
        "web1": {"tags": ["web", "eu"]},
        "web2": {"tags": ["web", "us"]},
        "db1": {"tags": ["db", "eu"]},
        "db2": {"tags": ["db", "us", "primary"]},
        "lonely": {},
    }
)


def names(selectors: list[str]) -> list[str]:
    return [h.name for h in select(HOSTS, selectors)]


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["web1"], ["web1"]),
        (["*"], ["db1", "db2", "lonely", "web1", "web2"]),
        (["web*"], ["web1", "web2"]),
        (["?b1"], ["db1"]),
        (["db[12]"], ["db1", "db2"]),
        (["@web"], ["web1", "web2"]),
        (["@eu"], ["db1", "web1"]),
        (["@p*"], ["db2"]),
        (["@*"], ["db1", "db2", "web1", "web2"]),
        # a union, sorted by name, each host once
        (["web2", "@db", "web*", "db1"], ["db1", "db2", "web1", "web2"]),
        (["lonely", "@us"], ["db2", "lonely", "web2"]),
    ],
)
def test_select(selectors: list[str], expected: list[str]) -> None:
    assert names(selectors) == expected


def test_select_returns_the_hosts() -> None:
    assert select(HOSTS, ["web1"]) == [HOSTS["web1"]]


@pytest.mark.parametrize(
    ("selectors", "message"),
    [
        ([], "select hosts with --on (use --on '*' for all)"),
        (["web3"], "--on 'web3': no host in the inventory matches; hosts: db1, db2, lonely, web1, web2"),
        (["web1", "x*"], "--on 'x*': no host in the inventory matches; hosts: db1, db2, lonely, web1, web2"),
        (["Web1"], "--on 'Web1': no host in the inventory matches"),  # names are case-sensitive
        (["@mail"], "--on '@mail': no host has the tag 'mail'; tags: db, eu, primary, us, web"),
        (["@m*"], "--on '@m*': no host has a tag that matches 'm*'; tags: db, eu, primary, us, web"),
        (["@we"], "--on '@we': no host has the tag 'we'"),  # a tag is matched whole
        ([""], "--on '': give a host name, a glob like 'web*', or @TAG"),
        (["@"], "--on '@': give a host name, a glob like 'web*', or @TAG"),
        ([" web1"], "--on ' web1': give a host name"),
    ],
)
def test_select_errors(selectors: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        select(HOSTS, selectors)
    assert str(e.value) == message or str(e.value).startswith(message), str(e.value)


def test_select_error_messages_stay_short() -> None:
    many = parse({f"h{i:03d}": {} for i in range(50)})
    with pytest.raises(UsageError, match=r"hosts: h000, h001, .*, h019, \.\.\. \(30 more\)$"):
        select(many, ["web"])
    untagged = parse({"a": {}})
    with pytest.raises(UsageError, match=r"^--on '@web': no host has the tag 'web'; no host has any tags$"):
        select(untagged, ["@web"])
    with pytest.raises(UsageError, match=r"^the inventory has no hosts \(deployFlake.hosts is empty\)$"):
        select({}, ["*"])


# ---- loading the inventory from a flake with this machine's nix eval
needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")


def write_flake(directory: Path, outputs: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(f"{{ outputs = {{ self }}: {outputs}; }}\n")
    return directory


def load_error(directory: Path) -> str:
    with pytest.raises(UsageError) as e:
        asyncio.run(load_inventory(directory))
    return str(e.value)


@needs_nix
def test_load_inventory(tmp_path: Path) -> None:
    flake = write_flake(
        tmp_path / "infra",
        """{
          deployFlake.hosts = {
            web1 = { destination = "nixos://admin@web1.example.org/web"; tags = [ "web" "eu" ]; };
            db1 = { tags = [ "db" ]; port = 2222; timeouts.build = "2h"; sudo = true; };
          };
          nixosConfigurations = throw "the inventory must not evaluate the configurations";
        }""",
    )
    hosts = asyncio.run(load_inventory(flake))
    assert list(hosts) == ["db1", "web1"]
    assert hosts["web1"].destination.raw == "nixos://admin@web1.example.org/web"
    assert hosts["db1"].destination.raw == "nixos://db1:2222/db1"
    assert hosts["db1"].timeouts == {"build": 7200}
    assert [h.name for h in select(hosts, ["@eu"])] == ["web1"]


@needs_nix
def test_flake_without_inventory(tmp_path: Path) -> None:
    flake = write_flake(tmp_path / "plain", "{ nixosConfigurations = { }; }")
    message = load_error(flake)
    assert message.startswith(f"the flake at {flake} has no deployFlake.hosts output: flake 'path:"), message
    assert "does not provide attribute" in message
    assert "\n" not in message
    # deployFlake without hosts: the same
    other = write_flake(tmp_path / "other", "{ deployFlake.nodes = { }; }")
    assert load_error(other).startswith(f"the flake at {other} has no deployFlake.hosts output")


@needs_nix
def test_inventory_evaluation_errors(tmp_path: Path) -> None:
    throws = write_flake(tmp_path / "throws", '{ deployFlake.hosts.web1 = throw "no inventory today"; }')
    message = load_error(throws)
    assert message.startswith(f"cannot evaluate deployFlake.hosts of the flake at {throws}: "), message
    assert "no inventory today" in message
    undefined = write_flake(tmp_path / "undefined", "{ deployFlake.hosts.web1 = { tags = oops; }; }")
    message = load_error(undefined)
    assert "undefined variable 'oops'" in message, message
    assert "flake.nix:1:" in message and "/nix/store/" not in message, message
    assert "has no deployFlake.hosts" not in message
    # what the flake says is checked like any inventory
    bad = write_flake(tmp_path / "bad", '{ deployFlake.hosts.web1 = { tags = "web"; }; }')
    assert load_error(bad) == "inventory host 'web1': 'tags' must be a list of strings"
    # no flake at all
    assert load_error(tmp_path / "nothing").startswith(f"no flake.nix in {tmp_path / 'nothing'}")


@needs_nix
def test_eval_inventory_runs_one_nix_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flake = write_flake(tmp_path / "f", "{ deployFlake.hosts = { }; }")
    calls: list[tuple[str, ...]] = []
    real_run = process.run

    async def spy(argv: list[str], *, timeout: float | None = None) -> process.Completed:
        calls.append(tuple(argv))
        assert timeout == nix.INVENTORY_EVAL_TIMEOUT_S
        return await real_run(argv, timeout=timeout)

    monkeypatch.setattr(process, "run", spy)
    assert asyncio.run(nix.eval_inventory(flake)) == {}
    assert calls == [
        (
            "nix",
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--option",
            "allow-import-from-derivation",
            "false",
            "--json",
            f"path:{flake.resolve()}#deployFlake.hosts",
        )
    ]


@needs_nix
def test_lab_fixture_inventory() -> None:
    """The lab's fixture flake describes the lab hosts (evaluated locally, no lab host needed)."""
    hosts = asyncio.run(load_inventory(FIXTURE_FLAKE))
    assert list(hosts) == ["alpha", "beta", "delta", "gamma"]
    assert [h.destination.raw for h in hosts.values()] == [
        "nixos://alpha/alpha",
        "nixos://beta/beta",
        "nixos://deploy@delta/delta",
        "nixos://gamma/gamma",
    ]
    assert hosts["delta"].sudo is True
    assert [h.name for h in select(hosts, ["@web"])] == ["alpha", "beta"]
    assert [h.name for h in select(hosts, ["@db", "@eu"])] == ["alpha", "delta", "gamma"]
    # each host's configuration exists in the same flake
    done = subprocess.run(
        [
            "nix",
            *nix.NIX_FEATURES,
            "eval",
            "--json",
            f"path:{FIXTURE_FLAKE.resolve()}#nixosConfigurations",
            "--apply",
            "builtins.attrNames",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    configs = set(json.loads(done.stdout))
    assert {h.destination.config for h in hosts.values()} <= configs


STORE = "/nix/store/" + "a" * 32 + "-source"


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        # newer Nix: a trace of what was being evaluated, the real error last
        (
            "error:\n       … while evaluating the attribute 'web1'\n"
            f"         at {STORE}/flake.nix:1:43:\n\n            1| x\n"
            "       error: no inventory today\n",
            "cannot evaluate deployFlake.hosts of the flake at /f: no inventory today",
        ),
        (
            f"error: undefined variable 'oops'\n       at {STORE}/hosts.nix:3:5:\n            2| {{\n",
            "cannot evaluate deployFlake.hosts of the flake at /f: "
            "undefined variable 'oops' (at hosts.nix:3:5)",
        ),
        (
            "\x1b[31;1merror:\x1b[0m flake 'path:/f' does not provide attribute "
            "'packages.x86_64-linux.deployFlake.hosts', 'legacyPackages.x86_64-linux.deployFlake.hosts' "
            "or 'deployFlake.hosts'\n",
            "the flake at /f has no deployFlake.hosts output: flake 'path:/f' does not provide attribute",
        ),
        (
            "warning: something\nnix: killed\n",
            "cannot evaluate deployFlake.hosts of the flake at /f: nix: killed",
        ),
        ("", "cannot evaluate deployFlake.hosts of the flake at /f: nix eval failed"),
    ],
)
def test_inventory_failure_messages(stderr: str, message: str) -> None:
    assert nix._inventory_failure(stderr, Path("/f")).startswith(message)
