"""--reboot on the lab's VM (systemd-boot as NixOS has it, lab/README.md): the new system is
booted once and made the default only after its confirmed boot; a new system that panics at
boot, or boots without SSH, comes back on the old default by itself and is rolled back."""

from __future__ import annotations

import pytest

from tests.lab import VM_SSH_CONFIG, Host, deploy

pytestmark = pytest.mark.vm

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
GUARD = "/etc/systemd/system.control/deploy-flake-boot-trial.service"
ONESHOT = "/sys/firmware/efi/efivars/LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
# short windows: the guard of a trial boot nobody confirms sends it back within about
# 60 + 2*10 + 5 + 30 + 10 s of its file systems
FAST = ("--settle-time=2s", "--health-timeout=10s", "--confirm-timeout=5s", "--boot-timeout=30s")


def _deploy(*args: str) -> tuple[int, str, dict[str, object]]:
    r = deploy(*args, ssh_config=VM_SSH_CONFIG, timeout=1200)
    return r.returncode, r.output, r.host(args[-1]) if r.report else {}


def loader_default(vm: Host) -> str:
    return vm.out("sed -n 's/^default[[:space:]]*//p' /boot/loader/loader.conf")


def trial_left(vm: Host) -> str:
    """What a trial left behind that it should not: its guard unit, a pending one-shot entry."""
    return vm.out(f"ls {GUARD} {ONESHOT} 2>/dev/null || true")


def test_a_good_new_kernel_becomes_the_default_only_after_its_confirmed_boot(vm: Host) -> None:
    boot = vm.out(BOOT_ID)
    gens = vm.generations()
    rc, out, res = _deploy(*FAST, "--reboot=if-needed", "nixos://vm1/new-kernel")
    assert rc == 0, out
    assert res["outcome"] == "activated", res
    assert "booted the new system once" in out and "it is now the default boot entry" in out, out
    new = str(res["system"])
    assert vm.out(BOOT_ID) != boot
    assert vm.current_system() == new == vm.out("readlink -f /run/booted-system") == vm.profile()
    assert vm.generations() == gens + 1
    assert loader_default(vm) == f"nixos-generation-{gens + 1}.conf"
    assert vm.out("cat /var/lib/deploy-flake/trial/state") == "committed"
    assert trial_left(vm) == ""
    assert vm.system_state() == "running"


def test_a_new_kernel_that_panics_at_boot_comes_back_on_the_old_default_by_itself(vm: Host) -> None:
    before, gens, default = vm.current_system(), vm.generations(), loader_default(vm)
    rc, out, res = _deploy(*FAST, "--reboot=if-needed", "nixos://vm1/panic-at-boot")
    assert rc == 3, out
    assert res["outcome"] == "rolled-back", res
    assert "the new system did not boot" in str(res["error"]), res
    assert vm.current_system() == before == vm.out("readlink -f /run/booted-system") == vm.profile()
    assert vm.generations() == gens and loader_default(vm) == default
    assert trial_left(vm) == ""
    assert vm.system_state() == "running"


def test_a_new_system_without_ssh_is_sent_back_by_its_guard_even_with_test_skipped(vm: Host) -> None:
    before, gens, default = vm.current_system(), vm.generations(), loader_default(vm)
    rc, out, res = _deploy(*FAST, "--test=skip", "--reboot=always", "nixos://vm1/no-sshd")
    assert rc == 3, out
    assert res["outcome"] == "rolled-back", res
    assert "no confirmation within" in str(res["error"]), res
    assert vm.current_system() == before == vm.out("readlink -f /run/booted-system") == vm.profile()
    assert vm.generations() == gens and loader_default(vm) == default
    assert trial_left(vm) == ""
    assert vm.out("systemctl is-active sshd.service") == "active"
