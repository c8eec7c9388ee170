"""The transaction's own unit killed on the host (an OOM kill, an admin): still rolled back.

In every phase its recovery puts the previous system back; when that recovery never ran, the
next deploy finishes the killed one first. (The guard outside the unit, systemd 262's harder
kills and a frozen unit are test_guard.py's.)"""

from __future__ import annotations

import re
import signal

import pytest

from tests.lab import CONFIRM, Background, Host, clean_deploy_works, deploy, system_of, wait_for


def test_killed_transaction_unit_still_rolls_back(hosts: dict[str, Host]) -> None:
    """Even the agent's own unit being killed (OOM, an admin) cannot leave the host half-switched."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    alpha.ssh("systemctl kill --signal=SIGKILL 'deploy-flake-*.service'")
    r = bg.finish()
    assert r.returncode == 3, r.output
    assert "the activation unit was stopped" in str(r.host("nixos://alpha/slow-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)
    clean_deploy_works(alpha, "nixos://alpha/good")


def _seconds(systemd_timespan: str) -> int:
    """'21min', '1h 5min 3s', '90s' -> seconds."""
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(h|min|s)\b", systemd_timespan))


@pytest.mark.parametrize(
    ("phase", "config", "extra", "first"),
    [
        ("activating", "slow-activation", (), None),
        ("checking", "good", ("--settle-time=8s",), None),
        # the deploy user cannot confirm once sudo asks for a password; root can still look
        ("awaiting-confirmation", "deploy@alpha/break-sudo", (), None),
        ("committing", "slow-boot", (), None),
        ("rolling-back", "fail-activation", (), "slow-activation"),
    ],
)
def test_transaction_unit_killed_in_each_phase(
    hosts: dict[str, Host], phase: str, config: str, extra: tuple[str, ...], first: str | None
) -> None:
    alpha = hosts["alpha"]
    if first is not None:  # a previous system whose re-activation takes a while
        assert deploy(f"nixos://alpha/{first}").returncode == 0
    before, profile, gens = alpha.current_system(), alpha.profile(), alpha.generations()
    dest = f"nixos://{config}" if "@" in config else f"nixos://alpha/{config}"
    bg = Background(CONFIRM, *extra, dest)
    bg.wait_output(f"state: {phase}", timeout=90)
    stop_timeout = alpha.out("systemctl show -p TimeoutStopUSec --value 'deploy-flake-*.service'")
    # the unit's stop timeout covers the longest recovery: lock wait, restore, rollback twice
    assert _seconds(stop_timeout) >= 30 + 120 + 300 + 2 * (300 + 60), stop_timeout
    alpha.kill_transactions()
    r = bg.finish()
    assert r.returncode == 3, r.output
    res = r.host(dest)
    assert "the activation unit was stopped" in str(res["error"]), res
    assert res["previous_system"] == before
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == profile and alpha.generations() == gens


def test_a_new_deploy_first_finishes_a_killed_one(hosts: dict[str, Host]) -> None:
    """The killed unit's recovery never ran (as when a new deploy takes the lock first):
    the next deploy rolls it back before it starts, and records the right previous system."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    bg.signal(signal.SIGKILL)
    bg.finish()
    # no ExecStopPost recovery, no guard: their script is gone when the unit dies
    alpha.ssh("mv /run/deploy-flake/agent-*.sh /run/deploy-flake/hidden")
    alpha.kill_transactions()
    # nothing runs any more but the guard's timer, waiting (its service found no script either)
    live = "systemctl list-units --plain --no-legend --state=active,activating,deactivating 'deploy-flake-*'"

    def left() -> list[str]:
        return [line.split()[0].rsplit("-", 1)[-1] for line in alpha.out(live).splitlines()]

    assert wait_for(lambda: left() == ["guard.timer"], 30), left()
    assert set(alpha.transaction_states().values()) == {"activating"}
    r = deploy("nixos://alpha/good")
    assert r.returncode == 0, r.output
    assert "finishing the earlier deploy" in r.output
    assert "an earlier deploy's units failed" in r.output  # its guard's service: not the system's health
    res = r.host("nixos://alpha/good")
    assert res["previous_system"] == before  # not the half-activated slow-activation
    good = system_of(res)
    alpha.assert_clean_after(running=good, boot=good)
    assert sorted(alpha.transaction_states().values()) == ["activated", "rolled-back"]
    assert alpha.generations() == 2
