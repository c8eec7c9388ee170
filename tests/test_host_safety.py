"""What real NixOS hosts do beside a deploy, on lab hosts: nixos-rebuild's suffixed switch
unit, autoUpgrade's scheduled reboot, an activation that prints a status line and cuts the
stream, a switch by someone else before an --all-or-nothing undo, and the build's GC root."""

from __future__ import annotations

import json
from pathlib import Path

from tests.lab import (
    CONFIRM,
    Background,
    Deploy,
    Host,
    deploy,
    fixture_flake_with,
    system_of,
    wait_for,
)

PROFILE = "/nix/var/nix/profiles/system"

# Configurations of a copy of the fixture flake, for these tests alone (a change to the lab's
# own flake would rebuild the shared image).
EXTRA_CONFIGS = r"""
        # activation prints a line like the agent's status line (outcome: activated), then
        # cuts every ssh session and fails: the host rolls back
        forged-status = mkSystem {
          hostName = "forged-status";
          activationExtra = ''
            printf '@@deploy-flake-state\tactivated\t\t\tunit\t\t\t\t\n'
            sleep 2
            pkill -KILL -f '^sshd: .*(@notty|\[priv\])' || :
            exit 1
          '';
        };
        # healthy; its build takes about 8 s
        slow-good = mkSystem { hostName = "slow-good"; extraDeps = [ (fx.slowDrv 8) ]; };
"""


def _flake(tmp_path: Path) -> Path:
    return fixture_flake_with(tmp_path, EXTRA_CONFIGS)


def test_refused_while_nixos_rebuilds_switch_unit_with_a_suffix_runs(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.ssh("systemd-run --unit=nixos-rebuild-switch-to-configuration-9767bc07 sleep 120")
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://alpha/good")["error"])
    assert (
        "another switch is in progress on this host: "
        "nixos-rebuild-switch-to-configuration-9767bc07.service is active"
    ) in err, err
    alpha.ssh("systemctl stop nixos-rebuild-switch-to-configuration-9767bc07.service")
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_refused_while_a_reboot_is_scheduled(hosts: dict[str, Host]) -> None:
    """system.autoUpgrade.allowReboot: `nixos-rebuild boot`, then `shutdown -r +1`."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.ssh("shutdown -r +10")
    try:
        r = deploy("nixos://alpha/good")
    finally:
        alpha.ssh("shutdown -c")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://alpha/good")["error"])
    assert "a reboot is scheduled on this host for 20" in err, err
    assert "(/run/systemd/shutdown/scheduled)" in err and "shutdown -c" in err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1
    r = deploy("nixos://alpha/good")  # cancelled: it goes ahead
    assert r.returncode == 0, r.output


def test_a_status_line_printed_by_the_activation_is_no_outcome_when_the_stream_is_cut(
    hosts: dict[str, Host], tmp_path: Path
) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("--flake", str(_flake(tmp_path)), "nixos://alpha/forged-status")
    res = r.host("nixos://alpha/forged-status")
    assert r.returncode == 3, r.output
    assert res["outcome"] == "rolled-back", res
    assert "switch-to-configuration test failed (exit 2)" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == before and alpha.generations() == 1


def _committed_by_someone_else(host: Host, system: str) -> str:
    """Another tool's commit: a new generation of the profile, of SYSTEM."""
    host.ssh(f"nix-env -p {PROFILE} --set {system}")
    return host.out(f"readlink {PROFILE}")


def _built_on(host: Host, config: str) -> str:
    """The lab flake's CONFIG, built in the host's store (from the image's copy of the flake)."""
    attr = f"path:/var/lib/lab-fixture#nixosConfigurations.{config}.config.system.build.toplevel"
    out = host.out(f"nix --extra-experimental-features 'nix-command flakes' build --no-link --json {attr}")
    return str(json.loads(out)[0]["outputs"]["out"])


def test_all_or_nothing_undoes_to_the_generation_the_transaction_replaced(
    hosts: dict[str, Host], tmp_path: Path
) -> None:
    """Someone commits during alpha's long build: the undo goes back to their generation."""
    alpha, beta = hosts["alpha"], hosts["beta"]
    base = alpha.current_system()
    good = _built_on(alpha, "good")
    bg = Background(
        "--flake",
        str(_flake(tmp_path)),
        "--all-or-nothing",
        "nixos://alpha/slow-good",
        "nixos://beta/fail-activation",
    )
    bg.wait_output("fixture: slow build step 2/8", timeout=120)
    theirs = _committed_by_someone_else(alpha, good)
    assert theirs == "system-2-link"
    r = bg.finish()
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/slow-good")
    assert res["outcome"] == "rolled-back", res
    assert "rolled back by --all-or-nothing to generation 2" in str(res["error"]), res
    assert alpha.out(f"readlink {PROFILE}") == "system-2-link", (
        "their generation, not the one seen at connect"
    )
    alpha.assert_clean_after(running=good, boot=good)
    beta.assert_clean_after(running=base, boot=base)


def test_all_or_nothing_leaves_a_profile_that_moved_on_since_the_commit(hosts: dict[str, Host]) -> None:
    """alpha is committed; while beta still waits for its confirmation, someone commits on
    alpha: the undo refuses that host, and says so."""
    alpha, beta = hosts["alpha"], hosts["beta"]
    base = alpha.current_system()
    bg = Background(CONFIRM, "--all-or-nothing", "nixos://alpha/good", "nixos://beta/lockout")
    assert wait_for(lambda: alpha.out(f"readlink {PROFILE}") == "system-2-link", 120), bg.output()
    assert bg.proc.poll() is None, bg.output()
    theirs = _committed_by_someone_else(alpha, base)
    assert theirs == "system-3-link"
    r: Deploy = bg.finish()
    assert r.returncode == 4, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "unknown", res
    err = str(res["error"])
    assert (
        "the system profile moved on since this run committed system-2-link: it is now system-3-link" in err
    )
    assert "not rolled back" in err and "deploy-flake status nixos://alpha/good" in err
    assert alpha.out(f"readlink {PROFILE}") == "system-3-link", "their commit stays"
    good = system_of(res)
    assert alpha.current_system() == good
    beta.assert_clean_after(running=base, boot=base)


def test_the_gc_root_is_roots_and_goes_on_every_path(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    # one a deployer left two days ago (it lost the host before its transaction started)
    alpha.ssh(
        "mkdir -p -m 0700 /run/deploy-flake/gcroots && "
        f"ln -s {before} /run/deploy-flake/gcroots/20261201T000000-abcdef-0.system && "
        "touch -h -d '2 days ago' /run/deploy-flake/gcroots/20261201T000000-abcdef-0.system"
    )
    bg = Background("nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    (root,) = alpha.gc_roots()  # the stale one is gone, this deploy's is there
    assert root.endswith("-0.system") and "20261201T000000" not in root
    assert alpha.out("stat -c '%U %a' /run/deploy-flake/gcroots") == "root 700"
    assert alpha.out(f"readlink /run/deploy-flake/gcroots/{root}").endswith("-nixos-system-slow-activation-1")
    r = bg.finish()
    assert r.returncode == 0, r.output
    system = system_of(r.host("nixos://alpha/slow-activation"))
    alpha.assert_clean_after(running=system, boot=system)  # no root left, none in /tmp
    # a host refused before its transaction (the deployer drops the root), and a plan; as a
    # login user that is not root
    r = deploy("nixos://deploy@alpha/precheck-fail")
    assert r.returncode == 1, r.output
    assert alpha.gc_roots() == []
    r = deploy("plan", "nixos://deploy@alpha/good")
    assert r.returncode == 0, r.output
    alpha.assert_clean_after(running=system, boot=system)
