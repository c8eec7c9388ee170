"""The few behaviours that need a real kernel and a real reboot, on the lab's QEMU VM."""

from __future__ import annotations

import pytest

from tests.lab import VM_SSH_CONFIG, Host, deploy, lab

pytestmark = pytest.mark.vm


def _deploy(*args: str) -> tuple[int, str, dict[str, object]]:
    r = deploy(*args, ssh_config=VM_SSH_CONFIG, timeout=900)
    return r.returncode, r.output, r.host(args[-1]) if r.report else {}


def test_lockout_rolls_back_on_the_vm(vm: Host) -> None:
    before = vm.current_system()
    rc, out, res = _deploy("--confirm-timeout=10s", "nixos://vm1/lockout")
    assert rc == 3, out
    assert res["outcome"] == "rolled-back" and "no confirmation" in str(res["error"])
    vm.assert_clean_after(running=before, boot=before)
    assert vm.out("systemctl is-active sshd.service") == "active"


def test_reboot_lands_on_the_confirmed_boot_entry(vm: Host) -> None:
    rc, out, res = _deploy("nixos://vm1/good")
    assert rc == 0, out
    good = res["system"]
    boot_id = vm.out("cat /proc/sys/kernel/random/boot_id")
    # a failed activation never touches the boot entry: a reboot comes back into good
    rc, out, _ = _deploy("nixos://vm1/fail-activation")
    assert rc == 3, out
    lab("vm", "reboot", "vm1", timeout=600)
    assert vm.out("cat /proc/sys/kernel/random/boot_id") != boot_id
    assert vm.current_system() == good == vm.out("readlink -f /run/booted-system")
    assert vm.system_state() == "running"
    # --test=skip writes only the boot entry; the next boot runs it
    rc, out, res = _deploy("--test=skip", "nixos://vm1/good-v2")
    assert rc == 0, out
    assert vm.current_system() == good
    lab("vm", "reboot", "vm1", timeout=600)
    assert vm.current_system() == res["system"]
    assert vm.out("systemctl is-active fixture-extra.service") == "active"
