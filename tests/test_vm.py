"""The few behaviours that need a real kernel and a real reboot, on the lab's QEMU VM."""

from __future__ import annotations

import pytest

from tests.lab import VM_SSH_CONFIG, Host, deploy

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


def test_reboot_if_needed_boots_the_new_kernel(vm: Host) -> None:
    """The one real kernel reboot of the VM (the boot entry's semantics are tested on nspawn
    hosts, tests/test_reboots.py)."""
    boot = vm.out("cat /proc/sys/kernel/random/boot_id")
    rc, out, res = _deploy("--reboot=if-needed", "nixos://vm1/new-kernel")
    assert rc == 0, out
    assert res["outcome"] == "activated", res
    assert vm.out("cat /proc/sys/kernel/random/boot_id") != boot
    assert vm.current_system() == res["system"] == vm.out("readlink -f /run/booted-system")
    assert vm.system_state() == "running"
