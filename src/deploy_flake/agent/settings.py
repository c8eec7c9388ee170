"""What one transaction is asked to do, and how long each of its steps may take.

The fixed limits below are the agent's own (the script gets them in its header,
see script.py); the budgets derived from them and a transaction's settings are
computed here only: the two the agent needs, the recovery's and the guard's,
travel to it in the settings file (RECOVERY_S, GUARD_S).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy_flake.agent.protocol import Mode, Phase

# Fixed limits of the agent itself: nix-env --set, and how long a recovery waits for the
# deploy lock (and a rollback or boot entry for another switch's).
PROFILE_SET_S = 120
LOCK_WAIT_S = 30
KILL_GRACE_S = 10  # timeout -k: a stopped activation gets this long before SIGKILL
# The agent's confirm: an early one waits for the checks and this long more; then it waits
# this long for the transaction to take the confirmation.
CONFIRM_HOLD_MARGIN_S = 10
CONFIRM_TAKEN_S = 10
# The guard's timer fires this long after the transaction's own deadline (the end of its
# confirmation window, or of its boot entry's writing); see Settings.guard_s.
GUARD_MARGIN_S = 30
# The transaction's unit may take this long beyond the longest recovery to stop (its
# ExecStopPost's processes starting, its log): the unit's TimeoutStopSec.
STOP_MARGIN_S = 60

MARGIN_S = 60  # the deployer's: ssh round trips, polling, process start-up
CONTACT_WINDOW_S = 60
# A trial boot's guard: what its window allows for the rest of the boot and the deployer's polling
TRIAL_BOOT_MARGIN_S = 60  # the least time a host that does not answer at all is tried again


@dataclass(frozen=True)
class Settings:
    """What one transaction is asked to do, handed to the agent by name."""

    new_system: str
    mode: Mode
    activation_s: int
    health_s: int
    settle_s: int
    confirm_s: int
    boot_s: int
    holder: str  # who deploys, for a second deploy's "in progress" message
    gc_root: str = ""  # the build's result link, dropped by the agent when the transaction ends
    flake: str = ""  # what the host records as the source of its last deploy
    generation: int | None = None  # an existing profile generation of new_system: a rollback to it
    specialisation: str = (
        ""  # activate new_system/specialisation/NAME (the profile and boot entry: new_system)
    )
    install_bootloader: bool = False  # NIXOS_INSTALL_BOOTLOADER=1 for switch-to-configuration boot
    # The profile generation (system-N-link) the transaction must find, else it changes
    # nothing: a rollback's, the one its target was chosen from (or an --all-or-nothing undo's,
    # the one the deploy committed), so that a later switch is never silently undone.
    expect: str = ""
    # --reboot, verified: at commit the new system gets a boot entry beside the old default and
    # is booted once; its guard sends an unconfirmed trial boot back after trial_window_s
    boot_once: bool = False

    def __post_init__(self) -> None:
        for name in ("activation_s", "health_s", "confirm_s", "boot_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 second")
        if self.settle_s < 0:
            raise ValueError("settle_s must not be negative")

    def encode(self) -> bytes:
        """KEY=VALUE lines, as the agent's `start` reads them on stdin."""
        fields = {
            "NEW": self.new_system,
            "MODE": str(self.mode),
            "ACTIVATION_S": str(self.activation_s),
            "HEALTH_S": str(self.health_s),
            "SETTLE_S": str(self.settle_s),
            "CONFIRM_S": str(self.confirm_s),
            "BOOT_S": str(self.boot_s),
            "HOLDER": " ".join(self.holder.split()),
            "GC_ROOT": self.gc_root,
            "FLAKE": " ".join(self.flake.split()),
            "GENERATION": "" if self.generation is None else str(self.generation),
            "SPECIALISATION": self.specialisation,
            "INSTALL_BOOTLOADER": "1" if self.install_bootloader else "",
            "EXPECT": self.expect,
            "BOOT_ONCE": "1" if self.boot_once else "",
            "TRIAL_WINDOW_S": str(self.trial_window_s()) if self.boot_once else "",
            # computed here once: the agent uses them as they are
            "RECOVERY_S": str(self.recovery_s()),
            "GUARD_S": str(self.guard_s()),
        }
        return "".join(f"{k}={v}\n" for k, v in fields.items()).encode()

    # ------------------------------------------------------------ time budgets
    def _activation(self) -> int:
        return self.activation_s + KILL_GRACE_S

    def _rollback(self) -> int:
        """A rollback with its one retry: another switch's lock, activation and health
        check, twice."""
        return 2 * (LOCK_WAIT_S + self._activation() + self.health_s)

    def _restore(self) -> int:
        return PROFILE_SET_S + LOCK_WAIT_S + self.boot_s + KILL_GRACE_S

    def recovery_s(self) -> int:
        """The longest recovery of a killed transaction: lock wait, putting the profile back,
        rollback. The agent's RECOVERY_S: its unit's stop timeout covers it (and STOP_MARGIN_S)."""
        return LOCK_WAIT_S + self._restore() + self._rollback()

    def _commit(self) -> int:
        return PROFILE_SET_S + LOCK_WAIT_S + self.boot_s + KILL_GRACE_S

    def guard_s(self) -> int:
        """When the guard's timer fires, from the transaction's start (the agent's GUARD_S)."""
        if self.mode is Mode.BOOT:
            return LOCK_WAIT_S + PROFILE_SET_S + self.boot_s + KILL_GRACE_S + GUARD_MARGIN_S
        return (
            LOCK_WAIT_S
            + self._activation()
            + 2 * self.health_s
            + self.settle_s
            + self.confirm_s
            + GUARD_MARGIN_S
        )

    def trial_window_s(self) -> int:
        """How long the guard of a trial boot waits for its confirmation, from the moment the
        boot mounted its file systems: the rest of the boot, the deployer's new login (polled
        every few seconds), the health check, the settle window and the commit."""
        return (
            TRIAL_BOOT_MARGIN_S
            + 2 * self.health_s
            + self.settle_s
            + self.confirm_s
            + self.boot_s
            + KILL_GRACE_S
        )

    def contact_window_s(self) -> int:
        """How long the deployer keeps trying a host that does not answer at all (a network
        cut, a host powered off) before it reports it unknown: its transaction decides by
        itself, and `deploy-flake status` tells what it decided."""
        return max(CONTACT_WINDOW_S, 2 * self.confirm_s)

    def remaining_s(self, phase: Phase) -> int:
        """The longest the agent may still take, from entering `phase`, to reach a final phase.

        The one deadline rule of the deployer: after seeing a phase, it waits this
        long (and a margin) for the next sign of progress before it gives up.
        """
        after_confirmation = self.health_s + self._commit() + self._restore() + self._rollback()
        awaiting = self.confirm_s + after_confirmation
        checking = 2 * self.health_s + self.settle_s + awaiting
        activating = self._activation() + checking
        table = {
            Phase.AWAITING_CONFIRMATION: awaiting,
            Phase.CHECKING: checking,
            Phase.ACTIVATING: activating,
            Phase.COMMITTING: self._commit() + self._restore() + self._rollback(),
            Phase.ROLLING_BACK: self._rollback(),
        }
        if phase.final:
            return 0
        # not yet activating: an earlier, killed transaction may be finished first
        return table.get(phase, self.recovery_s() + activating) + MARGIN_S
