"""The deploy-flake command line: parse, validate, hand over to the fleet, report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from deploy_flake import __version__
from deploy_flake.durations import parse_whole_seconds
from deploy_flake.errors import UsageError
from deploy_flake.models import (
    EXIT_USAGE,
    SANITY_CHECKS,
    Job,
    RebootPolicy,
)
from deploy_flake.output import messages

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
F = TypeVar("F", bound=Callable[..., Any])

EPILOG = """\b
Exit codes:
  0  every host is running its new configuration (confirmed, boot entry written)
  1  a host failed before anything was changed on it
  2  bad usage or input; nothing was done on any host
  3  a host was rolled back to its previous configuration
  4  a host's state is unknown (see the message for what to check)
  130 interrupted twice: stopped at once (the report says what is known)
The worst outcome among the hosts decides.
"""


def _seconds(ctx: click.Context, param: click.Parameter, value: str, minimum: int) -> int:
    try:
        return parse_whole_seconds(value, minimum=minimum)
    except UsageError as e:
        _fail(f"{param.opts[0]} {e}")


def _timeout(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A stage timeout: whole seconds, at least 1 (on the host, `timeout 0` means no limit)."""
    return _seconds(ctx, param, value, 1)


def _settle(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """The settle time: whole seconds, 0 for none."""
    return _seconds(ctx, param, value, 0)


def _relative_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (
        not value or value.startswith("/") or ".." in value.split("/") or any(c in value for c in "\n\0")
    ):
        raise click.BadParameter(f"{value!r} must be a path relative to the new system's top level")
    return value


_COMMON = [
    click.option(
        "--flake",
        "flake_dir",
        default=".",
        show_default=True,
        type=click.Path(path_type=Path),
        help="The flake's directory.",
    ),
    click.option(
        "--instrumentation",
        type=click.Choice(["tui", "json"]),
        default="tui",
        show_default=True,
        help="tui: live view on a terminal, plain lines otherwise. json: one JSON event per line.",
    ),
    click.option(
        "--jobs",
        "-j",
        type=click.IntRange(min=1),
        help="Hosts deployed at once.  [default: all, as far as the open-file limit allows]",
    ),
    click.option(
        "--ssh-config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="ssh config file for every ssh call (ssh -F), Nix's copying included.",
    ),
    click.option(
        "--ssh-option",
        "-o",
        "ssh_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="ssh option for every ssh call, Nix's copying included (repeatable).",
    ),
    click.option(
        "--sudo/--no-sudo",
        default=None,
        help="Run system commands through sudo (sudo -n; sudo -S where it needs the password "
        "given with --ask-sudo-password).  [default: when the login user is not root]",
    ),
    click.option(
        "--report",
        "report_path",
        type=click.Path(path_type=Path),
        help="Write a JSON report of every host to this file.",
    ),
]

_COMMON.append(
    click.option(
        "--log-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where each run keeps every host's whole output, a directory per run.  "
        "[default: $XDG_STATE_HOME/deploy-flake/runs]",
    )
)

_ACTIVATION = [
    click.option(
        "--ask-sudo-password",
        is_flag=True,
        help="Ask once, on the terminal, for the password of sudo on hosts where it needs one; "
        "it reaches them only on sudo's stdin.",
    ),
    click.option(
        "--sudo-password-fd",
        type=click.IntRange(min=0),
        metavar="FD",
        help="Read the sudo password from this open file descriptor (its first line), for automation.",
    ),
    click.option(
        "--preflight-check",
        type=click.Choice(["run", "skip"]),
        default="run",
        show_default=True,
        help="Refuse hosts whose running system is not healthy (systemctl is-system-running).",
    ),
    click.option(
        "--pre-activate-script",
        callback=_relative_path,
        metavar="RELATIVE_PATH",
        help="Program in the new system to run before activating it; non-zero stops the deploy. "
        "[default: pre-activate-safety-checks, when present]",
    ),
    click.option(
        "--preflight-timeout",
        callback=_timeout,
        default="5m",
        show_default=True,
        metavar="DURATION",
        help="How long the health check waits for a starting system; whole seconds, at least 1s.",
    ),
    click.option(
        "--activation-timeout",
        callback=_timeout,
        default="5m",
        show_default=True,
        metavar="DURATION",
        help="Longest switch-to-configuration test; longer is stopped and rolled back. "
        "Whole seconds, at least 1s.",
    ),
    click.option(
        "--health-timeout",
        callback=_timeout,
        default="60s",
        show_default=True,
        metavar="DURATION",
        help="Time for the system to finish starting after activating (is-system-running --wait); "
        "whole seconds, at least 1s.",
    ),
    click.option(
        "--settle-time",
        callback=_settle,
        default="5s",
        show_default=True,
        metavar="DURATION",
        help="How long the system must stay healthy after activating, before it is confirmed; "
        "whole seconds, 0 for none.",
    ),
    click.option(
        "--confirm-timeout",
        callback=_timeout,
        default="30s",
        show_default=True,
        metavar="DURATION",
        help="Time to confirm over a new SSH connection before the host rolls back by itself; "
        "whole seconds, at least 1s.",
    ),
    click.option(
        "--boot-timeout",
        callback=_timeout,
        default="5m",
        show_default=True,
        metavar="DURATION",
        help="Longest switch-to-configuration boot; whole seconds, at least 1s.",
    ),
    click.option(
        "--skip-check",
        "skip_checks",
        multiple=True,
        type=click.Choice(SANITY_CHECKS),
        help="Skip a sanity check of the new system (repeatable).",
    ),
]

_BUILD = [
    click.option(
        "--test",
        "test_mode",
        type=click.Choice(["run", "skip"]),
        default="run",
        show_default=True,
        help="run: activate with switch-to-configuration test and confirm before writing the boot "
        "entry. skip: only add the profile generation and boot entry (applies at next boot).",
    ),
    click.option(
        "--build-on",
        default="target",
        show_default=True,
        metavar="target|local|HOST",
        help="Where systems are built. target: each host builds its own. local: this machine, "
        "HOST: one builder host ([user@]host); both build each configuration once and copy its "
        "closure to the hosts (nix copy; the login user must be trusted there).",
    ),
    click.option("--build-cmdline", metavar="ARGS", help="Extra arguments for nix build."),
    click.option(
        "--copy-timeout",
        callback=_timeout,
        default="10m",
        show_default=True,
        metavar="DURATION",
        help="Time for one attempt at copying the flake (3 attempts); whole seconds, at least 1s.",
    ),
    click.option(
        "--build-timeout",
        callback=_timeout,
        default="1h",
        show_default=True,
        metavar="DURATION",
        help="Longest build on the host; whole seconds, at least 1s.",
    ),
]


_REBOOT = [
    click.option(
        "--reboot",
        type=click.Choice([str(p) for p in RebootPolicy]),
        default=str(RebootPolicy.NEVER),
        show_default=True,
        help="Reboot each host once its new system is committed: if-needed when the new kernel, "
        "initrd or kernel modules need it (or with --test=skip), always, or never (a note says "
        "when one is needed). The host must come back on the new system, healthy.",
    ),
    click.option(
        "--reboot-timeout",
        callback=_timeout,
        default="10m",
        show_default=True,
        metavar="DURATION",
        help="Time for a rebooted host to come back, booted and healthy; whole seconds, at least 1s.",
    ),
]


def _with(*groups: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for group in reversed(groups):
            for decorator in reversed(group):
                f = decorator(f)
        return f

    return apply


_DESTINATIONS = click.argument("destinations", nargs=-1, metavar="DESTINATION...")
_ON = click.option(
    "--on",
    "selectors",
    multiple=True,
    metavar="SELECTOR",
    help="Hosts from the flake's inventory (deployFlake.hosts): a name, a glob, or @TAG "
    "(repeatable, union; --on '*' for all).",
)


_IMPLICIT_DEPLOY = "deploy_flake.implicit_deploy"


class _DeployByDefault(click.Group):
    """`deploy-flake [OPTIONS] DESTINATION...` deploys, as it always did; subcommands beside it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = args[0] if args else "--help"
        if first in ("-h", "--help") or (first not in self.commands and first != "--version"):
            args = ["deploy", *args]
            ctx.meta[_IMPLICIT_DEPLOY] = True
        return super().parse_args(ctx, args)


@click.group(cls=_DeployByDefault, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="deploy-flake")
def main_group() -> None:
    """Deploy a flake's NixOS configurations to hosts over SSH."""


@main_group.command(context_settings=CONTEXT, epilog=EPILOG)
@_DESTINATIONS
@_ON
@_with(_COMMON, _BUILD, _ACTIVATION, _REBOOT)
@click.version_option(__version__, prog_name="deploy-flake")  # as before the subcommands
@click.option(
    "--dry-activate",
    is_flag=True,
    help="Build and show what would change, like `deploy-flake plan`; change nothing.",
)
@click.option(
    "--ask",
    is_flag=True,
    help="Show every host's plan, then ask once (on stdin) before activating any.",
)
@click.option(
    "--canary",
    type=click.IntRange(min=1),
    metavar="N",
    help="Deploy the first N hosts (in the order given) first; the rest only if all of them were activated.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=1),
    metavar="K",
    help="Start no new host once K hosts did not end activated (the rest are skipped).",
)
@click.option(
    "--all-or-nothing",
    is_flag=True,
    help="If any host is not activated, roll back the hosts this run activated "
    "(through the rollback transaction), so the fleet stays on one version.",
)
def deploy(
    dry_activate: bool,
    ask: bool,
    canary: int | None,
    max_failures: int | None,
    all_or_nothing: bool,
    **kw: Any,
) -> None:
    """Deploy a flake's NixOS configurations to hosts over SSH.

    Each DESTINATION is HOST, USER@HOST, or nixos://[USER@]HOST[:PORT]/[CONFIGURATION]
    (an IPv6 address in brackets: nixos://[::1]:2222/web). The configuration
    defaults to the host name the host reports. Every host builds its own system,
    is checked, activates it with switch-to-configuration test, and must be
    confirmed over a new SSH connection before the boot entry is written;
    otherwise it returns to its previous system by itself.

    Other commands: status, plan, rollback (deploy-flake COMMAND --help). A host
    named like a command is deployed with `deploy-flake deploy HOST`.
    """
    commands = [d for d in kw["destinations"] if d in main_group.commands]
    if commands and click.get_current_context().meta.get(_IMPLICIT_DEPLOY):
        _fail(
            f"{commands[0]!r} is a command: put it first (deploy-flake {commands[0]} [OPTIONS] ...); "
            f"to deploy a host called {commands[0]}, say `deploy-flake deploy {commands[0]}`"
        )
    if dry_activate and kw["reboot"] != RebootPolicy.NEVER:
        _fail("--dry-activate changes nothing, so it cannot --reboot")
    rollout = {"ask": ask, "canary": canary, "max_failures": max_failures, "all_or_nothing": all_or_nothing}
    _execute(Job.PLAN if dry_activate else Job.DEPLOY, {**kw, **rollout})


@main_group.command(context_settings=CONTEXT, epilog=EPILOG)
@_DESTINATIONS
@_ON
@_with(_COMMON, _BUILD, _ACTIVATION)
def plan(**kw: Any) -> None:
    """Copy and build as a deploy would, and show per host what activating would change.

    Shows the closure difference against the running system, the units that would be
    stopped, restarted, reloaded and started (switch-to-configuration dry-activate),
    whether a reboot would be needed, and the sanity checks' verdict. Nothing is
    activated, no profile generation or boot entry is written. Takes every option a
    deploy takes.
    """
    _execute(Job.PLAN, kw)


@main_group.command(context_settings=CONTEXT, epilog=EPILOG)
@_DESTINATIONS
@_ON
@click.option(
    "--to",
    "rollback_to",
    type=click.IntRange(min=1),
    metavar="GENERATION",
    help="The system profile's generation to return to.  [default: the one before the current]",
)
@_with(_COMMON, _ACTIVATION, _REBOOT)
def rollback(**kw: Any) -> None:
    """Return hosts to an earlier generation of their system profile.

    Through the same transaction as a deploy: switch-to-configuration test, health
    check, settle time, confirmation over a new SSH login, and only then the system
    profile and the boot entry. A rollback that fails is itself rolled back.
    """
    _execute(Job.ROLLBACK, kw)


@main_group.command(context_settings=CONTEXT)
@_DESTINATIONS
@_ON
@_with(_COMMON)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def status(as_json: bool, **kw: Any) -> None:
    """Show what every host runs: health, failed units, current, booted and profile
    systems with the generation, the last deploy, and whether a reboot is needed.

    An unreachable host is a row that says so. Exit 0 when every host answered.
    """
    _execute(Job.STATUS, kw, status_json=as_json)


def _execute(job: Job, kw: dict[str, Any], *, status_json: bool = False) -> None:
    # imported here: `--help` and bad usage stay quick (no asyncio, rich or Nix code)
    from deploy_flake.execute import execute

    execute(job, kw, status_json=status_json)


def _fail(message: str) -> NoReturn:
    messages.error(message)
    sys.exit(EXIT_USAGE)


def main() -> None:
    main_group(prog_name="deploy-flake")


deploy_flake = main_group  # the entry point, under its old name
