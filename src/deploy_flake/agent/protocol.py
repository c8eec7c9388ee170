"""The words the deployer and the agent exchange: phases, keepers, modes, the status line.

The strings here are the wire format; the agent script gets the ones it writes
(the status tag, the state line, its directory, the last deploy's record) in its
header from this module (see script.py), so the two sides cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from deploy_flake.models import Outcome, Stage

AGENT_DIR = "/run/deploy-flake"  # the agent scripts and the transactions' records (gone at reboot)
LAST_DEPLOY_FILE = "/var/lib/deploy-flake/last-deploy"  # what the agent records at each commit
STATUS_TAG = "@@deploy-flake-state"  # begins every status line, followed by a tab
STATUS_MARK = f"{STATUS_TAG}\t"
STATE_LINE = "[deploy-flake] state: "  # the agent's log line for each new state
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

    @property
    def orphaned(self) -> bool:
        """In progress, but its own unit is gone (killed): the guard, or nothing, carries it on."""
        return not self.phase.final and self.phase is not Phase.NONE and self.keeper is not Keeper.UNIT


def parse_status(line: str) -> Status | None:
    """Reads a status line:
    @@deploy-flake-state<TAB>PHASE<TAB>PREVIOUS<TAB>NEW<TAB>KEEPER<TAB>KILLED_IN<TAB>REASON."""
    if not line.startswith(STATUS_MARK):
        return None
    parts = line[len(STATUS_MARK) :].rstrip("\r\n").split("\t", 5)
    parts += [""] * (6 - len(parts))
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
    return Status(phase, parts[1].strip(), parts[2].strip(), parts[5].strip(), keeper, killed_in)


def last_status(text: str) -> Status | None:
    for line in reversed(text.splitlines()):
        status = parse_status(line)
        if status is not None:
            return status
    return None
