"""Bad input is refused up front: exit 2, one `deploy-flake: error:` line, no host touched.

Every refusal here happens before the first ssh connection (the duplicate-host check
runs `ssh -G`, which connects nowhere), so no lab host needs to run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_flake import process
from deploy_flake.destination import Destination, SshTarget, check_distinct_hosts
from deploy_flake.durations import parse_duration, parse_whole_seconds
from deploy_flake.errors import UsageError
from deploy_flake.models import HostResult, Outcome
from deploy_flake.output.report import ReportError, check_report_path, write_report
from deploy_flake.remote.ssh import config_command
from deploy_flake.remote.ssh_config import check_distinct_destinations
from tests.lab import CLIENT_KEY, FIXTURE_FLAKE, HOSTS_DIR, KNOWN_HOSTS, LAB_POOL, SSH_CONFIG, deploy_argv

TIMEOUT_OPTIONS = (
    "--copy-timeout",
    "--build-timeout",
    "--preflight-timeout",
    "--activation-timeout",
    "--health-timeout",
    "--confirm-timeout",
    "--boot-timeout",
)


def run_cli(
    *args: str, ssh_config: Path | None = None, flake: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """deploy-flake as a user runs it (python -m deploy_flake)."""
    argv = deploy_argv(*args, ssh_config=ssh_config, flake=flake or FIXTURE_FLAKE)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def assert_refused(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout (no host output, no summary), one error line, no traceback."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("deploy-flake: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- durations: what parses, and timeouts that must be whole seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("2.5s", 2.5),
        ("45", 45),
        ("500ms", 0.5),
        ("10 min", 600),
        ("30d", 2592000),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-5s", "5s5", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("30", 30),
        ("1s", 1),
        ("1000ms", 1),
        ("1.0s", 1),
        ("10 min", 600),
    ],
)
def test_whole_seconds(text: str, seconds: int) -> None:
    assert parse_whole_seconds(text, minimum=1) == seconds


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("500ms", "less than 1s"),
        ("999ms", "less than 1s"),
        ("0", "less than 1s"),
        ("0s", "less than 1s"),
        ("0.5", "less than 1s"),
        ("1.5s", "not a whole number of seconds"),
        ("1500ms", "not a whole number of seconds"),
        ("2.5", "not a whole number of seconds"),
        ("1m0.5s", "not a whole number of seconds"),
        ("abc", "not a duration"),
        ("", "not a duration"),
        ("-5s", "not a duration"),
    ],
)
def test_timeouts_refuse_fractions_and_zero(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_whole_seconds(text, minimum=1)
    assert problem in str(e.value) and repr(text) in str(e.value) and "whole seconds" in str(e.value)


def test_settle_time_may_be_zero_but_whole() -> None:
    assert parse_whole_seconds("0", minimum=0) == 0
    assert parse_whole_seconds("0s", minimum=0) == 0
    with pytest.raises(UsageError, match="not a whole number of seconds"):
        parse_whole_seconds("1.5s", minimum=0)


@pytest.mark.parametrize("option", TIMEOUT_OPTIONS)
@pytest.mark.parametrize("value", ["500ms", "0"])
def test_cli_refuses_timeouts_under_a_second(option: str, value: str) -> None:
    line = assert_refused(run_cli(f"{option}={value}", "alpha"), option, repr(value), "at least 1s")
    assert line == f"deploy-flake: error: {option} {value!r} is less than 1s: use whole seconds, at least 1s"


@pytest.mark.parametrize("option", [*TIMEOUT_OPTIONS, "--settle-time"])
@pytest.mark.parametrize("value", ["1.5s", "1500ms"])
def test_cli_refuses_fractions_of_seconds(option: str, value: str) -> None:
    assert_refused(run_cli(option, value, "alpha"), option, repr(value), "use whole seconds")


def test_cli_refuses_a_bad_duration() -> None:
    assert_refused(
        run_cli("--confirm-timeout", "soon", "alpha"), "--confirm-timeout 'soon' is not a duration"
    )


def test_cli_accepts_whole_durations_and_zero_settle_time(tmp_path: Path) -> None:
    # Past the durations, the run stops at the next check: there is no flake in tmp_path.
    done = run_cli(
        "--activation-timeout=90s",
        "--build-timeout=1h30m",
        "--copy-timeout=5m",
        "--health-timeout",
        "30",
        "--confirm-timeout=1000ms",
        "--settle-time=0",
        "alpha",
        flake=tmp_path,
    )
    assert_refused(done, f"no flake.nix in {tmp_path}")


# ---- --report: its path checked before anything runs, the report written atomically


def _result() -> HostResult:
    return HostResult(destination="alpha", host="alpha", config="alpha", outcome=Outcome.ACTIVATED)


def test_report_path_in_a_writable_directory(tmp_path: Path) -> None:
    check_report_path(tmp_path / "r.json")
    (tmp_path / "old.json").write_text("{}")
    check_report_path(tmp_path / "old.json")  # replaced at the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # the probe file is gone


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing/r.json", "does not exist"),
        ("a-file/r.json", "is not a directory"),
        ("a-dir", "it is a directory"),
        ("", "it is a directory"),
    ],
)
def test_report_path_refused(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(UsageError, match=problem):
        check_report_path(tmp_path / name)


def test_report_path_must_be_a_regular_file() -> None:
    # Renaming over /dev/null would replace the device node.
    with pytest.raises(UsageError, match="not a regular file"):
        check_report_path(Path("/dev/null"))


def test_report_path_is_tried_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only mount: os.access says yes to root, only creating a file tells."""

    def read_only(*args: object, **kw: object) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(UsageError) as e:
        check_report_path(tmp_path / "r.json")
    assert (
        str(e.value)
        == f"--report {tmp_path / 'r.json'}: cannot create a file in {tmp_path}: Read-only file system"
    )


def test_write_report_is_atomic_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    write_report(path, [_result()])
    assert json.loads(path.read_text())["hosts"][0]["outcome"] == "activated"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_report_raises_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ReportError) as e:
        write_report(tmp_path / "gone" / "r.json", [_result()])
    assert (
        str(e.value) == f"cannot write the report {tmp_path / 'gone' / 'r.json'}: No such file or directory"
    )

    def fail(self: Path, target: Path) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(ReportError, match="No space left on device"):
        write_report(tmp_path / "r.json", [_result()])
    assert list(tmp_path.iterdir()) == []  # the temporary file was removed


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        (
            "/nonexistent-dir/r.json",
            "--report /nonexistent-dir/r.json: the directory /nonexistent-dir does not exist",
        ),
        ("/etc/hostname/r.json", "--report /etc/hostname/r.json: /etc/hostname is not a directory"),
        ("/tmp", "--report /tmp: it is a directory"),
        ("/dev/null", "--report /dev/null: it exists and is not a regular file"),
        # procfs: os.access says writable to root, but no file can be created there
        (
            "/proc/deploy-flake-report.json",
            "--report /proc/deploy-flake-report.json: cannot create a file in /proc",
        ),
    ],
)
def test_cli_refuses_an_unwritable_report(report: str, problem: str) -> None:
    assert_refused(run_cli("--report", report, "alpha"), problem)


# ---- the same machine named twice is refused: ssh -G tells which destinations reach one
# machine (the same address, port and proxy), whatever the names and users


def _lab_block(name: str) -> str:
    """The block the lab writes for a host (lab/lib/common.sh write_ssh_config, nspawn.sh)."""
    netns = f"{os.environ.get('LAB_NETNS_PREFIX', 'lab')}{LAB_POOL}-{name}"
    return (
        f"Host {name}\n  HostName 127.0.0.1\n  User root\n  IdentityFile {CLIENT_KEY}\n  IdentitiesOnly yes\n"
        f"  BatchMode yes\n  StrictHostKeyChecking yes\n  UserKnownHostsFile {KNOWN_HOSTS}\n"
        f"  GlobalKnownHostsFile /dev/null\n  HostKeyAlias {name}\n  LogLevel ERROR\n"
        "  KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n"
        f"  ProxyCommand ip netns exec {netns} socat - TCP:127.0.0.1:22\n"
    )


@pytest.fixture(params=["lab", "copy"])
def lab_ssh_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The lab's ssh config (when the lab has written it), and a copy of its blocks that
    always exists. Every lab host is 127.0.0.1 port 22, each behind its own ProxyCommand."""
    if request.param == "lab":
        if not (HOSTS_DIR / "alpha" / "ssh_config").is_file():
            pytest.skip(f"the lab has not written {SSH_CONFIG} for alpha")
        yield SSH_CONFIG
    else:
        path = tmp_path / "ssh_config"
        path.write_text("".join(_lab_block(h) for h in ("alpha", "beta", "gamma", "delta")))
        yield path


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("alpha", "nixos://alpha/alpha"), "'alpha' and 'nixos://alpha/alpha' are the same host"),
        (("root@alpha", "beta", "alpha"), "'root@alpha' and 'alpha' are the same host"),
        (
            ("nixos://alpha/good", "nixos://root@alpha:22/bad"),
            "'nixos://alpha/good' and 'nixos://root@alpha:22/bad'",
        ),
    ],
)
def test_cli_refuses_the_same_host_twice(lab_ssh_config: Path, args: tuple[str, ...], names: str) -> None:
    line = assert_refused(run_cli(*args, ssh_config=lab_ssh_config), names)
    assert line.endswith(
        "ssh connects to root@127.0.0.1 port 22 (through the same ProxyCommand) for both; "
        "give each host only once"
    )


def test_cli_refuses_the_same_host_with_two_users(lab_ssh_config: Path) -> None:
    line = assert_refused(run_cli("root@alpha", "nixos://deploy@alpha/x", ssh_config=lab_ssh_config))
    assert line == (
        "deploy-flake: error: 'root@alpha' and 'nixos://deploy@alpha/x' are the same host, with different "
        "users: ssh connects to 127.0.0.1 port 22 (through the same ProxyCommand) for both, as root and as "
        "deploy; a host takes one deploy at a time, so give it only once"
    )


def test_cli_refuses_the_same_destination_twice() -> None:
    assert_refused(run_cli("alpha", "beta", "alpha"), "the destination 'alpha' is given twice")


def test_cli_refuses_an_ssh_option_ssh_does_not_know(lab_ssh_config: Path) -> None:
    assert_refused(
        run_cli("-o", "NoSuchOption=1", "alpha", "beta", ssh_config=lab_ssh_config),
        "ssh cannot read its configuration for 'alpha'",
        "Bad configuration option: nosuchoption",
    )


def test_lab_hosts_behind_their_own_proxy_are_distinct(lab_ssh_config: Path) -> None:
    """Same HostName and port, different ProxyCommand: different machines (real ssh -G)."""
    dests = [(Destination.parse(d), ()) for d in ("alpha", "beta", "nixos://deploy@gamma/x", "delta")]
    check_distinct_destinations(dests, lab_ssh_config)
    with pytest.raises(UsageError, match="'alpha' and 'nixos://alpha:22/y' are the same host"):
        check_distinct_destinations([*dests, (Destination.parse("nixos://alpha:22/y"), ())], lab_ssh_config)


def test_the_port_makes_another_host(lab_ssh_config: Path) -> None:
    dests = [(Destination.parse(d), ()) for d in ("nixos://alpha:22/x", "nixos://alpha:2222/x")]
    check_distinct_destinations(dests, lab_ssh_config)


def test_a_single_destination_runs_no_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ssh(*args: object, **kw: object) -> None:
        raise AssertionError("ssh -G ran for a single destination")

    monkeypatch.setattr(process, "run", no_ssh)
    check_distinct_destinations([(Destination.parse("alpha"), ())], None)


def test_ssh_g_command_has_the_options_of_every_ssh_command() -> None:
    dest = Destination.parse("nixos://deploy@[::1]:2222/web")
    argv = config_command(dest, config_file=Path("/etc/lab.cfg"), options=("IdentityFile=/k",))
    assert argv[:5] == ["ssh", "-G", "-T", "-F", "/etc/lab.cfg"]
    assert argv[-2:] == ["--", "::1"]
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "deploy"
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert opts[0] == "IdentityFile=/k" and "BatchMode=yes" in opts
    assert not any(o.startswith("Control") for o in opts)


def _target(raw: str, text: str) -> SshTarget:
    return SshTarget.from_ssh_config(Destination.parse(raw), text)


def test_ssh_g_output_is_read() -> None:
    t = _target("a", "user root\nhostname 10.0.0.1\nport 22\nproxyusefdpass no\nproxyjump bastion\n")
    assert (t.hostname, t.port, t.user, t.proxy) == ("10.0.0.1", 22, "root", "ProxyJump bastion")
    assert _target("a", "user u\nhostname h\nport 2222\n").proxy == ""
    with pytest.raises(UsageError, match="ssh -G printed no hostname for 'a'"):
        _target("a", "user u\nport 22\n")


def test_which_destinations_are_the_same_machine() -> None:
    def check(*targets: SshTarget) -> None:
        check_distinct_hosts(targets)

    direct = "hostname web.example.com\nport 22\n"
    # different proxies, ports or host names: different machines
    check(_target("a", f"user root\n{direct}"), _target("b", f"user root\n{direct}proxyjump j1\n"))
    check(
        _target("a", f"user root\n{direct}proxyjump j1\n"), _target("b", f"user root\n{direct}proxyjump j2\n")
    )
    check(
        _target("a", f"user root\n{direct}"), _target("b", "user root\nhostname web.example.com\nport 2222\n")
    )
    # %n names the alias: the same ProxyCommand line reaches different machines
    via_alias = "user root\nhostname localhost\nport 22\nproxycommand virsh console %n\n"
    check(_target("vm1", via_alias), _target("vm2", via_alias))
    # same host name (in any case), port and proxy: the same machine, whatever the user
    with pytest.raises(UsageError, match="'a' and 'b' are the same host: ssh connects to root@web"):
        check(
            _target("a", f"user root\n{direct}"),
            _target("b", "user root\nhostname WEB.example.com\nport 22\n"),
        )
    with pytest.raises(UsageError, match=r"with different users: .* as root and as deploy"):
        check(_target("a", f"user root\n{direct}"), _target("b", f"user deploy\n{direct}"))
    bastion = "proxycommand ssh -W %h:%p bastion\n"
    with pytest.raises(UsageError, match=r"\(through the same ProxyCommand\)"):
        check(_target("a", f"user root\n{direct}{bastion}"), _target("b", f"user root\n{direct}{bastion}"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "gc needs --keep N or --older-than DURATION (or both)"),
        (("--keep", "0"), "Invalid value for '--keep': 0 is not in the range x>=1"),
        (("--older-than", "0.5s"), "--older-than '0.5s' is less than 1s"),
        (("--older-than", "soon"), "--older-than 'soon' is not a duration"),
    ],
)
def test_gc_without_a_measure_or_with_an_odd_one_is_refused(args: tuple[str, ...], message: str) -> None:
    """Nothing is removed on any host: the command stops before it reaches one (exit 2)."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy_flake", "gc", *args, "web1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
