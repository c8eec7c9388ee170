"""The commands as the user typed them: each option group's typed values (made by the
command line, cli/params.py) and what each group sets in the deploy layer's DeployOptions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from deploy_flake.models import (
    BuildOn,
    DeployOptions,
    Elevate,
    GcSettings,
    Job,
    RebootPolicy,
    RollbackFailurePolicy,
)
from deploy_flake.nix import build_args


@dataclass(frozen=True)
class CommonOptions:
    """Every command's: the hosts, how to reach them, where the output goes."""

    destinations: tuple[str, ...]
    selectors: tuple[str, ...]  # --on
    flake_dir: Path
    instrumentation: Literal["tui", "json"]
    jobs: int | None
    ssh_config: Path | None
    ssh_options: tuple[str, ...]
    sudo: bool | None
    elevate: Elevate
    report_path: Path | None
    log_dir: Path | None


@dataclass(frozen=True)
class BuildOptions:
    """deploy's and plan's: how the new system is built, and whether it is tested."""

    test: bool
    build_on: str  # target, local or a builder host: checked with the other input
    build_cmdline: str | None
    copy_timeout: int
    build_timeout: int

    def applied_to(self, options: DeployOptions) -> DeployOptions:
        return replace(
            options,
            test=self.test,
            build_args=build_args(self.build_cmdline),
            build_on=BuildOn.parse(self.build_on),
            timeouts=replace(options.timeouts, copy=self.copy_timeout, build=self.build_timeout),
        )


@dataclass(frozen=True)
class ActivationOptions:
    """deploy's, plan's and rollback's: the checks and time limits around activating."""

    ask_sudo_password: bool
    sudo_password_fd: int | None
    preflight: bool
    pre_activate_script: str | None
    preflight_timeout: int
    activation_timeout: int
    health_timeout: int
    settle_time: int
    confirm_timeout: int
    boot_timeout: int
    skip_checks: tuple[str, ...]
    specialisation: str | None  # None: the one the host runs; "": the system itself
    install_bootloader: bool

    def applied_to(self, options: DeployOptions) -> DeployOptions:
        return replace(
            options,
            preflight=self.preflight,
            pre_activate_script=self.pre_activate_script,
            skip_checks=frozenset(self.skip_checks),
            specialisation=self.specialisation,
            install_bootloader=self.install_bootloader,
            timeouts=replace(
                options.timeouts,
                preflight=self.preflight_timeout,
                activation=self.activation_timeout,
                health=self.health_timeout,
                settle=self.settle_time,
                confirm=self.confirm_timeout,
                boot=self.boot_timeout,
            ),
        )


@dataclass(frozen=True)
class RebootOptions:
    """deploy's and rollback's."""

    reboot: RebootPolicy
    reboot_unverified: bool
    reboot_timeout: int
    on_rollback_failure: RollbackFailurePolicy

    def applied_to(self, options: DeployOptions) -> DeployOptions:
        return replace(
            options,
            reboot=self.reboot,
            reboot_unverified=self.reboot_unverified,
            on_rollback_failure=self.on_rollback_failure,
            timeouts=replace(options.timeouts, reboot=self.reboot_timeout),
        )


@dataclass(frozen=True)
class RolloutOptions:
    """deploy's: the order of the hosts, and when to stop."""

    ask: bool
    canary: int | None
    max_failures: int | None
    all_or_nothing: bool

    def applied_to(self, options: DeployOptions) -> DeployOptions:
        return replace(
            options,
            ask=self.ask,
            canary=self.canary or 0,
            max_failures=self.max_failures or 0,
            all_or_nothing=self.all_or_nothing,
        )


@dataclass(frozen=True)
class DeployCommand:
    common: CommonOptions
    build: BuildOptions
    activation: ActivationOptions
    reboot: RebootOptions
    rollout: RolloutOptions
    dry_activate: bool  # a plan, with every option a deploy takes

    @property
    def job(self) -> Job:
        return Job.PLAN if self.dry_activate else Job.DEPLOY


@dataclass(frozen=True)
class PlanCommand:
    common: CommonOptions
    build: BuildOptions
    activation: ActivationOptions
    job: ClassVar[Job] = Job.PLAN


@dataclass(frozen=True)
class RollbackCommand:
    common: CommonOptions
    activation: ActivationOptions
    reboot: RebootOptions
    to: int | None  # the generation (default: the one before the current)
    job: ClassVar[Job] = Job.ROLLBACK


@dataclass(frozen=True)
class StatusCommand:
    common: CommonOptions
    as_json: bool  # --json: one JSON document on stdout
    job: ClassVar[Job] = Job.STATUS


@dataclass(frozen=True)
class GcOptions:
    """gc's own: which generations go, what else, and root's password."""

    keep: int | None
    older_than: int | None  # seconds
    collect_garbage: bool
    dry_run: bool
    ask_sudo_password: bool
    sudo_password_fd: int | None

    def applied_to(self, options: DeployOptions) -> DeployOptions:
        return replace(
            options,
            gc=GcSettings(
                keep=self.keep or 0,
                older_than_s=self.older_than or 0,
                collect_garbage=self.collect_garbage,
                dry_run=self.dry_run,
            ),
        )


@dataclass(frozen=True)
class GcCommand:
    common: CommonOptions
    gc: GcOptions
    job: ClassVar[Job] = Job.GC


Command = DeployCommand | PlanCommand | RollbackCommand | StatusCommand | GcCommand


class _Group(Protocol):
    def applied_to(self, options: DeployOptions) -> DeployOptions: ...
