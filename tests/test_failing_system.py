"""A new system that fails on the host (activation, a unit, the boot step) is rolled back.

Each test then checks the host itself: a fresh SSH login works, the previous system runs,
the boot entry was not moved, no transaction unit or lock is left, a clean deploy works."""

from __future__ import annotations

from tests.lab import Host, clean_deploy_works, deploy


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
    clean_deploy_works(alpha, "nixos://alpha/good")


def test_hanging_activation_is_stopped_and_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("--activation-timeout=4s", "nixos://alpha/hang-activation")
    assert r.returncode == 3, r.output
    assert "did not finish within 4s" in str(r.host("nixos://alpha/hang-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.ssh("systemctl is-active fixture-hang.service", check=False).stdout.strip() != "active"
    clean_deploy_works(alpha, "nixos://alpha/good")


def test_unit_failing_after_activation_rolls_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/fail-after-activation")
    assert r.returncode == 3, r.output
    assert "fixture-fails-later.service" in str(r.host("nixos://alpha/fail-after-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)


def test_crash_looping_service_is_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/crash-loop")
    assert r.returncode == 3, r.output
    err = str(r.host("nixos://alpha/crash-loop")["error"])
    assert "crashing and restarting: fixture-crash-loop.service" in err, err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.ssh("systemctl is-active fixture-crash-loop.service", check=False).stdout.strip() != "active"
    assert alpha.generations() == 1


def test_failing_boot_step_puts_everything_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before, profile = alpha.current_system(), alpha.profile()
    r = deploy("nixos://alpha/fail-boot")
    assert r.returncode == 3, r.output
    assert "switch-to-configuration boot failed: no space on /boot" in str(
        r.host("nixos://alpha/fail-boot")["error"]
    )
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == profile and alpha.generations() == 1
    clean_deploy_works(alpha, "nixos://alpha/good")
