"""--reboot on lab hosts with systemd-boot as NixOS has it (lab/README.md): the new system is
booted once and made the default only after its confirmed boot; a new system that panics at
boot, or boots without SSH, comes back on the old default by itself and is rolled back.

On nspawn hosts (a reboot takes seconds; a "panic" there is a forced reboot); a kernel that
really panics, on the sid VM, is test_matrix.py's."""

from __future__ import annotations

from tests.lab import BOOT_ID, Host, deploy

GUARD = "/etc/systemd/system.control/deploy-flake-boot-trial.service"
ONESHOT = "/sys/firmware/efi/efivars/LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
# short windows: the guard of a trial boot nobody confirms sends it back within about
# 60 + 2*10 + 2 + 5 + 30 + 10 s of its file systems
FAST = ("--settle-time=2s", "--health-timeout=10s", "--confirm-timeout=5s", "--boot-timeout=30s")


def loader_default(host: Host) -> str:
    return host.out("sed -n 's/^default[[:space:]]*//p' /boot/loader/loader.conf")


def trial_left(host: Host) -> str:
    """What a trial left behind that it should not: its guard unit, a pending one-shot entry."""
    return host.out(f"ls {GUARD} {ONESHOT} 2>/dev/null || true")


def assert_back_on(host: Host, before: str, gens: int, default: str) -> None:
    assert host.current_system() == before == host.out("readlink -f /run/booted-system") == host.profile()
    assert host.generations() == gens and loader_default(host) == default
    assert trial_left(host) == ""
    assert host.system_state() == "running"


def test_a_good_new_kernel_becomes_the_default_only_after_its_confirmed_boot(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    boot, gens = alpha.out(BOOT_ID), alpha.generations()
    r = deploy(*FAST, "--reboot=if-needed", "nixos://alpha/new-kernel")
    assert r.returncode == 0, r.output
    res = r.host("nixos://alpha/new-kernel")
    assert res["outcome"] == "activated", res
    assert "booted the new system once" in r.output and "it is now the default boot entry" in r.output
    assert alpha.out(BOOT_ID) != boot
    new = str(res["system"])
    assert alpha.current_system() == new == alpha.out("readlink -f /run/booted-system") == alpha.profile()
    assert alpha.generations() == gens + 1
    assert loader_default(alpha) == f"nixos-generation-{gens + 1}.conf"
    assert alpha.out("cat /var/lib/deploy-flake/trial/state") == "committed"
    assert trial_left(alpha) == ""


def test_a_new_kernel_that_panics_at_boot_comes_back_on_the_old_default_by_itself(
    hosts: dict[str, Host],
) -> None:
    alpha = hosts["alpha"]
    before, gens, default = alpha.current_system(), alpha.generations(), loader_default(alpha)
    r = deploy(*FAST, "--reboot=if-needed", "nixos://alpha/panic-at-boot")
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/panic-at-boot")
    assert res["outcome"] == "rolled-back", res
    assert "the new system did not boot" in str(res["error"]), res
    assert_back_on(alpha, before, gens, default)


def test_a_new_system_without_ssh_is_sent_back_by_its_guard_even_with_test_skipped(
    hosts: dict[str, Host],
) -> None:
    alpha = hosts["alpha"]
    before, gens, default = alpha.current_system(), alpha.generations(), loader_default(alpha)
    r = deploy(
        *FAST, "--skip-check=sshd", "--test=skip", "--reboot=always", "nixos://alpha/no-sshd", timeout=900
    )
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/no-sshd")
    assert res["outcome"] == "rolled-back", res
    assert "no confirmation within" in str(res["error"]), res
    assert_back_on(alpha, before, gens, default)
    assert alpha.out("systemctl is-active sshd.service") == "active"


def test_a_host_without_a_one_shot_boot_is_refused_unless_unverified(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before, gens = alpha.current_system(), alpha.generations()
    alpha.ssh("mount -t tmpfs none /sys/firmware")  # no EFI variables: no one-shot entry
    r = deploy("plan", "nixos://alpha/good")  # the plan says so first
    assert r.returncode == 0, r.output
    plan = r.host("nixos://alpha/good")["plan"]
    assert isinstance(plan, dict) and isinstance(plan["boot"], dict) and plan["boot"]["loader"] == "none"
    assert "boot loader: none known (--reboot needs --reboot-unverified)" in r.output
    r = deploy("--reboot=always", "nixos://alpha/good")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://alpha/good")["error"])
    assert "boot loader (none) has no one-shot entry" in err and "--reboot-unverified" in err, err
    assert "nothing was changed" in err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == gens
    r = deploy("--reboot=always", "--reboot-unverified", "--settle-time=0", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    assert alpha.current_system() == r.host("nixos://alpha/good")["system"] == alpha.profile()


def test_a_host_whose_systemd_boot_counts_boots_is_refused(hosts: dict[str, Host]) -> None:
    """boot.loader.systemd-boot.bootCounting names entries +TRIES: not used by the one-time
    boot yet, so such a host fails before anything is changed."""
    alpha = hosts["alpha"]
    before, gens = alpha.current_system(), alpha.generations()
    alpha.ssh("cd /boot/loader/entries && mv nixos-generation-1.conf 'nixos-generation-1+3.conf'")
    r = deploy("--reboot=always", "nixos://alpha/good")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://alpha/good")["error"])
    assert "counts boot attempts (entries named like nixos-generation-1+3.conf" in err, err
    assert "nothing was changed" in err and "--reboot-unverified" in err
    assert alpha.out("ls /boot/loader/entries") == "nixos-generation-1+3.conf"
    alpha.ssh("cd /boot/loader/entries && mv 'nixos-generation-1+3.conf' nixos-generation-1.conf")
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == gens


def test_a_rollback_to_a_generation_without_a_boot_entry_is_refused(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    for config in ("good", "new-kernel", "boot-limit-2"):  # generations 2 3 4; entries 3 4
        r = deploy("--settle-time=0", f"nixos://alpha/{config}")
        assert r.returncode == 0, r.output
    now = alpha.current_system()
    r = deploy("rollback", "--to", "2", "alpha")
    assert r.returncode == 1, r.output
    err = str(r.hosts[0]["error"])
    assert err.startswith("generation 2 has no boot entry (nixos-generation-2.conf"), err
    assert "configurationLimit" in err and "nothing was changed" in err
    alpha.assert_clean_after(running=now, boot=now)


def test_plan_and_status_show_what_boots_the_host_and_whether_it_resets_itself(
    hosts: dict[str, Host],
) -> None:
    alpha = hosts["alpha"]
    r = deploy("status", "alpha")
    assert r.returncode == 0, r.output
    boot = r.hosts[0]["boot"]
    assert isinstance(boot, dict), r.hosts
    assert boot["loader"] == "systemd-boot" and boot["default"] == loader_default(alpha), boot
    assert boot["resets_after_panic"] is True and boot["panic"] == "5" and boot["trial"] == "none", boot
    # a new system without panic= (nor a watchdog): plan says what a panic at its boot would do
    r = deploy("plan", "nixos://alpha/no-reset")
    assert r.returncode == 0, r.output
    plan = r.host("nixos://alpha/no-reset")["plan"]
    assert isinstance(plan, dict) and plan["checks"] == "ok", plan
    assert isinstance(plan["boot"], dict) and plan["boot"]["resets_after_panic"] is False, plan
    assert "after a kernel panic or hang, the new system stays down until someone resets it" in r.output
    assert "boot loader: systemd-boot, default " in r.output
    # the deploy says so too, and status then
    r = deploy(*FAST, "--reboot=always", "nixos://alpha/no-reset")
    assert r.returncode == 0, r.output
    assert "does not reset itself after a kernel panic or hang" in r.output
    r = deploy("status", "alpha")
    boot = r.hosts[0]["boot"]
    assert isinstance(boot, dict) and boot["resets_after_panic"] is False, boot
    assert boot["default"] == loader_default(alpha) == f"nixos-generation-{alpha.generations()}.conf"
