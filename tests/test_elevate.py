"""--elevate=sudo|doas and the inventory's `elevate`: how root's commands are run where the login
user is not root, and what a host that lacks the chosen tool, or whose doas wants a password,
is told at connect, before anything changes. (On lab hosts: tests/test_elevate_lab.py.)"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_flake import app, process
from deploy_flake.cli.commands import deploy_flake
from deploy_flake.destination import Destination
from deploy_flake.models import Elevate, Job, Outcome, Stage
from deploy_flake.remote.elevate import SUDO_STARTED, elevated, password_dialogue
from deploy_flake.remote.ssh import Remote, SshSettings
from tests.fake_remote import Reply
from tests.test_cli import handed_over
from tests.test_flows import facts, run_job

SETTINGS = SshSettings(control_dir=Path("/tmp/cm"))


def test_doas_runs_root_commands_without_ever_asking() -> None:
    remote = Remote(Destination.parse("deploy@web1"), SETTINGS, sudo=True, elevate=Elevate.DOAS)
    assert shlex.split(remote.command(["echo", "a b"], root=True)[-1]) == ["doas", "-n", "--", "echo", "a b"]
    # a command that does not need root is not elevated, and with_sudo keeps the elevation
    assert shlex.split(remote.command(["id"])[-1]) == ["id"]
    assert remote.with_sudo(True).elevate is Elevate.DOAS


def test_sudo_stays_the_default() -> None:
    remote = Remote(Destination.parse("deploy@web1"), SETTINGS, sudo=True)
    assert shlex.split(remote.command(["true"], root=True)[-1]) == ["sudo", "-n", "--", "true"]


def test_elevate_reaches_the_deploy_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (("deploy", "--elevate=doas", "a"), ("status", "--elevate", "doas", "a")):
        command = handed_over(monkeypatch, *args)
        assert app._deploy_options(command).elevate is Elevate.DOAS


def test_an_unknown_elevation_is_a_usage_error() -> None:
    result = CliRunner().invoke(deploy_flake, ["--elevate=su", "alpha"])
    assert result.exit_code == 2 and "'su' is not one of 'sudo', 'doas'" in result.output, result.output


NON_ROOT = [("connect", Reply()), ("facts", facts(uid=1000))]


def test_a_host_without_doas_fails_at_connect_and_says_it_has_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *NON_ROOT,
            ("true", Reply(stderr="bash: line 1: doas: command not found", returncode=127)),
            ("sh", Reply("sudo\n")),
            ("disconnect", Reply()),
        ],
        elevate=Elevate.DOAS,
        job=Job.ROLLBACK,
    )
    assert result.outcome is Outcome.FAILED and result.stage is Stage.CONNECT, result
    assert result.error == (
        "doas is not installed for this user on web (not on the login's PATH): it has sudo: use "
        '--elevate=sudo (or the inventory\'s elevate = "sudo"); nothing was changed'
    )
    assert fake.sent == ["connect", "facts", "true", "sh", "disconnect"]


def test_a_host_with_neither_sudo_nor_doas_fails_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    result, _, _ = run_job(
        monkeypatch,
        [
            *NON_ROOT,
            ("true", Reply(stderr="sh: 1: sudo: not found", returncode=127)),
            ("sh", Reply("")),
            ("disconnect", Reply()),
        ],
        job=Job.ROLLBACK,
    )
    assert result.outcome is Outcome.FAILED and result.stage is Stage.CONNECT, result
    assert result.error is not None and result.error.startswith(
        "sudo is not installed for this user on web (not on the login's PATH): it has neither sudo nor "
        "doas: install one (security.sudo.enable or security.sudo-rs.enable) or log in as root"
    )


def _with_password(monkeypatch: pytest.MonkeyPatch, password: bytes | None) -> None:
    settings = SshSettings(control_dir=Path("/nonexistent"), sudo_password=password)
    monkeypatch.setattr("tests.test_flows.SshSettings", lambda **_: settings)


def test_a_doas_that_wants_a_password_without_one_fails_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_password(monkeypatch, None)
    result, fake, _ = run_job(
        monkeypatch,
        [
            *NON_ROOT,
            ("true", Reply(stderr="doas: Authentication required", returncode=1)),
            ("disconnect", Reply()),
        ],
        elevate=Elevate.DOAS,
        job=Job.ROLLBACK,
    )
    assert result.outcome is Outcome.FAILED and result.stage is Stage.CONNECT, result
    assert result.error == (
        "doas does not work without a password for this user on web (doas: Authentication required): "
        "allow a nopass rule (doas.conf), log in as root, or give the password with --ask-sudo-password"
    )
    assert fake.sent == ["connect", "facts", "true", "disconnect"]


def test_a_wrong_doas_password_fails_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_password(monkeypatch, b"wrong")
    result, _, _ = run_job(
        monkeypatch,
        [
            *NON_ROOT,
            ("true", Reply(stderr="doas: Authentication required", returncode=1)),
            ("true", Reply(stderr="doas\n Authentication failed\n", returncode=1)),
            ("disconnect", Reply()),
        ],
        elevate=Elevate.DOAS,
        job=Job.ROLLBACK,
    )
    assert result.outcome is Outcome.FAILED and result.stage is Stage.CONNECT, result
    assert result.error == "doas on web did not accept the password: Authentication failed"


def test_a_root_login_needs_no_elevation(monkeypatch: pytest.MonkeyPatch) -> None:
    table = [("connect", Reply()), ("facts", facts()), ("disconnect", Reply())]
    result, fake, _ = run_job(monkeypatch, table, job=Job.ROLLBACK, elevate=Elevate.DOAS)
    assert fake.sent == ["connect", "facts", "disconnect"]  # no `true` through doas
    assert "generation 1 is the oldest" in str(result.error)


# ---- doas with a password: host/doas_password.sh run here, with a doas that, like OpenBSD's,
# reads the password from its terminal only (echo off, then its prompt without a newline)
_FAKE_DOAS = """#!/bin/sh
mode=$(cat "$(dirname "$0")/mode")
[ "$1" = -- ] && shift
[ "$mode" = denied ] && { echo 'doas: Operation not permitted' >&2; exit 1; }
if [ "$mode" = ask ]; then
  [ -t 0 ] && [ -t 1 ] || { echo 'doas: no terminal' >&2; exit 1; }
  stty -echo </dev/tty
  printf 'doas (deploy@web1) password: ' >/dev/tty
  IFS= read -r pw </dev/tty
  stty echo </dev/tty
  printf '\\n' >/dev/tty
  [ "$pw" = secret ] || { echo 'doas: Authentication failed' >&2; exit 1; }
fi
exec "$@"
"""


def _through_fake_doas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, password: bytes, data: bytes | None
) -> process.Completed:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "doas").write_text(_FAKE_DOAS)
    (bin_dir / "doas").chmod(0o755)
    (bin_dir / "mode").write_text(mode)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    command = ["sh", "-c", 'cat; echo "the command runs" >&2; exit 7', "sh"]
    shown: list[str] = []
    done = asyncio.run(
        process.run(
            elevated(command, Elevate.DOAS, password=True),
            dialogue=password_dialogue(Elevate.DOAS, password, data),
            timeout=30,
            on_stderr=shown.append,
        )
    )
    assert "secret" not in done.stderr + done.stdout + "".join(shown)
    assert SUDO_STARTED not in done.stderr
    assert not list(Path("/tmp").glob("deploy-flake-doas.*")), "its FIFOs were left behind"
    return done


def test_the_doas_password_goes_to_its_terminal_and_the_input_to_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _through_fake_doas(tmp_path, monkeypatch, "ask", b"secret", b"the agent script\n")
    assert done.returncode == 7 and done.stdout == "the agent script\n", done
    assert done.stderr.splitlines()[-1] == "the command runs"


def test_a_doas_that_does_not_ask_never_gets_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _through_fake_doas(tmp_path, monkeypatch, "nopass", b"secret", b"the agent script\n")
    assert done.returncode == 7 and done.stdout == "the agent script\n", done
    assert done.stderr == "the command runs\n"


@pytest.mark.parametrize(("mode", "said"), [("ask", "Authentication failed"), ("denied", "not permitted")])
def test_a_wrong_doas_password_or_a_denial_ends_without_running_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, said: str
) -> None:
    done = _through_fake_doas(tmp_path, monkeypatch, mode, b"wrong", b"the agent script\n")
    assert done.returncode == 1 and done.stdout == "", done
    assert said in done.stderr and "the command runs" not in done.stderr


def test_doas_with_a_password_runs_in_a_terminal_of_its_own() -> None:
    argv = elevated(["cat", "a b"], Elevate.DOAS, password=True)
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "cat 'a b'"]
    assert SUDO_STARTED in argv[2] and "script -qec" in argv[2]
