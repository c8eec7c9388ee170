"""The deployer interrupted mid-deploy (Ctrl-C, SIGKILL): the host ends on a confirmed system.

Before the commit it rolls back, by itself or when asked; after the commit it keeps the new
system; the report is written whenever the deployer lives to write it."""

from __future__ import annotations

import signal

from tests.lab import CONFIRM, Background, Host, clean_deploy_works, system_of, wait_for


def _killed_during(
    hosts: dict[str, Host], sig: signal.Signals, config: str, wait_for_text: str, expected_rc: int
) -> str:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, f"nixos://alpha/{config}")
    bg.wait_output(wait_for_text)
    bg.signal(sig)
    r = bg.finish()
    if expected_rc >= 0:
        assert r.returncode == expected_rc, r.output
    # the host rolls back by itself (SIGKILL) or on request (SIGINT)
    assert wait_for(lambda: alpha.reachable() and alpha.current_system() == before, 60), (
        alpha.current_system()
    )
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1
    clean_deploy_works(alpha, "nixos://alpha/good")
    return r.output


def test_deployer_killed_during_activation(hosts: dict[str, Host]) -> None:
    _killed_during(hosts, signal.SIGKILL, "slow-activation", "state: activating", -1)


def test_deployer_killed_while_waiting_for_confirmation(hosts: dict[str, Host]) -> None:
    _killed_during(hosts, signal.SIGKILL, "lockout", "state: awaiting-confirmation", -1)


def test_ctrl_c_during_activation(hosts: dict[str, Host]) -> None:
    out = _killed_during(hosts, signal.SIGINT, "slow-activation", "state: activating", 3)
    assert "interrupted: asking the host to roll back" in out
    assert out.count("state: activating") == 1  # the log goes on where it was, not from the start
    assert "rolled-back" in out


def test_ctrl_c_while_waiting_for_confirmation(hosts: dict[str, Host]) -> None:
    out = _killed_during(hosts, signal.SIGINT, "lockout", "state: awaiting-confirmation", 3)
    assert "interrupted" in out


def test_ctrl_c_while_systemd_run_starts_the_transaction(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    # a slow systemd-run, in place of the real one that the agent's PATH leads to
    alpha.wrap_tool("systemd-run", 'touch /run/fixture-systemd-run-called; sleep 4; exec "$REAL" "$@"')
    bg = Background(CONFIRM, "nixos://alpha/good")
    called = "test -e /run/fixture-systemd-run-called"
    assert wait_for(lambda: alpha.ssh(called, check=False).returncode == 0, 90)
    bg.signal(signal.SIGINT)
    r = bg.finish()
    assert r.returncode == 1, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "failed" and "before anything was changed" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert set(alpha.transaction_states().values()) == {"failed"}
    assert alpha.generations() == 1


def test_ctrl_c_during_the_commit_keeps_the_confirmed_system(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    bg = Background(CONFIRM, "nixos://alpha/slow-boot")
    bg.wait_output("state: committing")
    bg.signal(signal.SIGINT)
    r = bg.finish()
    assert r.returncode == 0, r.output
    res = r.host("nixos://alpha/slow-boot")
    assert res["outcome"] == "activated"
    assert "already committed" in r.output
    system = system_of(res)
    alpha.assert_clean_after(running=system, boot=system)
    assert alpha.profile() == system and alpha.generations() == 2


def test_interrupted_twice_still_writes_the_report(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    bg.signal(signal.SIGINT)
    bg.wait_output("interrupted: asking the host to roll back")
    bg.signal(signal.SIGINT)
    r = bg.finish(timeout=60)
    assert r.returncode == 130, r.output
    assert "interrupted twice" in r.output and "Traceback" not in r.output
    res = r.host("nixos://alpha/slow-activation")
    assert res["outcome"] in ("unknown", "rolled-back"), res
    # the host finishes on its own
    assert wait_for(lambda: set(alpha.transaction_states().values()) == {"rolled-back"}, 60)
    alpha.assert_clean_after(running=before, boot=before)
