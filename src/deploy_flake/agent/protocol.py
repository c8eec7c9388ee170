"""The words the deployer and the agent exchange: phases, keepers, modes, the status line.

The strings here are the wire format; the agent script gets the ones it writes
(the status tag, the state line, its directory, the last deploy's record) in its
header from this module (see script.py), so the two sides cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from deploy_flake.host_reports import BootInfo, BootLoader, GcReport, TrialState
from deploy_flake.models import Outcome, Stage

AGENT_DIR = "/run/deploy-flake"  # the agent scripts and the transactions' records (gone at reboot)
LAST_DEPLOY_FILE = "/var/lib/deploy-flake/last-deploy"  # what the agent records at each commit
# The deployer's GC roots for the systems it built or copied (ID.system, made as root), until
# the transaction's end (the agent drops them) or the job's (the deployer does): root's own
# directory, and gone at reboot. One a deployer lost is dropped by the agent after a day.
GC_ROOTS_DIR = f"{AGENT_DIR}/gcroots"
GC_ROOT_MAX_AGE_MIN = 24 * 60
# A verified reboot's record (--reboot): it must outlive the reboot, so not under AGENT_DIR.
TRIAL_DIR = "/var/lib/deploy-flake/trial"


def gc_root(deploy_id: str) -> str:
    """The GC root of the system deploy_id builds (or copies) for its host."""
    return f"{GC_ROOTS_DIR}/{deploy_id}.system"


STATUS_TAG = "@@deploy-flake-state"  # begins every status line, followed by a tab
STATUS_MARK = f"{STATUS_TAG}\t"
STATE_LINE = "[deploy-flake] state: "  # the agent's log line for each new state
TRIAL_TAG = "@@deploy-flake-trial"  # begins the trial verbs' status line, followed by a tab
GC_TAG = "@@deploy-flake-gc"  # begins each line gc prints for the deployer, followed by a tab
# In a transaction's directory: present from the moment the transaction first writes the
# new system's boot entry until the old one is written again (--on-rollback-failure=reboot
# reboots only a host whose boot entry is still the old one).
BOOT_ENTRY_MARK = "boot-entry-changed"


class Phase(StrEnum):
    """Where a transaction is, as the agent reports it."""

    NONE = "none"  # the host has no such transaction (never started, or the host rebooted)
    PENDING = "pending"  # asked to start; its unit has not run yet
    STARTING = "starting"
    ACTIVATING = "activating"
    CHECKING = "checking"
    AWAITING_CONFIRMATION = "awaiting-confirmation"
    COMMITTING = "committing"
    ROLLING_BACK = "rolling-back"
    ACTIVATED = "activated"
    STAGED = "staged"  # --reboot: confirmed, and its one boot (one-shot entry) is armed
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    ROLLBACK_FAILED = "rollback-failed"
    RESTORE_FAILED = "restore-failed"

    @property
    def final(self) -> bool:
        return self in _OUTCOME

    @property
    def outcome(self) -> Outcome | None:
        """What a final phase means for the host; None while it is in progress."""
        return _OUTCOME.get(self)

    @property
    def stage(self) -> Stage | None:
        """The deploy stage shown while the transaction is in this phase."""
        return _STAGE.get(self)


_OUTCOME = {
    Phase.ACTIVATED: Outcome.ACTIVATED,
    Phase.STAGED: Outcome.ACTIVATED,  # the job goes on with the reboot
    Phase.ROLLED_BACK: Outcome.ROLLED_BACK,
    Phase.FAILED: Outcome.FAILED,
    Phase.ROLLBACK_FAILED: Outcome.UNKNOWN,
    Phase.RESTORE_FAILED: Outcome.UNKNOWN,
}
_STAGE = {
    Phase.PENDING: Stage.ACTIVATE,
    Phase.STARTING: Stage.ACTIVATE,
    Phase.ACTIVATING: Stage.ACTIVATE,
    Phase.CHECKING: Stage.ACTIVATE,
    Phase.AWAITING_CONFIRMATION: Stage.CONFIRM,
    Phase.COMMITTING: Stage.COMMIT,
    Phase.ROLLING_BACK: Stage.ROLLBACK,
}


class Keeper(StrEnum):
    """What carries a transaction on, as the agent sees it at each status."""

    UNIT = "unit"  # its own unit (its ExecStopPost included), or it has not started yet
    GUARD = "guard"  # its unit died; the guard's service recovers the host
    NONE = "none"  # nothing: both were killed; a transaction in progress needs `rescue`


class Mode(StrEnum):
    TEST = "test"  # the whole transaction: activate, check, confirm, then profile and boot entry
    BOOT = "boot"  # only the profile generation and the boot entry (next boot)


@dataclass(frozen=True)
class Status:
    """The agent's answer: the phase, the system it returns to, and why it is where it is."""

    phase: Phase
    previous_system: str = ""
    new_system: str = ""
    reason: str = ""
    keeper: Keeper = Keeper.UNIT
    killed_in: Phase | None = None  # the phase in which the guard found the unit gone
    # The system profile's generation (system-N-link) the transaction found under the deploy
    # lock, i.e. the one it replaces; and the one it left the profile at once committed.
    replaced: str = ""
    committed: str = ""

    @property
    def orphaned(self) -> bool:
        """In progress, but its own unit is gone (killed): the guard, or nothing, carries it on."""
        return not self.phase.final and self.phase is not Phase.NONE and self.keeper is not Keeper.UNIT


# The fields after the tag, in order; the reason is last (it may hold anything but a tab).
STATUS_FIELDS = ("PHASE", "PREVIOUS", "NEW", "KEEPER", "KILLED_IN", "REPLACED", "COMMITTED", "REASON")


def format_status(status: Status) -> str:
    """The status line as the agent prints it (see sh/state.sh's print_status)."""
    killed_in = str(status.killed_in) if status.killed_in is not None else ""
    reason = " ".join(status.reason.split("\t"))
    fields = (status.phase, status.previous_system, status.new_system, status.keeper, killed_in)
    return "\t".join([STATUS_TAG, *map(str, fields), status.replaced, status.committed, reason])


def parse_status(line: str) -> Status | None:
    """Reads a status line: @@deploy-flake-state<TAB>, then STATUS_FIELDS separated by tabs."""
    if not line.startswith(STATUS_MARK):
        return None
    last = len(STATUS_FIELDS) - 1
    parts = line[len(STATUS_MARK) :].rstrip("\r\n").split("\t", last)
    parts += [""] * (len(STATUS_FIELDS) - len(parts))
    try:
        phase = Phase(parts[0].strip())
    except ValueError:
        return None
    try:
        keeper = Keeper(parts[3].strip())
    except ValueError:
        keeper = Keeper.UNIT  # not said: nothing to act on
    try:
        killed_in: Phase | None = Phase(parts[4].strip())
    except ValueError:
        killed_in = None
    generations = (p.strip() if _GENERATION.fullmatch(p.strip()) else "" for p in parts[5:7])
    replaced, committed = generations
    return Status(
        phase, parts[1].strip(), parts[2].strip(), parts[last].strip(), keeper, killed_in, replaced, committed
    )


_GENERATION = re.compile(r"system-\d+-link")


def final_status(text: str) -> Status | None:
    """The status a whole answer of the agent ends with: its last line, and only that.

    Every verb prints its status line last, after the log it shows; a line that looks like
    one anywhere else is text of that log (an activation may print anything), never the
    agent's word. A cut answer (see client.py) has no final status at all.
    """
    lines = text.rstrip("\n").rsplit("\n", 1)
    return parse_status(lines[-1]) if lines and lines[-1] else None


@dataclass(frozen=True)
class TrialStatus:
    """A trial verb's answer: TRIAL_TAG, STATE, ID, NEW, BOOTED (the running boot's system), REASON."""

    state: TrialState
    deploy_id: str = ""
    new_system: str = ""
    booted_system: str = ""
    reason: str = ""


def parse_boot_info(text: str) -> BootInfo | None:
    """boot-info's KEY=VALUE lines; None without a loader line (not the agent's answer)."""
    values: dict[str, str] = {}
    entries: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "entry":
            entries.append(value)
        else:
            values.setdefault(key, value)
    try:
        loader = BootLoader(values["loader"])
        trial = TrialState(values.get("trial") or "none")
    except (KeyError, ValueError):
        return None

    def kib(key: str) -> int | None:
        v = values.get(key, "")
        return int(v) if v.isdigit() else None

    resets = values.get("resets")
    return BootInfo(
        loader=loader,
        default=values.get("default", ""),
        oneshot=values.get("oneshot", ""),
        trial=trial,
        entries=tuple(entries),
        free_kib=kib("boot_free_kib"),
        needs_kib=kib("boot_needs_kib"),
        resets=None if resets is None else resets == "yes",
        panic=values.get("panic", ""),
        watchdog=values.get("watchdog", ""),
        problem=values.get("problem", ""),
    )


def parse_gc(text: str) -> GcReport | None:
    """gc's tagged lines; None without its end line (it did not finish, or is not the agent)."""
    kept: list[tuple[int, str]] = []
    removed: list[tuple[int, str, str]] = []
    for line in text.splitlines():
        if not line.startswith(f"{GC_TAG}\t"):
            continue
        kind, *fields = line[len(GC_TAG) + 1 :].split("\t")
        fields += [""] * 5
        if kind == "keep" and fields[0].isdigit():
            kept.append((int(fields[0]), fields[1]))
        elif kind == "remove" and fields[0].isdigit():
            removed.append((int(fields[0]), fields[1], fields[2]))
        elif kind == "end":

            def kib(v: str) -> int | None:
                return int(v) if v.isdigit() else None

            return GcReport(
                kept=tuple(kept),
                removed=tuple(removed),
                boot_free_before_kib=kib(fields[1]),
                boot_free_after_kib=kib(fields[2]),
                store=fields[3],
                problem=fields[4],
            )
    return None


def parse_trial(text: str) -> TrialStatus | None:
    """The trial status a whole answer ends with (its last line, as for final_status)."""
    lines = text.rstrip("\n").rsplit("\n", 1)
    line = lines[-1] if lines else ""
    if not line.startswith(f"{TRIAL_TAG}\t"):
        return None
    parts = line[len(TRIAL_TAG) + 1 :].rstrip("\r").split("\t", 4)
    parts += [""] * (5 - len(parts))
    try:
        state = TrialState(parts[0].strip())
    except ValueError:
        return None
    return TrialStatus(state, *(p.strip() for p in parts[1:5]))
