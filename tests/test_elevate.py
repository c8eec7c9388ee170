"""--elevate=sudo|doas and the inventory's `elevate`: how root's commands are run where the login
user is not root, and what a host that lacks the chosen tool, or whose doas wants a password,
is told at connect, before anything changes. (On lab hosts: tests/test_elevate_lab.py.)"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_flake import app
from deploy_flake.cli.commands import deploy_flake
from deploy_flake.models import Job, Outcome, Stage
from deploy_flake.remote.destination import Destination
from deploy_flake.remote.elevate import Elevate
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


@pytest.mark.parametrize("password", [None, b"pw"])
def test_a_doas_that_wants_a_password_is_named_at_connect(
    monkeypatch: pytest.MonkeyPatch, password: bytes | None
) -> None:
    """doas reads a password only from a terminal: it is never sent, with or without one."""
    monkeypatch.setattr(
        "tests.test_flows.SshSettings", lambda **kw: SshSettings(**kw, sudo_password=password)
    )
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
    assert result.error is not None and result.error.startswith(
        "doas on web asks this user for a password, and doas reads it only from a terminal"
    )
    assert result.error.endswith("(doas: Authentication required); nothing was changed")
    assert fake.sent == ["connect", "facts", "true", "disconnect"]


def test_a_root_login_needs_no_elevation(monkeypatch: pytest.MonkeyPatch) -> None:
    table = [("connect", Reply()), ("facts", facts()), ("disconnect", Reply())]
    result, fake, _ = run_job(monkeypatch, table, job=Job.ROLLBACK, elevate=Elevate.DOAS)
    assert fake.sent == ["connect", "facts", "disconnect"]  # no `true` through doas
    assert "generation 1 is the oldest" in str(result.error)
