"""Pure logic: durations, exit codes, ssh command lines, agent protocol."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deploy_flake.durations import parse_duration
from deploy_flake.errors import UsageError
from deploy_flake.models import Outcome, exit_code
from deploy_flake.remote.destination import Destination
from deploy_flake.remote.ssh import Remote, SshSettings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2.5s", 2.5), ("45", 45), ("500ms", 0.5), ("10 min", 600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-5s", "5s5", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_exit_code_is_the_worst_outcome() -> None:
    assert exit_code([Outcome.ACTIVATED, Outcome.ACTIVATED]) == 0
    assert exit_code([Outcome.ACTIVATED, Outcome.FAILED]) == 1
    assert exit_code([Outcome.FAILED, Outcome.ROLLED_BACK]) == 3
    assert exit_code([Outcome.ROLLED_BACK, Outcome.UNKNOWN, Outcome.ACTIVATED]) == 4


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


def test_default_jobs_follows_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from deploy_flake.fleet import run as fleet

    limits = {"soft": 1024, "hard": 1024}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    assert fleet.default_jobs(4) == 4
    assert fleet.default_jobs(500) == (1024 - 64) // 8  # 120 at a time
    limits["hard"] = 65536  # the soft limit is raised first
    assert fleet.default_jobs(500) == 500
    assert limits["soft"] == 65536
