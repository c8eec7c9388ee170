"""Flows of one host (see test_flows.py) through the verified reboot (--reboot): the boot
loader checked before anything changes, the trial boot confirmed, or ended by the host's
own guard (the new system did not boot, or was sent back)."""

from __future__ import annotations

import pytest

from deploy_flake.agent.protocol import TRIAL_TAG
from deploy_flake.models import Job, Outcome, RebootPolicy, Stage
from tests.fake_remote import Reply
from tests.test_flows import BEFORE, NEW, OLD, facts, inspection, instant, run_job, status

__all__ = ["instant"]  # the fixture, used here by name

SYSTEMD_BOOT = Reply("loader=systemd-boot\ndefault=nixos-generation-1.conf\noneshot=\ntrial=none\npanic=5\n")
REBOOTED = Reply("b00t\n", stderr="Connection to web closed by remote host.", lost=True)


def trial(state: str, booted: str, reason: str = "") -> Reply:
    return Reply(f"{TRIAL_TAG}\t{state}\tt-web\t{NEW}\t{booted}\t{reason}\n")


# up to the reboot: the boot loader's check, the transaction staged at its commit, the reboot
STAGED = [
    *BEFORE,
    ("agent install", Reply()),
    ("agent boot-info", SYSTEMD_BOOT),
    ("agent start", status("checking")),
    ("agent confirm", status("staged")),
    ("reboot", REBOOTED),
    ("disconnect", Reply()),
    ("facts", facts(boot_id="b00t")),  # not down yet: the same boot
]
ON_NEW = facts(current=NEW, generations=[(1, OLD), (2, NEW)], boot_id="n3w")
ON_OLD = facts(current=OLD, generations=[(1, OLD)], boot_id="0ld")


def test_a_verified_reboot_makes_the_new_system_the_default_only_after_its_confirmed_boot(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    result, fake, events = run_job(
        monkeypatch,
        [
            *STAGED,
            ("facts", ON_NEW),
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("running\n")),
            ("agent install", Reply()),
            ("agent trial-commit", trial("committed", NEW)),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
    )
    assert result.outcome is Outcome.ACTIVATED and result.stage is Stage.DONE, result
    assert any("it is now the default boot entry" in n for n in events.notes), events.notes
    # the confirmation only after the health check of the trial boot
    assert fake.sent.index("systemctl is-system-running") < fake.sent.index("agent trial-commit")


def test_a_new_system_that_did_not_boot_is_rolled_back_by_the_host_itself(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    why = f"the new system did not boot: the boot loader started {OLD} again (its default)"
    result, _, _ = run_job(
        monkeypatch,
        [
            *STAGED,
            ("facts", ON_OLD),
            ("connect", Reply()),
            ("agent install", Reply()),
            ("agent trial-status", trial("staged", OLD)),  # its guard has not run yet
            ("connect", Reply()),
            ("agent install", Reply()),
            ("agent trial-status", trial("rolled-back", OLD, why)),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert result.error == f"rolled back: {why}"


def test_an_unhealthy_trial_boot_is_sent_back_and_reported_rolled_back(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    why = "the new system booted degraded (failed units: broken.service)"
    result, fake, _ = run_job(
        monkeypatch,
        [
            *STAGED,
            ("facts", ON_NEW),
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("degraded\n")),
            ("systemctl list-units", Reply("broken.service loaded failed failed Broken\n")),
            ("agent install", Reply()),
            ("agent trial-reject", trial("returning", NEW, why)),
            ("disconnect", Reply()),
            ("facts", ON_OLD),
            ("connect", Reply()),
            ("agent install", Reply()),
            ("agent trial-status", trial("rolled-back", OLD, why)),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert result.error == f"rolled back: {why}"
    assert "agent trial-commit" not in fake.sent


def test_a_host_without_a_one_shot_boot_fails_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent install", Reply()),
            ("agent boot-info", Reply("loader=grub\ndefault=\noneshot=\ntrial=none\npanic=5\n")),
            ("rm", Reply()),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
    )
    assert result.outcome is Outcome.FAILED, result
    assert "boot loader (grub) has no one-shot entry" in str(result.error)
    assert "--reboot-unverified" in str(result.error) and "nothing was changed" in str(result.error)
    assert "agent start" not in fake.sent


def test_a_new_system_that_cannot_reset_itself_is_noted(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    no_reset = Reply("loader=systemd-boot\ndefault=nixos-generation-1.conf\noneshot=\ntrial=none\n")
    _, _, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent install", Reply()),
            ("agent boot-info", no_reset),
            ("agent start", status("checking")),
            ("agent confirm", status("staged")),
            ("reboot", REBOOTED),
            ("disconnect", Reply()),
            ("facts", ON_NEW),
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("running\n")),
            ("agent install", Reply()),
            ("agent trial-commit", trial("committed", NEW)),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
    )
    assert any("does not reset itself after a kernel panic" in n for n in events.notes), events.notes


def test_a_rollback_to_a_generation_without_a_boot_entry_is_refused_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limited = Reply("loader=systemd-boot\ndefault=nixos-generation-3.conf\nentry=nixos-generation-3.conf\n")
    result, fake, _ = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", facts(current=NEW, generations=[(1, OLD), (2, OLD), (3, NEW)])),
            ("inspect", inspection()),
            ("agent install", Reply()),
            ("agent boot-info", limited),
            ("disconnect", Reply()),
        ],
        job=Job.ROLLBACK,
        rollback_to=1,
    )
    assert result.outcome is Outcome.FAILED, result
    assert "generation 1 has no boot entry" in str(result.error) and "configurationLimit" in str(result.error)
    assert "nothing was changed" in str(result.error) and "agent start" not in fake.sent
