"""Lockout protection: a system that shuts the deployer out is rolled back by the host itself.

No confirmation over a new SSH connection (sshd gone, sudo broken) within the window: the host
goes back on its own; a system without sshd is refused before it is activated."""

from __future__ import annotations

import time

import pytest

from tests.lab import CONFIRM, SUDO_USER, Host, clean_deploy_works, deploy


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
    clean_deploy_works(beta, "nixos://beta/good")


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


def test_a_configuration_that_breaks_sudo_is_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy(CONFIRM, "nixos://deploy@alpha/break-sudo")
    assert r.returncode == 3, r.output
    res = r.host("nixos://deploy@alpha/break-sudo")
    assert res["outcome"] == "rolled-back" and "no confirmation" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.ssh("sudo -n true", user="deploy", check=False).returncode == 0


# Each configuration takes away, from the system's etc as NixOS would, one thing a fresh login
# of the deployer needs; the login that needs it deploys it.
TAKEN = [
    ("no-key", "deploy", "test ! -e /etc/ssh/authorized_keys.d/deploy"),
    ("no-wheel", "deploy", "! id -nG deploy | grep -qw wheel"),
    ("no-root-login", "root", "grep -qx 'PermitRootLogin no' /etc/ssh/sshd_config"),
    ("other-port", "root", "grep -qx 'Port 2222' /etc/ssh/sshd_config"),
]


@pytest.mark.parametrize(("config", "login", "taken"), TAKEN, ids=[t[0] for t in TAKEN])
def test_a_configuration_that_takes_the_login_away_is_rolled_back(
    hosts: dict[str, Host], config: str, login: str, taken: str
) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    dest = f"nixos://{login}@alpha/{config}"
    r = deploy(CONFIRM, dest)
    assert r.returncode == 3, r.output
    res = r.host(dest)
    assert res["outcome"] == "rolled-back", res
    assert "no confirmation over a new SSH connection" in str(res["error"]), res
    activated = alpha.out(f"grep -c -- '-nixos-system-{config}-1$' /run/fixture-nixos/history || true")
    assert activated != "0", "the configuration was never activated"
    alpha.assert_clean_after(running=before, boot=before)
    # the old system's etc is back: every login, its key, sudo and sshd's settings
    assert alpha.ssh(taken, check=False).returncode != 0, f"{config}: the change is still there"
    for user in ("root", "deploy", SUDO_USER):
        assert alpha.ssh("true", user=user, check=False).returncode == 0, f"{user} cannot log in"
    assert alpha.ssh("sudo -n true", user="deploy", check=False).returncode == 0
    assert alpha.out("grep -x 'Port 22' /etc/ssh/sshd_config") == "Port 22"
