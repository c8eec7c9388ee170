"""When the way back fails too: retried once, then reported unknown with the repair command.

A failing rollback or boot-entry restore is tried again once; after that the host is
reported unknown with the command that repairs it, or, with --on-rollback-failure=reboot,
rebooted into its untouched old boot entry (an nspawn reboot: a new boot id, the boot
entry's system activated at boot). The rollback runs the previous system's own tools,
never the failed one's."""

from __future__ import annotations

from tests.lab import BOOT_ID, Host, deploy, notes


def test_a_failed_rollback_is_retried_once(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.inject_fault("test", before, 1)
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 3, r.output
    assert "(attempt 2)" in r.output
    alpha.assert_clean_after(running=before, boot=before)


def test_a_rollback_that_fails_twice_is_unknown_with_the_commands(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    boot = alpha.out(BOOT_ID)
    alpha.inject_fault("test", before, 2)
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 4, r.output
    assert alpha.out(BOOT_ID) == boot, "the default (--on-rollback-failure=report) never reboots"
    res = r.host("nixos://alpha/fail-activation")
    assert res["outcome"] == "unknown" and res["previous_system"] == before
    command = f"{before}/bin/switch-to-configuration test"
    assert command in str(res["error"]), res["error"]
    assert alpha.boot_default() == before  # the boot entry was never touched
    alpha.ssh(command, check=False)
    alpha.ssh("systemctl reset-failed")
    alpha.assert_clean_after(running=before, boot=before)


def test_a_rollback_that_fails_twice_reboots_into_the_old_boot_entry_when_asked(
    hosts: dict[str, Host],
) -> None:
    alpha = hosts["alpha"]
    before, profile, boot = alpha.current_system(), alpha.profile(), alpha.out(BOOT_ID)
    alpha.inject_fault("test", before, 2)
    r = deploy("--on-rollback-failure=reboot", "nixos://alpha/fail-activation")
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/fail-activation")
    assert res["outcome"] == "rolled-back", res
    err = str(res["error"])
    assert err.startswith("rolled back by a reboot: switch-to-configuration test failed"), err
    assert "failed (exit 1), twice" in err
    assert any(n.startswith("rebooted into the previous system in") for n in notes(res)), res
    assert alpha.out(BOOT_ID) != boot, "the host was rebooted"
    assert alpha.out("readlink -f /run/booted-system") == before
    assert alpha.profile() == profile and alpha.generations() == 1
    alpha.assert_clean_after(running=before, boot=before)


def test_a_boot_entry_restore_that_fails_is_unknown(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before, profile = alpha.current_system(), alpha.profile()
    alpha.inject_fault("boot", before, 1)  # the old system's boot step fails once
    r = deploy("nixos://alpha/fail-boot")
    assert r.returncode == 4, r.output
    res = r.host("nixos://alpha/fail-boot")
    err = str(res["error"])
    assert res["outcome"] == "unknown"
    assert "writing the previous boot entry again failed" in err and "switch-to-configuration boot" in err
    # the running system is back; the profile link is back; the new generation's link stays
    # (a GC root of the system the boot loader may still name) until the boot entry is rewritten
    assert alpha.current_system() == before and alpha.profile() == profile
    assert alpha.generations() == 2
    assert alpha.out("ls /nix/var/nix/profiles/system-2-link >/dev/null && echo kept") == "kept"
    # the command the message gives repairs it
    alpha.ssh("/nix/var/nix/profiles/system/bin/switch-to-configuration boot")
    alpha.assert_clean_after(running=before, boot=before)


def test_rollback_uses_the_tools_of_the_previous_system(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/broken-tools")
    assert r.returncode == 3, r.output
    assert "must not be used" not in r.output  # none of its tools was run
    alpha.assert_clean_after(running=before, boot=before)
