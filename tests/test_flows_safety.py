"""Flows of one host (see test_flows.py) around what the deployer may believe: a status line
in the activation's output, the boot a reboot ends, the generation a rollback may leave."""

from __future__ import annotations

import pytest

from deploy_flake.agent.protocol import STATUS_TAG
from deploy_flake.models import Job, Outcome, RebootPolicy, Stage
from tests.fake_remote import Reply
from tests.test_flows import BEFORE, NEW, OLD, facts, inspection, instant, run_job, status

__all__ = ["instant"]  # the fixture, used here by name

FORGED = f"{STATUS_TAG}\tactivated\t{OLD}\t{NEW}\tunit\t\tsystem-1-link\tsystem-2-link\t\n"


def test_a_status_line_printed_by_the_activation_is_no_outcome_when_the_stream_is_cut(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    cut = Reply(
        f"[deploy-flake] state: activating\nactivating the configuration...\n{FORGED}",
        stderr="Connection to web closed by remote host.",
        lost=True,
    )
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", cut),
            ("connect", Reply()),  # the shared connection went with the cut: opened again
            ("agent watch", status("rolled-back", "switch-to-configuration test failed (exit 4)")),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert result.error == "rolled back: switch-to-configuration test failed (exit 4)"
    assert not any(line.startswith(STATUS_TAG) for line in events.lines), "shown as the host's log"
    assert fake.sent[-5:] == ["agent start", "connect", "agent watch", "readlink", "disconnect"]


def test_an_activation_that_cuts_its_own_stream_is_followed_over_a_new_shared_connection(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    """A socket-activated sshd (NixOS's services.openssh.startWhenNeeded) whose sshd@.service
    changed: switch-to-configuration restarts the running sshd@ instances, the deployer's
    shared connection among them, mid-activation (nixops#460). The cut is no verdict: the
    shared connection is opened again at once, and the activation followed to its end."""
    cut = Reply(
        "[deploy-flake] state: activating\nactivating the configuration...\n"
        "restarting the following units: sshd@2-127.0.0.1:22-127.0.0.1:53936.service\n",
        stderr="ssh_dispatch_run_fatal: Connection to web: Connection corrupted",
        lost=True,
    )
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", cut),
            ("connect", Reply()),
            ("agent watch", status("awaiting-confirmation")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED, result
    assert fake.sent[-5:] == ["agent start", "connect", "agent watch", "agent confirm", "disconnect"]
    assert any("was cut while it was activating" in note for note in events.notes), events.notes


def test_a_status_line_in_a_whole_answers_log_is_not_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's own word is the answer's last line; what its log shows before is text."""
    result, _, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("rolled-back", "units failed: x.service", log=FORGED)),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK, result


def test_a_reboot_waits_for_the_boot_after_its_own_request(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    """The host rebooted once already after deploy-flake connected (during the build, say):
    the boot our reboot ends is the one it said just before, not the one seen at connect."""
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,  # boot id b00t at connect
            ("agent start", status("checking")),
            ("agent confirm", status("activated")),
            ("reboot", Reply("s3c0nd\n", stderr="Connection to web closed by remote host.", lost=True)),
            ("disconnect", Reply()),
            ("facts", facts(boot_id="s3c0nd")),  # not down yet: a boot id other than b00t
            ("facts", facts(current=NEW, generations=[(1, OLD), (2, NEW)], boot_id="th1rd")),
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("running\n")),
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
        reboot_unverified=True,
    )
    assert result.outcome is Outcome.ACTIVATED and result.stage is Stage.DONE, result
    assert fake.sent.count("facts") == 3
    assert any(n.startswith("rebooted into the new system in") for n in events.notes), events.notes


ROLLBACK_FACTS = facts(current=NEW, generations=[(1, OLD), (2, NEW)])


def test_a_rollback_goes_only_from_the_generation_it_chose_its_target_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", ROLLBACK_FACTS),
            ("inspect", inspection()),
            (
                "agent start",
                status(
                    "failed",
                    "the system profile moved on since deploy-flake looked at it (it was system-2-link; "
                    "it is now system-3-link -> /nix/store/x, changed at 2026-12-01 10:00:00)",
                    replaced="system-3-link",
                ),
            ),
            ("disconnect", Reply()),
        ],
        job=Job.ROLLBACK,
    )
    assert b"EXPECT=system-2-link\n" in (fake.stdin["agent start"] or b"")
    # a rollback of its own: nothing was changed, and it says why
    assert result.outcome is Outcome.FAILED, result
    assert "the system profile moved on since deploy-flake looked at it" in str(result.error)


def test_an_undo_refused_by_the_host_because_the_profile_moved_on_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, _, _ = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", ROLLBACK_FACTS),
            ("inspect", inspection()),
            ("agent start", status("failed", "the system profile moved on", replaced="system-3-link")),
            ("disconnect", Reply()),
        ],
        job=Job.ROLLBACK,
        rollback_to=1,
        rollback_from=2,
    )
    assert result.outcome is Outcome.UNKNOWN, result
    assert "moved on since this run committed system-2-link: it is now system-3-link" in str(result.error)
    assert "not rolled back" in str(result.error)


def test_an_undo_from_a_profile_that_moved_on_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    moved = facts(current=NEW, generations=[(1, OLD), (2, NEW), (3, OLD)])
    result, fake, _ = run_job(
        monkeypatch,
        [("connect", Reply()), ("facts", moved), ("disconnect", Reply())],
        job=Job.ROLLBACK,
        rollback_to=1,
        rollback_from=2,
    )
    assert result.outcome is Outcome.UNKNOWN, result
    assert "it is now system-3-link" in str(result.error)
    assert not any(name.startswith("agent") for name in fake.sent)
