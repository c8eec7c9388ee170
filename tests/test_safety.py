"""Rollback, timeouts and lockout protection, each checked on the host afterwards:
a fresh SSH login works, the right system runs, the boot default was not touched,
no transaction unit or lock is left behind, and a clean deploy works again."""

from __future__ import annotations

import re
import signal
import time

from tests.lab import Background, Host, deploy, lab, wait_for

CONFIRM = "--confirm-timeout=6s"


def _clean_deploy_works(host: Host, dest: str) -> None:
    r = deploy(dest)
    assert r.returncode == 0, r.output
    system = r.host(dest)["system"]
    assert isinstance(system, str)
    host.assert_clean_after(running=system, boot=system)


def test_failing_activation_rolls_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 3
    res = r.host("nixos://alpha/fail-activation")
    assert res["outcome"] == "rolled-back" and res["previous_system"] == before
    assert "verified over a new SSH connection" in r.output
    alpha.assert_clean_after(running=before, boot=before)
    assert "fixture-failing.service" not in alpha.failed_units()
    _clean_deploy_works(alpha, "nixos://alpha/good")


def test_hanging_activation_is_stopped_and_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("--activation-timeout=4s", "nixos://alpha/hang-activation")
    assert r.returncode == 3, r.output
    assert "did not finish within 4s" in str(r.host("nixos://alpha/hang-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.ssh("systemctl is-active fixture-hang.service", check=False).stdout.strip() != "active"
    _clean_deploy_works(alpha, "nixos://alpha/good")


def test_unit_failing_after_activation_rolls_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/fail-after-activation")
    assert r.returncode == 3, r.output
    assert "fixture-fails-later.service" in str(r.host("nixos://alpha/fail-after-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)


def test_lockout_rolls_back_by_itself(hosts: dict[str, Host]) -> None:
    beta = hosts["beta"]
    before = beta.current_system()
    t0 = time.monotonic()
    r = deploy(CONFIRM, "nixos://beta/lockout")
    elapsed = time.monotonic() - t0
    assert r.returncode == 3, r.output
    res = r.host("nixos://beta/lockout")
    assert res["outcome"] == "rolled-back"
    assert "no confirmation over a new SSH connection within 6s" in str(res["error"])
    assert "cannot log in to beta over a new SSH connection" in r.output
    beta.assert_clean_after(running=before, boot=before)
    assert beta.out("systemctl is-active sshd.service") == "active"
    assert elapsed < 6 + 30, f"sshd came back only after {elapsed:.0f}s"
    _clean_deploy_works(beta, "nixos://beta/good")


def test_config_without_sshd_is_refused(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/no-sshd")
    assert r.returncode == 1
    err = str(r.host("nixos://alpha/no-sshd")["error"])
    assert "does not have sshd" in err and "--skip-check=sshd" in err
    alpha.assert_clean_after(running=before, boot=before)


def test_skipping_the_sshd_check_still_cannot_lock_you_out(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy(CONFIRM, "--skip-check=sshd", "nixos://alpha/no-sshd")
    assert r.returncode == 3, r.output
    alpha.assert_clean_after(running=before, boot=before)


def test_other_sanity_checks(hosts: dict[str, Host]) -> None:
    r = deploy("nixos://alpha/wrong-system")
    assert r.returncode == 1
    assert "--skip-check=system-type" in str(r.host("nixos://alpha/wrong-system")["error"])


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
    _clean_deploy_works(alpha, "nixos://alpha/good")
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


def test_network_cut_during_activation(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    lab("net", "alpha", "down")
    try:
        time.sleep(6 + 6 + 5)  # the activation, the confirmation window, and a margin
    finally:
        lab("net", "alpha", "up")
    r = bg.finish()
    assert r.returncode == 3, r.output
    assert "no confirmation" in str(r.host("nixos://alpha/slow-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)
    _clean_deploy_works(alpha, "nixos://alpha/good")


def test_host_powered_off_mid_activation_is_reported_unknown_within_the_contact_window(
    hosts: dict[str, Host],
) -> None:
    """A host that stops answering for good is not waited for the transaction's whole
    worst-case budget (an hour): the deployer says at once that it lost contact, keeps
    trying for the contact window (60 s here), then reports it unknown."""
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    lab("stop", "alpha")
    r = bg.finish(timeout=240)
    assert r.returncode == 4, r.output
    assert "no answer from alpha while it is activating: its transaction goes on by itself" in r.output
    err = str(r.host("nixos://alpha/slow-activation")["error"])
    assert re.search(r"no answer from alpha for \d+s while it was activating", err), err
    assert "returns to its previous system by itself" in err, err


def test_two_concurrent_deploys_to_one_host(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    first = Background("nixos://alpha/slow-activation")
    first.wait_output("state: activating")
    second = deploy("nixos://alpha/good")
    assert second.returncode == 1, second.output
    err = str(second.host("nixos://alpha/good")["error"])
    assert "another deploy is in progress on this host" in err and "slow-activation" not in err
    assert "@" in err  # names the holder: user@machine and the deploy id
    r = first.finish()
    assert r.returncode == 0, r.output
    system = r.host("nixos://alpha/slow-activation")["system"]
    assert isinstance(system, str)
    alpha.assert_clean_after(running=system, boot=system)


def test_failing_boot_step_puts_everything_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before, profile = alpha.current_system(), alpha.profile()
    r = deploy("nixos://alpha/fail-boot")
    assert r.returncode == 3, r.output
    assert "switch-to-configuration boot failed" in str(r.host("nixos://alpha/fail-boot")["error"])
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == profile and alpha.generations() == 1
    _clean_deploy_works(alpha, "nixos://alpha/good")


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
    _clean_deploy_works(alpha, "nixos://alpha/good")
