"""The guard outside the transaction's unit: a unit killed whole (its ExecStopPost along with it,
as systemd 262 does), a killed recovery, a frozen unit: the host still ends on its previous
system, and the deployer says what happened without waiting out the transaction's budget."""

from __future__ import annotations

import time

import pytest

from tests.conftest import suite_host
from tests.lab import Background, Host, deploy, wait_for

CONFIRM = "--confirm-timeout=10s"
# Every process of every deploy-flake service on the host (an admin's kill, systemd-oomd):
# the transaction's unit, its ExecStopPost, and the guard's service when it runs.
KILL_ALL = "systemctl kill -s KILL 'deploy-flake-*.service'"
# The deployer must not wait for the transaction's whole worst-case budget (most of an hour
# with these timeouts): the guard acts at once, the deployer follows it.
PROMPT_S = 150


@pytest.fixture
def sid() -> Host:
    """A clean host of Debian sid: systemd 262, which kills a unit's ExecStopPost with it."""
    host = suite_host("sid")
    version = host.out("systemctl --version | head -n 1")
    assert version.startswith("systemd 262 "), f"sid now has {version!r}: say so in the docstrings"
    return host


def _state(host: Host) -> tuple[str, str, int]:
    return host.current_system(), host.profile(), host.generations()


@pytest.mark.parametrize(
    ("phase", "config", "extra"),
    [
        ("activating", "slow-activation", ()),
        ("checking", "lockout", ("--settle-time=15s",)),
        ("awaiting-confirmation", "lockout", ()),
        ("committing", "slow-boot", ()),
    ],
)
def test_a_unit_killed_whole_is_rolled_back_by_its_guard(
    sid: Host, phase: str, config: str, extra: tuple[str, ...]
) -> None:
    before, profile, generations = _state(sid)
    dest = f"nixos://{sid.name}/{config}"
    t0 = time.monotonic()
    bg = Background(CONFIRM, *extra, dest)
    bg.wait_output(f"state: {phase}", timeout=120)
    sid.console(KILL_ALL)  # the console: the lockout has stopped sshd
    r = bg.finish(timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 3, r.output
    res = r.host(dest)
    assert f"the activation unit was stopped before the deploy was confirmed (state {phase})" in str(
        res["error"]
    ) or ("the activation unit stopped in state committing" in r.output and phase == "committing"), res
    assert "guard: the activation unit is gone" in r.output, r.output
    if "the transaction's unit was killed" in r.output:  # unless the guard was done before a look
        assert f"the transaction's unit was killed on {sid.name} while it was {phase}:" in r.output, r.output
    assert took < PROMPT_S, f"{took:.0f}s:\n{r.output}"
    sid.assert_clean_after(running=before, boot=before)
    assert _state(sid) == (before, profile, generations)


def _rollback_killed_too(host: Host, recovery: str) -> tuple[str, str]:
    """A lockout killed in `checking`, then the units matching RECOVERY killed mid-rollback (the
    previous system's re-activation is slow); the deploy's output and its destination."""
    assert deploy(f"nixos://{host.name}/slow-activation").returncode == 0
    before, profile, generations = _state(host)
    dest = f"nixos://{host.name}/lockout"
    t0 = time.monotonic()
    bg = Background(CONFIRM, "--settle-time=15s", dest)
    bg.wait_output("state: checking", timeout=120)
    host.console(KILL_ALL)
    bg.wait_output("state: rolling-back", timeout=60)
    time.sleep(1)  # into the previous system's (slow) activation
    host.console(f"systemctl kill -s KILL '{recovery}'")
    r = bg.finish(timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 3, r.output
    assert "the activation unit was stopped before the deploy was confirmed" in str(r.host(dest)["error"])
    assert took < PROMPT_S, f"{took:.0f}s:\n{r.output}"
    host.assert_clean_after(running=before, boot=before)
    assert _state(host) == (before, profile, generations)
    return r.output, dest


def test_a_killed_unit_and_its_killed_guard_are_rescued_by_the_deployer(sid: Host) -> None:
    """systemd 262: the first kill takes the ExecStopPost along, the guard recovers, the second
    kill takes the guard: nothing carries the transaction on until the deployer starts the
    guard again over the connection it still has."""
    out, _ = _rollback_killed_too(sid, "deploy-flake-*-guard.service")
    assert f"the transaction's unit was killed on {sid.name} while it was checking" in out, out
    assert "asking the host to start its guard" in out, out
    assert "the deployer found nothing carrying the transaction on" in out, out


def test_a_killed_unit_and_its_killed_recovery_end_rolled_back_on_systemd_252(
    hosts: dict[str, Host],
) -> None:
    """systemd 252: the first kill leaves the ExecStopPost to recover, the second kills it;
    the guard (the unit's OnFailure=) finishes the rollback."""
    out, _ = _rollback_killed_too(hosts["alpha"], "deploy-flake-*.service")  # its ExecStopPost
    assert "guard: the activation unit is gone" in out, out


@pytest.mark.parametrize(("config", "returncode"), [("good", 0), ("lockout", 3)])
def test_a_deploy_whose_guard_was_stopped_ends_as_without_it(sid: Host, config: str, returncode: int) -> None:
    before, profile, generations = _state(sid)
    dest = f"nixos://{sid.name}/{config}"
    bg = Background(CONFIRM, "--settle-time=8s", dest)
    bg.wait_output("state: checking", timeout=120)
    assert sid.console("systemctl list-timers --all --plain --no-legend 'deploy-flake-*-guard.timer'").strip()
    sid.console("systemctl stop 'deploy-flake-*-guard.timer'")
    r = bg.finish(timeout=300)
    assert r.returncode == returncode, r.output
    res = r.host(dest)
    if returncode == 0:
        system = res["system"]
        assert isinstance(system, str)
        sid.assert_clean_after(running=system, boot=system)
        assert sid.generations() == generations + 1
    else:
        assert "no confirmation over a new SSH connection" in str(res["error"]), res
        sid.assert_clean_after(running=before, boot=before)
        assert _state(sid) == (before, profile, generations)


def test_a_frozen_transaction_is_stopped_by_its_guard_timer(sid: Host) -> None:
    """A unit that neither dies nor moves on (frozen) is stopped by the guard once its timer
    fired and the phase lasted longer than it may: its ExecStopPost then rolls back."""
    before, profile, generations = _state(sid)
    dest = f"nixos://{sid.name}/lockout"
    bg = Background(
        "--confirm-timeout=5s", "--activation-timeout=5s", "--health-timeout=5s", "--settle-time=2s", dest
    )
    bg.wait_output("state: awaiting-confirmation", timeout=120)
    units = "systemctl list-units --plain --no-legend 'deploy-flake-*.service' | cut -d' ' -f1"
    sid.console(f"systemctl freeze $({units})")
    r = bg.finish(timeout=400)
    assert r.returncode == 3, r.output
    assert "guard: the activation unit is still awaiting-confirmation" in r.output, r.output
    sid.assert_clean_after(running=before, boot=before)
    assert _state(sid) == (before, profile, generations)
    assert wait_for(lambda: not sid.deploy_units(), 15)
