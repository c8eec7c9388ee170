"""A command's run, once its command line parsed: validate every input before any host is
touched, run the job on every host, report. Imported only when a command runs."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from deploy_flake.errors import DeployError, UsageError
from deploy_flake.fleet.inventory import load_inventory, select
from deploy_flake.fleet.run import InterruptedTwice, Target, deploy_all
from deploy_flake.models import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    BuildOn,
    DeployOptions,
    HostResult,
    Job,
    Outcome,
    RebootPolicy,
    Timeouts,
    exit_code,
)
from deploy_flake.nix import build_args
from deploy_flake.output import messages
from deploy_flake.output.display import (
    JsonEvents,
    PlainEvents,
    QuietEvents,
    plain_plan,
    plain_status,
    plain_summary,
    status_document,
)
from deploy_flake.output.events import Events
from deploy_flake.output.report import ReportError, check_report_path, write_report
from deploy_flake.output.run_log import RunLog, default_log_dir, new_run_dir
from deploy_flake.remote.destination import Destination
from deploy_flake.remote.ssh import check_ssh_option
from deploy_flake.remote.ssh_config import check_distinct_destinations
from deploy_flake.remote.sudo_password import sudo_password


def execute(job: Job, kw: dict[str, Any], *, status_json: bool = False) -> None:
    """Validates everything before any host is touched, runs the job, reports."""
    flake_dir: Path = kw["flake_dir"]
    ssh_config: Path | None = kw["ssh_config"]
    ssh_options: tuple[str, ...] = kw["ssh_options"]
    report_path: Path | None = kw["report_path"]
    instrumentation: str = kw["instrumentation"]
    try:
        for opt in ssh_options:
            check_ssh_option(opt)
        if ssh_config is not None and not ssh_config.is_file():
            raise UsageError(f"--ssh-config {ssh_config}: no such file")
        if (job in (Job.DEPLOY, Job.PLAN) or kw["selectors"]) and not (flake_dir / "flake.nix").is_file():
            raise UsageError(f"no flake.nix in {flake_dir}: pass the flake's directory with --flake DIR")
        if report_path is not None:
            check_report_path(report_path)
        options = _options(job, kw)
        targets = _targets(kw["destinations"], kw["selectors"], options)
        dests = [t.dest for t in targets]
        _check_no_repeats(dests)
        check_distinct_destinations(dests, ssh_config, ssh_options)
        run_dir = None if job is Job.STATUS else new_run_dir(kw["log_dir"] or default_log_dir())
        password = sudo_password(kw.get("ask_sudo_password", False), kw.get("sudo_password_fd"))
    except (UsageError, ValueError) as e:
        _fail(str(e))

    tty = sys.stdout.isatty()
    if tty:  # rich only for a terminal: its import is a good part of a short run's start-up
        from deploy_flake.output import display_live

    def logged(events: Events) -> Events:
        return events if run_dir is None else RunLog(run_dir, events)

    try:
        if job is Job.STATUS and instrumentation != "json":  # its table comes at the end
            results = _run(targets, options, ssh_config, ssh_options, QuietEvents(), password)
        elif instrumentation == "json":
            results = _run(targets, options, ssh_config, ssh_options, logged(JsonEvents()), password)
        elif tty and not options.ask:  # --ask: plain lines, so the question stays readable
            with display_live.LiveEvents([d.label for d in dests]) as live:
                results = _run(targets, options, ssh_config, ssh_options, logged(live), password)
        else:
            results = _run(targets, options, ssh_config, ssh_options, logged(PlainEvents()), password)
    except DeployError as e:
        _fail(str(e))
    except InterruptedTwice as e:
        _write_report(report_path, e.results)
        if run_dir is not None:
            click.echo(f"deploy-flake: every host's output so far is in {run_dir}", err=True)
        click.echo(
            "deploy-flake: interrupted twice: hosts that were activating return to their "
            "previous system by themselves once the confirmation timeout passes",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # a bug before any host was started: one line, never a traceback
        click.echo(f"deploy-flake: internal error: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_FAILED)

    report_error = _write_report(report_path, results)
    if job is Job.STATUS and (status_json or instrumentation != "json"):
        if status_json:
            click.echo(json.dumps(status_document(results), indent=2))
        elif tty:
            display_live.print_table(display_live.status_table(results))
        else:
            click.echo(plain_status(results))
    elif instrumentation != "json":
        if job is Job.PLAN:
            click.echo(plain_plan(results))
        if tty:
            display_live.print_table(display_live.summary_table(results))
        else:
            click.echo(plain_summary(results))
    if run_dir is not None:
        click.echo(f"deploy-flake: every host's whole output is in {run_dir}", err=True)
    skipped = [r.destination for r in results if r.outcome is Outcome.SKIPPED]
    if skipped:
        click.echo(
            f"deploy-flake: {len(skipped)} host(s) skipped, never started: {', '.join(skipped)}",
            err=True,
        )
    if report_error is not None:
        click.echo(
            f"deploy-flake: error: {report_error} (the deploy itself finished: its exit code tells how)",
            err=True,
        )
    sys.exit(exit_code([r.outcome for r in results]))


def _fail(message: str) -> NoReturn:
    messages.error(message)
    sys.exit(EXIT_USAGE)


def _options(job: Job, kw: dict[str, Any]) -> DeployOptions:
    t = Timeouts()
    return DeployOptions(
        flake_dir=kw["flake_dir"],
        preflight=kw.get("preflight_check", "run") == "run",
        pre_activate_script=kw.get("pre_activate_script"),
        test=kw.get("test_mode", "run") == "run",
        build_args=build_args(kw.get("build_cmdline")),
        sudo=kw["sudo"],
        skip_checks=frozenset(kw.get("skip_checks", ())),
        timeouts=Timeouts(
            copy=kw.get("copy_timeout", t.copy),
            build=kw.get("build_timeout", t.build),
            preflight=kw.get("preflight_timeout", t.preflight),
            activation=kw.get("activation_timeout", t.activation),
            health=kw.get("health_timeout", t.health),
            settle=kw.get("settle_time", t.settle),
            confirm=kw.get("confirm_timeout", t.confirm),
            boot=kw.get("boot_timeout", t.boot),
            reboot=kw.get("reboot_timeout", t.reboot),
        ),
        jobs=kw["jobs"],
        job=job,
        rollback_to=kw.get("rollback_to"),
        ask=bool(kw.get("ask")),
        canary=kw.get("canary") or 0,
        max_failures=kw.get("max_failures") or 0,
        all_or_nothing=bool(kw.get("all_or_nothing")),
        reboot=RebootPolicy(kw.get("reboot", RebootPolicy.NEVER)),
        build_on=BuildOn.parse(kw.get("build_on", "target")),
    )


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


def _write_report(path: Path | None, results: list[HostResult]) -> str | None:
    """Writes --report; what went wrong, if it could not be written."""
    if path is None:
        return None
    try:
        write_report(path, results)
    except ReportError as e:
        return str(e)
    return None


def _check_no_repeats(dests: list[Destination]) -> None:
    seen: set[str] = set()
    for d in dests:
        if d.raw in seen:
            raise UsageError(f"the destination {d.raw!r} is given twice")
        seen.add(d.raw)


def _run(
    dests: list[Target],
    options: DeployOptions,
    ssh_config: Path | None,
    ssh_options: tuple[str, ...],
    events: Events,
    password: bytes | None,
) -> list[HostResult]:
    return asyncio.run(
        deploy_all(
            dests,
            options,
            ssh_config=ssh_config,
            ssh_options=ssh_options,
            events=events,
            sudo_password=password,
        )
    )
