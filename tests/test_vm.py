"""The few behaviours that need a real kernel and a real reboot, on the lab's QEMU VM."""

from __future__ import annotations

import pytest

from tests.lab import VM_SSH_CONFIG, Host, deploy

pytestmark = pytest.mark.vm


def _deploy(*args: str) -> tuple[int, str, dict[str, object]]:
    r = deploy(*args, ssh_config=VM_SSH_CONFIG, timeout=900)
    return r.returncode, r.output, r.host(args[-1]) if r.report else {}


def test_reboot_if_needed_boots_the_new_kernel(vm: Host) -> None:
    """A verified reboot into a new kernel, through a real reset of the VM (the boot entry's
    semantics are tested on nspawn hosts, tests/test_reboots.py and test_verified_reboot.py).
    Built on the deployer: the VM's own build (under TCG) is not what this tests."""
    boot = vm.out("cat /proc/sys/kernel/random/boot_id")
    rc, out, res = _deploy("--build-on=local", "--reboot=if-needed", "nixos://vm1/new-kernel")
    assert rc == 0, out
    assert res["outcome"] == "activated", res
    assert vm.out("cat /proc/sys/kernel/random/boot_id") != boot
    assert vm.current_system() == res["system"] == vm.out("readlink -f /run/booted-system")
    assert vm.system_state() == "running"
