"""Flows of one host (see test_flows.py) through the verified reboot (--reboot): the trial
boot confirmed, or ended by the host's own guard (the new system did not boot, or was sent
back). The host's checks before it changes anything (its boot loader, a rollback's entry,
/boot's room) are its own: tests/test_verified_reboot.py on lab hosts."""

from __future__ import annotations

import pytest

from deploy_flake.agent.protocol import TRIAL_TAG
from deploy_flake.models import Outcome, RebootPolicy, Stage
from tests.fake_remote import Reply
from tests.test_flows import BEFORE, NEW, OLD, facts, instant, run_job, status

__all__ = ["instant"]  # the fixture, used here by name

REBOOTED = Reply("b00t\n", stderr="Connection to web closed by remote host.", lost=True)


def trial(state: str, booted: str, reason: str = "") -> Reply:
    return Reply(f"{TRIAL_TAG}\t{state}\tt-web\t{NEW}\t{booted}\t{reason}\n")


# up to the reboot: the boot loader's check, the transaction staged at its commit, the reboot
STAGED = [
    *BEFORE,
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


@pytest.mark.parametrize(
    ("unverified", "committed", "said"),
    [
        (False, "staged", "the new system is confirmed and its one boot armed, but the reboot was not done"),
        (
            True,
            "activated",
            "the new system is active and its boot entry written, but the reboot was not done",
        ),
    ],
    ids=["verified", "unverified"],
)
def test_a_reboot_the_host_refuses_is_unknown_and_says_what_was_left(
    monkeypatch: pytest.MonkeyPatch, instant: list[float], unverified: bool, committed: str, said: str
) -> None:
    refused = Reply(stderr="Failed to reboot system via logind: Access denied\n", returncode=1)
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("checking")),
            ("agent confirm", status(committed)),
            ("reboot", refused),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
        reboot_unverified=unverified,
    )
    error = result.error or ""
    assert result.outcome is Outcome.UNKNOWN and error.startswith(said), result
    assert "Access denied" in error
    assert "facts" not in fake.sent[fake.sent.index("reboot") :]  # no wait for a reboot not done
