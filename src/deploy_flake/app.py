"""A command's run, once its command line is parsed: validate every input before any host is
touched, run the job on every host, report; the exit code. Imported only when a command runs.

The command line (deploy_flake.cli) hands over one of the commands below: what the user
said, typed. The deploy layer reads DeployOptions, made from it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from deploy_flake.command_options import (
    Command,
    CommonOptions,
    DeployCommand,
    GcCommand,
    PlanCommand,
    RollbackCommand,
    StatusCommand,
    _Group,
)
from deploy_flake.destination import Destination
from deploy_flake.errors import DeployError, UsageError
from deploy_flake.fleet.inventory import load_inventory, select
from deploy_flake.fleet.run import InterruptedTwice, Target, deploy_all
from deploy_flake.models import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    DeployOptions,
    HostResult,
    Job,
    Outcome,
    RebootPolicy,
    exit_code,
)
from deploy_flake.output import messages
from deploy_flake.output.display import (
    JsonEvents,
    PlainEvents,
    QuietEvents,
    plain_gc,
    plain_plan,
    plain_status,
    plain_summary,
    status_document,
)
from deploy_flake.output.events import Events, Steady
from deploy_flake.output.report import check_report_path, write_report_or_say
from deploy_flake.output.run_log import RunLog, default_log_dir, new_run_dir
from deploy_flake.output.stream import STDOUT
from deploy_flake.remote.ssh import check_ssh_option
from deploy_flake.remote.ssh_config import check_distinct_destinations
from deploy_flake.remote.sudo_password import sudo_password

# ------------------------------------------------------------- validate, run, report


@dataclass(frozen=True)
class _Checked:
    """A command whose input was all found good: what its run needs."""

    job: Job
    common: CommonOptions
    options: DeployOptions
    targets: list[Target]
    run_dir: Path | None  # None: status keeps no log
    password: bytes | None
    status_json: bool


def run(command: Command) -> int:
    """Validates everything before any host is touched, runs the job, reports; the exit code."""
    try:
        checked = _validate(command)
    except (UsageError, ValueError) as e:
        messages.error(str(e))
        return EXIT_USAGE

    tty = sys.stdout.isatty()
    if tty:  # rich only for a terminal: its import is a good part of a short run's start-up
        from deploy_flake.output import display_live

    instrumentation = checked.common.instrumentation
    display: Events
    live = None
    if checked.job is Job.STATUS and instrumentation != "json":  # its table comes at the end
        display = QuietEvents()
    elif instrumentation == "json":
        display = JsonEvents()
    elif tty and not checked.options.ask:  # --ask: plain lines, so the question stays readable
        display = live = display_live.LiveEvents([t.dest.label for t in checked.targets])
    else:
        display = PlainEvents()
    log = None if checked.run_dir is None else RunLog(checked.run_dir, display)
    # Nothing the display or the log does can end a host's deploy; and whatever ends the
    # run, every host's result is known as far as it was told.
    events = Steady(log or display)
    dests = [t.dest for t in checked.targets]
    try:
        with live or contextlib.nullcontext():
            results = _run(checked, events)
    except InterruptedTwice as e:  # a DeployError, but no usage error: first
        write_report_or_say(checked.common.report_path, e.results)
        if checked.run_dir is not None:
            messages.note(f"every host's output so far is in {checked.run_dir}")
        messages.note(
            "interrupted twice: hosts that were activating return to their "
            "previous system by themselves once the confirmation timeout passes"
        )
        return EXIT_INTERRUPTED
    except DeployError as e:  # before any host was started (the flake could not be read)
        messages.error(str(e))
        write_report_or_say(checked.common.report_path, events.as_far_as_known(dests, str(e)))
        return EXIT_USAGE
    except Exception as e:  # a bug in the deployer: one line, never a traceback
        why = f"internal error: {type(e).__name__}: {e}"
        messages.note(why)
        results = events.as_far_as_known(dests, f"the deployer stopped: {why}")
        return max(_report(checked, results, tty, events), EXIT_FAILED)
    finally:
        if log is not None:
            log.close()
    return _report(checked, results, tty, events)


def _validate(command: Command) -> _Checked:
    """Every input checked before any host is touched; UsageError (or ValueError, from a
    --build-cmdline that shlex cannot split) says what to fix."""
    common, job = command.common, command.job
    if (
        isinstance(command, DeployCommand)
        and command.dry_activate
        and command.reboot.reboot != RebootPolicy.NEVER
    ):
        raise UsageError("--dry-activate changes nothing, so it cannot --reboot")
    if (
        isinstance(command, DeployCommand | PlanCommand)
        and not command.build.test
        and command.activation.specialisation
    ):
        raise UsageError(
            "--specialisation picks what is activated now, and --test=skip activates nothing: the boot "
            "entry is always the system itself"
        )
    if isinstance(command, DeployCommand) and command.dry_activate and command.rollout.ask:
        raise UsageError(
            "--ask asks before activating and --dry-activate activates nothing: "
            "drop --ask (the plans are shown either way)"
        )
    if isinstance(command, GcCommand) and command.gc.keep is None and command.gc.older_than is None:
        raise UsageError(
            "gc needs --keep N or --older-than DURATION (or both): which old generations to remove"
        )
    for opt in common.ssh_options:
        check_ssh_option(opt)
    if common.ssh_config is not None and not common.ssh_config.is_file():
        raise UsageError(f"--ssh-config {common.ssh_config}: no such file")
    if (job in (Job.DEPLOY, Job.PLAN) or common.selectors) and not (common.flake_dir / "flake.nix").is_file():
        raise UsageError(f"no flake.nix in {common.flake_dir}: pass the flake's directory with --flake DIR")
    if common.report_path is not None:
        check_report_path(common.report_path)
    options = _deploy_options(command)
    targets = _targets(common.destinations, common.selectors, options)
    dests = [t.dest for t in targets]
    _check_no_repeats(dests)
    # each with the options it is reached with, as fleet.run gives them: its own first
    check_distinct_destinations(
        [(t.dest, (*t.ssh_options, *common.ssh_options)) for t in targets], common.ssh_config
    )
    run_dir = None if job is Job.STATUS else new_run_dir(common.log_dir or default_log_dir())
    if isinstance(command, StatusCommand):
        password = None
    elif isinstance(command, GcCommand):
        password = sudo_password(command.gc.ask_sudo_password, command.gc.sudo_password_fd)
    else:
        password = sudo_password(command.activation.ask_sudo_password, command.activation.sudo_password_fd)
    status_json = isinstance(command, StatusCommand) and command.as_json
    return _Checked(job, common, options, targets, run_dir, password, status_json)


def _deploy_options(command: Command) -> DeployOptions:
    """What the deploy layer reads. An option a command does not take keeps DeployOptions'
    default, which is the command line's."""
    common = command.common
    options = DeployOptions(
        flake_dir=common.flake_dir,
        sudo=common.sudo,
        elevate=common.elevate,
        jobs=common.jobs,
        job=command.job,
    )
    groups: tuple[_Group, ...]
    match command:
        case DeployCommand():
            groups = (command.build, command.activation, command.reboot, command.rollout)
        case PlanCommand():
            groups = (command.build, command.activation)
        case RollbackCommand():
            groups = (command.activation, command.reboot)
            options = replace(options, rollback_to=command.to)
        case StatusCommand():
            groups = ()
        case GcCommand():
            groups = (command.gc,)
    for group in groups:
        options = group.applied_to(options)
    return options


def _report(checked: _Checked, results: list[HostResult], tty: bool, events: Steady | None = None) -> int:
    """The report file, the table or summary, the notes; the exit code. Output that cannot
    be written any more (output/stream.py) changes none of it."""
    if tty:
        from deploy_flake.output import display_live  # already imported by run()
    report_error = write_report_or_say(checked.common.report_path, results)
    instrumentation = checked.common.instrumentation
    if checked.job is Job.STATUS and (checked.status_json or instrumentation != "json"):
        if checked.status_json:
            STDOUT.print(json.dumps(status_document(results), indent=2))
        elif tty:
            display_live.print_table(display_live.status_table(results))
        else:
            STDOUT.print(plain_status(results))
    elif instrumentation != "json":
        if checked.job is Job.PLAN:
            STDOUT.print(plain_plan(results))
        if checked.job is Job.GC:
            STDOUT.print(plain_gc(results, checked.options.gc.dry_run))
        if tty:
            display_live.print_table(display_live.summary_table(results))
        else:
            STDOUT.print(plain_summary(results))
    if STDOUT.lost is not None:
        messages.note(f"stdout could not be written any more ({STDOUT.lost}): printing to it stopped there")
    if events is not None and events.failure is not None:
        messages.note(f"showing the hosts' output failed ({events.failure}); the hosts went on")
    if checked.run_dir is not None:
        messages.note(f"every host's whole output is in {checked.run_dir}")
    skipped = [r.destination for r in results if r.outcome is Outcome.SKIPPED]
    if skipped:
        messages.note(f"{len(skipped)} host(s) skipped, never started: {', '.join(skipped)}")
    if report_error is not None:
        messages.error(f"{report_error} (the deploy itself finished: its exit code tells how)")
    return exit_code([r.outcome for r in results])


def _targets(
    destinations: tuple[str, ...], selectors: tuple[str, ...], options: DeployOptions
) -> list[Target]:
    """The hosts of the run: the inventory's selected ones, then those on the command line."""
    targets: list[Target] = []
    if selectors:
        hosts = asyncio.run(load_inventory(options.flake_dir))
        for h in select(hosts, selectors):
            targets.append(Target(h.destination, h.deploy_options(options), h.ssh_options))
    targets += [Target(Destination.parse(d)) for d in destinations]
    if not targets:
        raise UsageError(
            "no hosts: give them as DESTINATION... or select them from the flake's inventory "
            "with --on (--on '*' for all)"
        )
    return targets


def _check_no_repeats(dests: list[Destination]) -> None:
    seen: set[str] = set()
    for d in dests:
        if d.raw in seen:
            raise UsageError(f"the destination {d.raw!r} is given twice")
        seen.add(d.raw)


def _run(checked: _Checked, events: Events) -> list[HostResult]:
    return asyncio.run(
        deploy_all(
            checked.targets,
            checked.options,
            ssh_config=checked.common.ssh_config,
            ssh_options=checked.common.ssh_options,
            events=events,
            sudo_password=checked.password,
        )
    )
