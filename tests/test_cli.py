"""The command line hands the app typed options: what each command line becomes, without a host.

app.run is replaced by one that keeps the command and returns an exit code of the test's
choosing, so these tests see what the CLI built and what the process's exit is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_flake import app, command_options
from deploy_flake.cli import deploy_flake
from deploy_flake.destination import Destination
from deploy_flake.models import BuildOn, BuildPlace, DeployOptions, Job, RebootPolicy, Timeouts


def handed_over(monkeypatch: pytest.MonkeyPatch, *args: str, code: int = 0) -> command_options.Command:
    """The command the CLI hands to app.run for this command line."""
    seen: list[command_options.Command] = []

    def run(command: command_options.Command) -> int:
        seen.append(command)
        return code

    monkeypatch.setattr(app, "run", run)
    result = CliRunner().invoke(deploy_flake, list(args))
    assert result.exit_code == code, result.output
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize(
    ("args", "job"),
    [
        (("alpha",), Job.DEPLOY),
        (("deploy", "alpha"), Job.DEPLOY),
        (("--dry-activate", "alpha"), Job.PLAN),
        (("plan", "alpha"), Job.PLAN),
        (("rollback", "alpha"), Job.ROLLBACK),
        (("status", "alpha"), Job.STATUS),
    ],
)
def test_the_command_lines_defaults_are_the_deploy_layers(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], job: Job
) -> None:
    """Every default of the command line is DeployOptions' own, for every command."""
    command = handed_over(monkeypatch, *args)
    assert command.job is job
    assert command.common.destinations == ("alpha",)
    assert app._deploy_options(command) == DeployOptions(flake_dir=Path("."), job=job)


def test_every_deploy_option_reaches_the_deploy_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    command = handed_over(
        monkeypatch,
        *("--flake", "/f", "-j", "3", "--no-sudo", "--test", "skip", "--build-on", "local"),
        *("--build-cmdline", "--option cores 2", "--copy-timeout", "1m", "--build-timeout", "2h"),
        *("--preflight-check", "skip", "--pre-activate-script", "bin/check"),
        *("--preflight-timeout", "11s", "--activation-timeout", "12s", "--health-timeout", "13s"),
        *("--settle-time", "0", "--confirm-timeout", "15s", "--boot-timeout", "16s"),
        *("--skip-check", "sshd", "--skip-check", "system-type", "--reboot", "if-needed"),
        *("--reboot-timeout", "17s", "--ask", "--canary", "1", "--max-failures", "2", "--all-or-nothing"),
        *("alpha", "nixos://beta/web"),
    )
    assert isinstance(command, command_options.DeployCommand)
    assert command.common.destinations == ("alpha", "nixos://beta/web")
    assert app._deploy_options(command) == DeployOptions(
        flake_dir=Path("/f"),
        preflight=False,
        pre_activate_script="bin/check",
        test=False,
        build_args=("--option", "cores", "2"),
        sudo=False,
        skip_checks=frozenset({"sshd", "system-type"}),
        timeouts=Timeouts(
            copy=60,
            build=7200,
            preflight=11,
            activation=12,
            health=13,
            settle=0,
            confirm=15,
            boot=16,
            reboot=17,
        ),
        jobs=3,
        job=Job.DEPLOY,
        ask=True,
        canary=1,
        max_failures=2,
        all_or_nothing=True,
        reboot=RebootPolicy.IF_NEEDED,
        build_on=BuildOn(BuildPlace.LOCAL),
    )


def test_rollback_and_status_take_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    rollback = handed_over(monkeypatch, "rollback", "--to", "7", "--reboot", "always", "--sudo", "alpha")
    assert isinstance(rollback, command_options.RollbackCommand) and rollback.to == 7
    options = app._deploy_options(rollback)
    assert (options.rollback_to, options.reboot, options.sudo) == (7, RebootPolicy.ALWAYS, True)
    status = handed_over(monkeypatch, "status", "--json", "--on", "@web", "--report", "/r.json")
    assert isinstance(status, command_options.StatusCommand) and status.as_json
    assert (status.common.selectors, status.common.report_path) == (("@web",), Path("/r.json"))
    builder = handed_over(monkeypatch, "plan", "--build-on", "root@builder", "alpha")
    assert app._deploy_options(builder).build_on == BuildOn(
        BuildPlace.HOST, Destination.parse("root@builder")
    )


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4, 130])
def test_the_apps_exit_code_is_the_processs(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    handed_over(monkeypatch, "status", "alpha", code=code)


def test_help_imports_no_deploy_machinery() -> None:
    """`--help` stays quick: the app (asyncio, rich, Nix code) is imported only when a command runs."""
    probe = (
        "import sys\n"
        "from deploy_flake.cli import main\n"
        "sys.argv = ['deploy-flake', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('asyncio', 'rich', 'deploy_flake.app', 'deploy_flake.nix') "
        "if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "[]"
    assert done.stdout.startswith("Usage: deploy-flake deploy [OPTIONS] DESTINATION...")
