"""The commands: deploy (also of a bare `deploy-flake HOST...`), plan, rollback, status, gc.

Each takes its options as the groups' typed values (cli.options: common, build, activation,
...), makes the app's command of them (command_options.DeployCommand, ...) and hands it to app.run, whose
exit code ends the process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import click

from deploy_flake.cli import options
from deploy_flake.cli.options import CONTEXT, EPILOG
from deploy_flake.models import EXIT_USAGE
from deploy_flake.output import messages

if TYPE_CHECKING:
    from deploy_flake import command_options

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
@options.VERSION
def main_group() -> None:
    """Deploy a flake's NixOS configurations to hosts over SSH."""


@main_group.command(context_settings=CONTEXT, epilog=EPILOG)
@options.HOSTS_BUILT_AND_ACTIVATED
@options.REBOOT
@options.VERSION  # as before the subcommands
@options.DRY_ACTIVATE
@options.ROLLOUT
def deploy(
    *,
    common: command_options.CommonOptions,
    build: command_options.BuildOptions,
    activation: command_options.ActivationOptions,
    reboot: command_options.RebootOptions,
    dry_activate: bool,
    rollout: command_options.RolloutOptions,
) -> None:
    """Deploy a flake's NixOS configurations to hosts over SSH.

    Each DESTINATION is HOST, USER@HOST, or nixos://[USER@]HOST[:PORT]/[CONFIGURATION]
    (an IPv6 address in brackets: nixos://[::1]:2222/web). The configuration
    defaults to the host name the host reports. Every host builds its own system,
    is checked, activates it with switch-to-configuration test, and must be
    confirmed over a new SSH connection before the boot entry is written;
    otherwise it returns to its previous system by itself.

    Other commands: status, plan, rollback, gc (deploy-flake COMMAND --help). A host
    named like a command is deployed with `deploy-flake deploy HOST`.
    """
    ctx = click.get_current_context()
    commands = [d for d in common.destinations if d in main_group.commands]
    if commands and ctx.meta.get(_IMPLICIT_DEPLOY):
        messages.error(
            f"{commands[0]!r} is a command: put it first (deploy-flake {commands[0]} [OPTIONS] ...); "
            f"to deploy a host called {commands[0]}, say `deploy-flake deploy {commands[0]}`"
        )
        ctx.exit(EXIT_USAGE)
    from deploy_flake import command_options  # here: see _run

    _run(command_options.DeployCommand(common, build, activation, reboot, rollout, dry_activate))


@main_group.command(context_settings=CONTEXT, epilog=EPILOG)
@options.HOSTS_BUILT_AND_ACTIVATED
def plan(
    *,
    common: command_options.CommonOptions,
    build: command_options.BuildOptions,
    activation: command_options.ActivationOptions,
) -> None:
    """Copy and build as a deploy would, and show per host what activating would change.

    Shows the closure difference against the running system, the units that would be
    stopped, restarted, reloaded and started (switch-to-configuration dry-activate),
    whether a reboot would be needed, and the sanity checks' verdict. Nothing is
    activated, no profile generation or boot entry is written. Takes every option a
    deploy takes but --reboot and the rollout options; `deploy-flake --dry-activate`
    takes --canary, --max-failures and --all-or-nothing, and plans in the deploy's waves.
    """
    from deploy_flake import command_options  # here: see _run

    _run(command_options.PlanCommand(common, build, activation))


@main_group.command(context_settings=CONTEXT, epilog=EPILOG)
@options.DESTINATIONS
@options.ON
@options.TO
@options.COMMON
@options.ACTIVATION
@options.REBOOT
def rollback(
    *,
    rollback_to: int | None,
    common: command_options.CommonOptions,
    activation: command_options.ActivationOptions,
    reboot: command_options.RebootOptions,
) -> None:
    """Return hosts to an earlier generation of their system profile.

    Through the same transaction as a deploy: switch-to-configuration test, health
    check, settle time, confirmation over a new SSH login, and only then the system
    profile and the boot entry. A rollback that fails is itself rolled back.
    """
    from deploy_flake import command_options  # here: see _run

    _run(command_options.RollbackCommand(common, activation, reboot, to=rollback_to))


@main_group.command(context_settings=CONTEXT)
@options.DESTINATIONS
@options.ON
@options.COMMON
@options.JSON
def status(*, common: command_options.CommonOptions, as_json: bool) -> None:
    """Show what every host runs: health, failed units, current, booted and profile
    systems with the generation, the last deploy, and whether a reboot is needed.

    An unreachable host is a row that says so. Exit 0 when every host answered.
    """
    from deploy_flake import command_options  # here: see _run

    _run(command_options.StatusCommand(common, as_json=as_json))


@main_group.command(context_settings=CONTEXT)
@options.DESTINATIONS
@options.ON
@options.GC
@options.COMMON
def gc(*, gc: command_options.GcOptions, common: command_options.CommonOptions) -> None:
    """Remove old generations of the hosts' system profiles, then prune /boot.

    Keeps the newest --keep N, or those newer than --older-than (with both: a generation
    goes only when neither keeps it), and always the profile's, the previous one (a
    rollback's), the running, the booted and the last deployed generation. Then writes
    the boot entries again, so the boot loader removes the old ones and their kernels;
    --collect-garbage then collects the store's garbage. Under the deploy lock: never
    while a deploy runs. Prints per host what it removed and the space freed.
    """
    from deploy_flake import command_options  # here: see _run

    _run(command_options.GcCommand(common, gc))


def _run(command: command_options.Command) -> NoReturn:
    """The app validates, runs and reports; its exit code is the process's. The app is
    imported only when a command runs: `--help` and bad usage stay quick (no asyncio, rich or
    Nix code)."""
    from deploy_flake import app

    click.get_current_context().exit(app.run(command))


def main() -> None:
    main_group(prog_name="deploy-flake")


deploy_flake = main_group  # the entry point, under its old name
