"""Someone else changing the host during a deploy: a second deploy, another switch, a new profile.

The deploy is refused before it changes anything, or rolled back, and the other change is left alone."""

from __future__ import annotations

from tests.lab import CONFIRM, Background, Host, deploy


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


def test_refused_while_another_switch_runs(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.ssh("systemd-run --unit=nixos-upgrade.service sleep 120")
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    assert "another switch is in progress on this host: nixos-upgrade.service is active" in str(
        r.host("nixos://alpha/good")["error"]
    )
    alpha.ssh("systemctl stop nixos-upgrade.service")
    alpha.ssh(
        "mkdir -p /run/nixos && systemd-run -E PATH --unit=other-switch"
        " flock /run/nixos/switch-to-configuration.lock sleep 120"
    )
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    assert "holds /run/nixos/switch-to-configuration.lock" in str(r.host("nixos://alpha/good")["error"])
    alpha.ssh("systemctl stop other-switch.service")
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_profile_changed_during_the_settle_window_rolls_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "--settle-time=8s", "nixos://alpha/good")
    bg.wait_output("state: checking")
    # someone else's switch: a new generation of the profile (here: of the system being tried)
    theirs = alpha.current_system()
    alpha.ssh(f"nix-env -p /nix/var/nix/profiles/system --set {theirs}")
    r = bg.finish()
    assert r.returncode == 3, r.output
    err = str(r.host("nixos://alpha/good")["error"])
    assert "the system profile was changed by someone else during the deploy" in err, err
    assert "system-2-link" in err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == theirs and alpha.generations() == 2  # theirs, untouched
