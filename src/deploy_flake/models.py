"""What a deploy is asked to do, and what became of each host."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from deploy_flake.destination import Destination
from deploy_flake.errors import UsageError
from deploy_flake.host_reports import BootInfo, GcReport


class Elevate(StrEnum):
    """How a login that is not root runs root's commands (remote/elevate.py)."""

    SUDO = "sudo"
    DOAS = "doas"

    @classmethod
    def parse(cls, text: str, where: str) -> Elevate:
        try:
            return cls(text)
        except ValueError:
            raise UsageError(f"{where}: {text!r} is not an elevation: sudo or doas") from None

    @property
    def nixos_option(self) -> str:
        """The NixOS option that installs it, for the messages."""
        if self is Elevate.DOAS:
            return "security.doas.enable"
        return "security.sudo.enable or security.sudo-rs.enable"


class Stage(StrEnum):
    CONNECT = "connect"
    COPY = "copy"
    BUILD = "build"
    PREFLIGHT = "preflight"
    CHECK = "check"
    PRE_ACTIVATE = "pre-activate"
    ACTIVATE = "activate"
    CONFIRM = "confirm"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    REBOOT = "reboot"
    GC = "gc"
    DONE = "done"


class BuildPlace(StrEnum):
    TARGET = "target"  # each host builds its own system (the flake is copied to it)
    LOCAL = "local"  # the deployer builds; closures are copied to the hosts
    HOST = "host"  # one builder host builds; closures are copied from it to the hosts


@dataclass(frozen=True)
class BuildOn:
    """--build-on: target, local, or a builder's destination ([user@]host or nixos://[user@]host[:port])."""

    place: BuildPlace = BuildPlace.TARGET
    builder: Destination | None = None

    @classmethod
    def parse(cls, text: str) -> BuildOn:
        if text in (BuildPlace.TARGET, BuildPlace.LOCAL):
            return cls(BuildPlace(text))
        try:
            dest = Destination.parse(text)
        except UsageError as e:
            raise UsageError(f"--build-on: {e} (use target, local or a builder host)") from None
        if dest.config is not None:
            raise UsageError(
                f"--build-on {text!r}: a builder is a host, not a configuration; drop '/{dest.config}'"
            )
        return cls(BuildPlace.HOST, dest)

    def __str__(self) -> str:
        return self.builder.raw if self.builder else str(self.place)


class Job(StrEnum):
    """What a run does to each host."""

    DEPLOY = "deploy"  # build the flake's configuration on the host and activate it
    PLAN = "plan"  # build it and show what activating it would change; change nothing
    ROLLBACK = "rollback"  # activate an earlier generation of the system profile
    STATUS = "status"  # only look
    GC = "gc"  # remove old system generations (and, if asked, the store's garbage)


class RebootPolicy(StrEnum):
    """--reboot: whether a host reboots after its new system was committed."""

    NEVER = "never"  # only a note when the new kernel, initrd or modules need one
    IF_NEEDED = "if-needed"  # when they do (or the new system only takes effect at boot)
    ALWAYS = "always"


class RollbackFailurePolicy(StrEnum):
    """--on-rollback-failure: what is done when re-activating the previous system failed twice."""

    REPORT = "report"  # the host is left as it is, its outcome unknown, with what to do
    REBOOT = "reboot"  # the last resort: reboot into the untouched old boot entry, say what came back


class Outcome(StrEnum):
    ACTIVATED = "activated"  # running the new system, confirmed, boot entry written
    UNCHANGED = "unchanged"  # looked at (status) or planned only: nothing was changed
    SKIPPED = "skipped"  # never started (a canary failed, --max-failures reached): nothing was changed
    FAILED = "failed"  # nothing was changed on the host
    ROLLED_BACK = "rolled-back"  # the new system was tried and the host is back on the previous one
    UNKNOWN = "unknown"  # the host's state could not be established
    CLEANED = "cleaned"  # gc: old generations (and garbage) removed; the running system untouched


# Exit codes of the command, by the worst outcome among the hosts.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3
EXIT_UNKNOWN = 4
EXIT_INTERRUPTED = 130  # a second Ctrl-C or SIGTERM: stopped at once
EXIT_BY_OUTCOME = {
    Outcome.ACTIVATED: EXIT_OK,
    Outcome.UNCHANGED: EXIT_OK,
    Outcome.CLEANED: EXIT_OK,
    Outcome.SKIPPED: EXIT_OK,  # the hosts that ran decide
    Outcome.FAILED: EXIT_FAILED,
    Outcome.ROLLED_BACK: EXIT_ROLLED_BACK,
    Outcome.UNKNOWN: EXIT_UNKNOWN,
}
_SEVERITY = [
    Outcome.SKIPPED,
    Outcome.UNCHANGED,
    Outcome.CLEANED,
    Outcome.ACTIVATED,
    Outcome.FAILED,
    Outcome.ROLLED_BACK,
    Outcome.UNKNOWN,
]


def exit_code(outcomes: list[Outcome]) -> int:
    worst = max(outcomes, key=_SEVERITY.index, default=Outcome.ACTIVATED)
    return EXIT_BY_OUTCOME[worst]


# Sanity checks of the new system, each skippable by name with --skip-check.
SANITY_CHECKS = ("sshd", "switch-to-configuration", "system-type")


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each stage."""

    connect: float = 30
    copy: float = 600  # per attempt
    copy_attempts: int = 3
    build: float = 3600
    preflight: float = 300
    pre_activate: float = 300
    activation: float = 300
    health: float = 60
    settle: float = 5  # the system must stay healthy this long after activating
    confirm: float = 30
    boot: float = 300
    reboot: float = 600  # for a rebooted host to come back, booted and healthy


@dataclass(frozen=True)
class DeployOptions:
    flake_dir: Path
    preflight: bool = True
    pre_activate_script: str | None = None  # None: pre-activate-safety-checks when present
    test: bool = True
    build_args: tuple[str, ...] = ()
    sudo: bool | None = None  # None: when the login user is not root
    elevate: Elevate = Elevate.SUDO  # how: sudo or doas
    skip_checks: frozenset[str] = frozenset()
    timeouts: Timeouts = field(default_factory=Timeouts)
    jobs: int | None = None
    job: Job = Job.DEPLOY
    rollback_to: int | None = None  # rollback: this generation (default: the one before the current)
    # rollback: only from this generation (an --all-or-nothing undo: the one the deploy committed);
    # a profile that moved on since is left alone
    rollback_from: int | None = None
    ask: bool = False  # show every host's plan and ask once before activating any
    canary: int = 0  # deploy this many hosts first; the rest only if all of them were activated
    max_failures: int = 0  # 0: no limit; else start no new host after this many did not end activated
    all_or_nothing: bool = False  # roll back the activated hosts if any host was not activated
    reboot: RebootPolicy = RebootPolicy.NEVER
    # --reboot without the one-shot boot: the new system is the default before the reboot
    reboot_unverified: bool = False
    on_rollback_failure: RollbackFailurePolicy = RollbackFailurePolicy.REPORT
    build_on: BuildOn = field(default_factory=BuildOn)
    # the new system's specialisation to activate: None follows the one the host runs, "" is
    # the system itself (nixos-rebuild --specialisation)
    specialisation: str | None = None
    install_bootloader: bool = False  # NIXOS_INSTALL_BOOTLOADER=1 for the boot entry's writing
    gc: GcSettings = field(default_factory=lambda: GcSettings())


@dataclass(frozen=True)
class GcSettings:
    """gc: which old system generations go (those a host needs never do), and what else."""

    keep: int = 0  # the newest N generations stay (0: only those the host needs)
    older_than_s: int = 0  # only generations older than this go (0: of any age)
    collect_garbage: bool = False  # then nix-store --gc
    dry_run: bool = False  # only list


@dataclass(frozen=True)
class HostStatus:
    """What `status` found on a host that answered (`status --json`'s keys, and the report's)."""

    state: str  # systemctl is-system-running, or "unknown"
    failed_units: tuple[str, ...] = ()
    current_system: str | None = None
    booted_system: str | None = None
    profile_system: str | None = None
    generation: int | None = None
    reboot_reasons: tuple[str, ...] = ()  # what of the running system differs from the booted one
    last_deploy: dict[str, str] | None = None  # recorded by the agent at each commit
    specialisation: str | None = None  # the committed system's specialisation the host runs
    boot: BootInfo | None = None  # what boots it, and how its default system resets; None: not known

    @property
    def reboot_needed(self) -> bool:
        return bool(self.reboot_reasons)

    def as_json(self) -> dict[str, object]:
        return {
            "reachable": True,
            "state": self.state,
            "failed_units": list(self.failed_units),
            "current_system": self.current_system,
            "booted_system": self.booted_system,
            "profile_system": self.profile_system,
            "generation": self.generation,
            "reboot_needed": self.reboot_needed,
            "reboot_reasons": list(self.reboot_reasons),
            "last_deploy": self.last_deploy,
            "specialisation": self.specialisation,
            "boot": self.boot.as_json() if self.boot is not None else None,
        }


@dataclass(frozen=True)
class HostPlan:
    """What activating a new system would change on a host, and the checks' verdict."""

    closure_changes: tuple[str, ...] = ()  # nix store diff-closures' lines
    units: dict[str, tuple[str, ...]] = field(default_factory=dict)  # action -> units (dry-activate)
    reboot_reasons: tuple[str, ...] = ()
    checks: str = "ok"  # "ok", or why a deploy would refuse the system
    specialisation: str | None = None  # the new system's specialisation a deploy would activate
    boot: BootInfo | None = None  # what boots the host, and how the new system's boot would go

    @property
    def reboot_needed(self) -> bool:
        return bool(self.reboot_reasons)

    def as_json(self) -> dict[str, object]:
        return {
            "closure_changes": list(self.closure_changes),
            "units": {action: list(names) for action, names in self.units.items()},
            "reboot_needed": self.reboot_needed,
            "reboot_reasons": list(self.reboot_reasons),
            "checks": self.checks,
            "specialisation": self.specialisation,
            "boot": self.boot.as_json() if self.boot is not None else None,
        }


@dataclass
class HostResult:
    destination: str
    host: str
    config: str | None = None
    outcome: Outcome = Outcome.FAILED
    stage: Stage = Stage.CONNECT
    system: str | None = None
    previous_system: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    status: HostStatus | None = None  # what `status` found, on a host that answered
    plan: HostPlan | None = None  # what a plan found
    gc: GcReport | None = None  # what gc removed, or would (--dry-run)

    def as_json(self) -> dict[str, object]:
        return {
            "destination": self.destination,
            "host": self.host,
            "config": self.config,
            "outcome": str(self.outcome),
            "stage": str(self.stage),
            "system": self.system,
            "previous_system": self.previous_system,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "notes": self.notes,
            **(self.status.as_json() if self.status is not None else {}),
            **({"plan": self.plan.as_json()} if self.plan is not None else {}),
            **({"gc": self.gc.as_json()} if self.gc is not None else {}),
        }
