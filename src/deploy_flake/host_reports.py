"""What a host's agent reports besides a transaction's status: what boots the host
(boot-info) and what gc did. Parsed by agent/protocol.py; carried by models.py's results."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BootLoader(StrEnum):
    """What boots a host, as the agent's boot-info tells (agent/sh/trial.sh's boot_loader)."""

    SYSTEMD_BOOT = "systemd-boot"  # with EFI variables: it has the one-shot entry
    GRUB = "grub"
    NONE = "none"  # none that deploy-flake knows


class TrialState(StrEnum):
    """Where a verified reboot is (agent/sh/trial.sh)."""

    NONE = "none"  # no trial on the host
    STAGED = "staged"  # the next boot starts the new system once
    BOOTED = "booted"  # it booted; the guard waits for trial-commit
    RETURNING = "returning"  # sent back (unconfirmed, unhealthy): rebooting into the old default
    COMMITTED = "committed"  # the new system is the default
    ROLLED_BACK = "rolled-back"  # back on the old default, the profile and entries put back
    FAILED = "failed"


@dataclass(frozen=True)
class BootInfo:
    """boot-info's answer: what boots a host and, for the system asked about, how its boot
    would go (the fields after `entries`; None/"" when no system was asked about)."""

    loader: BootLoader
    default: str = ""  # the boot loader's default entry (loader.conf)
    oneshot: str = ""  # the entry the next boot starts once, if one is set
    trial: TrialState = TrialState.NONE  # the last verified reboot's state
    entries: tuple[str, ...] = ()
    free_kib: int | None = None  # room on the boot partition
    needs_kib: int | None = None  # what the system's kernel and initrd take there (not yet there)
    resets: bool | None = None  # the system resets the host after a panic or hang
    panic: str = ""  # panic=N of its kernel command line
    watchdog: str = ""  # RuntimeWatchdogSec of its systemd
    problem: str = ""  # what the host's boot check refuses (a deploy would fail, changing nothing)

    @property
    def trial_pending(self) -> bool:
        return self.trial in (TrialState.STAGED, TrialState.BOOTED, TrialState.RETURNING)

    def summary(self) -> str:
        """One line: the loader, its default, and a pending verified reboot."""
        if self.loader is BootLoader.SYSTEMD_BOOT:
            text = f"systemd-boot, default {self.default or '-'}, {len(self.entries)} entries"
        elif self.loader is BootLoader.GRUB:
            text = "grub (no one-shot boot: --reboot needs --reboot-unverified)"
        else:
            text = "none known (--reboot needs --reboot-unverified)"
        if self.trial_pending:
            text += f"; a verified reboot is {self.trial} (one-shot entry {self.oneshot or '-'})"
        return text

    def resets_text(self) -> str:
        """After a kernel panic or hang, what the system does, and what to set if it stays down."""
        if self.resets is None:
            return ""
        how = [f"panic={self.panic}"] if self.panic not in ("", "0") else []
        if self.watchdog not in ("", "0", "off", "infinity"):
            how.append(f"watchdog {self.watchdog}")
        if self.resets:
            return f"resets itself ({', '.join(how)})"
        return (
            "stays down until someone resets it (no panic= on its kernel command line, no "
            'watchdog): set boot.kernelParams = [ "panic=30" ] (and systemd.watchdog.runtimeTime)'
        )

    def lines(self) -> list[str]:
        """What plan shows of the boot."""
        out = [f"boot loader: {self.summary()}"]
        if self.free_kib is not None and self.needs_kib is not None:
            out.append(
                f"/boot: {_mib(self.free_kib)} free; the new kernel and initrd need {_mib(self.needs_kib)}"
            )
        if self.resets is not None:
            out.append(f"after a kernel panic or hang, the new system {self.resets_text()}")
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "loader": str(self.loader),
            "default": self.default or None,
            "oneshot": self.oneshot or None,
            "trial": str(self.trial),
            "entries": list(self.entries),
            "free_kib": self.free_kib,
            "needs_kib": self.needs_kib,
            "resets_after_panic": self.resets,
            "panic": self.panic or None,
            "watchdog": self.watchdog or None,
            "problem": self.problem or None,
        }


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


@dataclass(frozen=True)
class GcReport:
    """What gc did on a host (sh/gc.sh): the generations kept (and why) and removed, /boot's
    free room before and after, nix-store --gc's summary, and what stopped it."""

    kept: tuple[tuple[int, str], ...] = ()  # generation, why it stays
    removed: tuple[tuple[int, str, str], ...] = ()  # generation, its system, its date
    boot_free_before_kib: int | None = None
    boot_free_after_kib: int | None = None  # None: nothing was removed (--dry-run)
    store: str = ""  # "N store paths deleted, X MiB freed" (--collect-garbage)
    problem: str = ""

    def summary(self, dry_run: bool) -> str:
        gens = ", ".join(str(g) for g, _, _ in sorted(self.removed))
        if not self.removed:
            text = "no generation to remove"
        elif dry_run:
            text = f"would remove generation(s) {gens}"
        else:
            text = f"removed generation(s) {gens}"
        before, after = self.boot_free_before_kib, self.boot_free_after_kib
        if before is not None and after is not None and not dry_run:
            text += f"; /boot: {_mib(before)} free before, {_mib(after)} after"
        if self.store:
            text += f"; store: {self.store}"
        return text

    def as_json(self) -> dict[str, object]:
        return {
            "kept": [{"generation": g, "why": why} for g, why in self.kept],
            "removed": [{"generation": g, "system": sys, "date": date} for g, sys, date in self.removed],
            "boot_free_before_kib": self.boot_free_before_kib,
            "boot_free_after_kib": self.boot_free_after_kib,
            "store": self.store or None,
            "problem": self.problem or None,
        }
