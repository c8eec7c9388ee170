"""The agent's protocol as the deployer reads it: phases, status lines, settings, time budgets."""

from __future__ import annotations

import pytest

from deploy_flake.agent.protocol import (
    Keeper,
    Mode,
    Phase,
    Status,
    final_status,
    format_status,
    parse_status,
)
from deploy_flake.agent.settings import GUARD_MARGIN_S
from deploy_flake.models import Outcome, Stage
from tests.agent_settings import settings as _settings


def test_status_line() -> None:
    s = parse_status(
        "@@deploy-flake-state\trolled-back\t/nix/store/a-old\t/nix/store/b-new\tnone\tchecking\t"
        "system-4-link\t\tthe unit failed"
    )
    assert s is not None
    assert s.phase is Phase.ROLLED_BACK and s.phase.final and s.phase.outcome is Outcome.ROLLED_BACK
    assert s.previous_system == "/nix/store/a-old" and s.new_system == "/nix/store/b-new"
    assert s.reason == "the unit failed" and s.keeper is Keeper.NONE and s.killed_in is Phase.CHECKING
    assert s.replaced == "system-4-link" and s.committed == ""
    assert not s.orphaned  # final: nothing needs to carry it on
    assert parse_status(format_status(s)) == s
    assert parse_status("fixture: hello") is None
    assert parse_status("@@deploy-flake-state\tno-such-phase\t\t\t") is None
    short = parse_status("@@deploy-flake-state\tnone")
    assert short is not None and short.phase is Phase.NONE and short.reason == ""


def test_only_the_last_line_of_an_answer_is_its_status() -> None:
    text = "log line\n@@deploy-flake-state\tchecking\t\t\t\nmore\n@@deploy-flake-state\tactivated\t\t\t\n"
    status = final_status(text)
    assert status is not None and status.phase is Phase.ACTIVATED
    # an activation's output that looks like a status line, and the answer cut after it
    forged = format_status(Status(Phase.ACTIVATED))
    assert final_status(f"log line\n{forged}\nactivating...\n") is None
    assert final_status("") is None


@pytest.mark.parametrize(
    ("phase", "outcome", "stage"),
    [
        (Phase.ACTIVATING, None, Stage.ACTIVATE),
        (Phase.AWAITING_CONFIRMATION, None, Stage.CONFIRM),
        (Phase.COMMITTING, None, Stage.COMMIT),
        (Phase.ROLLING_BACK, None, Stage.ROLLBACK),
        (Phase.ACTIVATED, Outcome.ACTIVATED, None),
        (Phase.FAILED, Outcome.FAILED, None),
        (Phase.ROLLBACK_FAILED, Outcome.UNKNOWN, None),
        (Phase.RESTORE_FAILED, Outcome.UNKNOWN, None),
        (Phase.NONE, None, None),
    ],
)
def test_phase_meaning(phase: Phase, outcome: Outcome | None, stage: Stage | None) -> None:
    assert phase.outcome is outcome and phase.final == (outcome is not None)
    assert phase.stage is stage


def test_settings_travel_by_name() -> None:
    text = _settings(holder="me@laptop\n(evil)\tx").encode().decode()
    lines = dict(line.split("=", 1) for line in text.splitlines())
    assert lines["MODE"] == "test" and lines["ACTIVATION_S"] == "300" and lines["SETTLE_S"] == "5"
    assert lines["HOLDER"] == "me@laptop (evil) x"  # one line, whatever the user or host name holds


@pytest.mark.parametrize("field", ["activation_s", "health_s", "confirm_s", "boot_s"])
def test_settings_refuse_a_zero_limit(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _settings(**{field: 0})
    assert _settings(settle_s=0).settle_s == 0


def test_budgets_shrink_as_the_transaction_advances() -> None:
    s = _settings()
    order = [
        Phase.PENDING,
        Phase.ACTIVATING,
        Phase.CHECKING,
        Phase.AWAITING_CONFIRMATION,
        Phase.COMMITTING,
        Phase.ROLLING_BACK,
    ]
    budgets = [s.remaining_s(p) for p in order]
    assert budgets == sorted(budgets, reverse=True), budgets
    assert s.remaining_s(Phase.ACTIVATED) == 0
    # a late confirmation still leaves time for the commit and a rollback after it
    after_window = s.remaining_s(Phase.AWAITING_CONFIRMATION) - s.confirm_s
    assert after_window >= s.boot_s + 2 * (s.activation_s + s.health_s)
    # a killed transaction's recovery must fit in the unit's stop timeout, which covers it
    assert s.recovery_s() >= 30 + s.boot_s + 2 * (s.activation_s + s.health_s)


@pytest.mark.parametrize(
    ("phase", "keeper", "orphaned"),
    [
        ("checking", "unit", False),
        ("checking", "guard", True),
        ("awaiting-confirmation", "none", True),
        ("rolling-back", "none", True),
        ("activated", "none", False),
        ("none", "none", False),  # no such transaction: nothing to carry on
        ("checking", "", False),  # not said: nothing to act on
        ("checking", "later-keeper", False),
    ],
)
def test_who_carries_a_transaction_on(phase: str, keeper: str, orphaned: bool) -> None:
    s = parse_status(f"@@deploy-flake-state\t{phase}\t\t\t{keeper}\t\t\t\tbecause")
    assert s is not None and s.orphaned is orphaned and s.reason == "because"


def test_the_guard_fires_after_the_confirmation_window_or_the_boot_entry() -> None:
    s = _settings()
    # activation (and its kill grace), the health check, settle, two looks, confirm: then the margin
    assert s.guard_s() == 30 + 300 + 10 + 2 * 60 + 5 + 30 + GUARD_MARGIN_S
    assert s.guard_s() < s.remaining_s(Phase.ACTIVATING)  # well before the deployer would give up
    boot = _settings(mode=Mode.BOOT)
    assert boot.guard_s() == 30 + 120 + 300 + 10 + GUARD_MARGIN_S
