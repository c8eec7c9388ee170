"""Deploys and the safety net across Nix and systemd versions, on the newer Debian suites' hosts.

The deployer's Nix (this machine's 2.8, or the sid deployer root's 2.34) against hosts of
trixie (Nix 2.26, systemd 257) and sid (Nix 2.34, systemd 262). Bookworm hosts (Nix 2.8,
systemd 252) are every other test file's; deployer 2.34 against them is test_modern_nix.py's.
The last test checks the lab's own handling of those suites' hosts, here beside them.

Each test id names the pair, e.g. `deployer-nix-2.8-target-nix-2.34-systemd-262`, and the
fixture checks the host really runs those versions: when sid moves on, the ids must follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tests.conftest import DEPLOYER_NIX, SID_VM_NAME, suite_host
from tests.lab import (
    BOOT_ID,
    CONFIRM,
    LAB_DIR,
    LOCAL_DEPLOYER,
    SUDO_PASSWORD,
    SUDO_USER,
    VM_SSH_CONFIG,
    Deploy,
    Host,
    deploy,
    lab,
    run_cli,
)
from tests.test_verified_reboot import FAST, assert_back_on, loader_default, trial_left

LOCAL_NIX = "2.8"  # this machine's (Debian 12) nix-bin: deploy-flake's local Nix calls


@dataclass(frozen=True)
class Pair:
    deployer_nix: str
    suite: str
    target_nix: str
    systemd: str
    login: str = "root"  # the good deploy's login: SUDO_USER gives sudo its password

    @property
    def id(self) -> str:
        pair = f"deployer-nix-{self.deployer_nix}-target-nix-{self.target_nix}-systemd-{self.systemd}"
        return pair if self.login == "root" else f"{pair}-{self.login}"


# Every pair whose behaviour differs: the deployer's Nix writes the flake archive and the
# copy's protocol end, the target's Nix builds and sets the profile (its CLI and warnings
# changed between 2.8, 2.26 and 2.34), and the target's systemd runs the transaction.
# The sid pair of this machine's Nix deploys as the lab's login whose sudo asks for a
# password (--sudo-password-fd): the password path is one of the matrix's runs.
PAIRS = [
    Pair(LOCAL_NIX, "trixie", "2.26", "257"),
    Pair(LOCAL_NIX, "sid", "2.34", "262", login=SUDO_USER),
    Pair(DEPLOYER_NIX, "sid", "2.34", "262"),
]


@dataclass
class Target:
    """A clean host of the pair's suite, and the deploy-flake that deploys to it."""

    host: Host
    deployer: Sequence[str]
    login: str = "root"

    def deploy(self, *args: str, sudo_password: str | None = None) -> Deploy:
        return deploy(*args, deployer=self.deployer, sudo_password=sudo_password)

    def cli(self, *args: str) -> tuple[int, str]:
        done = run_cli(*args, deployer=self.deployer)
        return done.returncode, done.stdout + done.stderr


def _versions(host: Host) -> tuple[str, str]:
    nix = host.ssh("nix --version")
    assert nix.stderr.strip() == "", f"nix on {host.name} warns: {nix.stderr}"
    systemd = host.out("systemctl --version | head -n 1")
    return nix.stdout.strip(), systemd


def _check_versions(host: Host, pair: Pair) -> None:
    nix, systemd = _versions(host)
    assert re.fullmatch(rf"nix \(Nix\) {re.escape(pair.target_nix)}(\.\d+)*", nix), (
        f"{pair.suite} now has {nix!r}: update the pair's id"
    )
    assert systemd.startswith(f"systemd {pair.systemd} "), f"{pair.suite} now has {systemd!r}: update the id"


@pytest.fixture(params=PAIRS, ids=lambda p: p.id)
def suite_target(request: pytest.FixtureRequest) -> Target:
    pair: Pair = request.param
    deployer: Sequence[str] = LOCAL_DEPLOYER
    if pair.deployer_nix != LOCAL_NIX:
        deployer = request.getfixturevalue("modern_deployer")
    host = suite_host(pair.suite)
    _check_versions(host, pair)
    assert host.system_state() == "running", host.failed_units()
    return Target(host, deployer, pair.login)


def test_matrix_a_good_deploy_commits_and_status_and_rollback_see_it(suite_target: Target) -> None:
    target = suite_target
    host, name = target.host, target.host.name
    base = host.current_system()
    dest = f"nixos://{target.login}@{name}/good"
    password = SUDO_PASSWORD if target.login == SUDO_USER else None
    r = target.deploy("--settle-time=0", dest, sudo_password=password)
    assert r.returncode == 0, r.output
    res = r.host(dest)
    assert res["outcome"] == "activated" and res["previous_system"] == base, res
    system = res["system"]
    assert isinstance(system, str) and system.endswith("nixos-system-good-1")
    host.assert_clean_after(running=system, boot=system)
    assert host.profile() == system and host.generations() == 2
    assert host.out("systemctl is-active fixture-app.service") == "active"

    rc, out = target.cli("status", "--json", name)
    assert rc == 0, out
    (row,) = json.loads(out[out.index("{") :])["hosts"]
    assert row["current_system"] == system and row["generation"] == 2 and row["state"] == "running", row

    rc, out = target.cli("rollback", name)
    assert rc == 0, out
    assert "rolling back to generation 1" in out
    host.assert_clean_after(running=base, boot=base)
    assert host.profile() == base and host.generations() == 2


def test_matrix_a_failing_activation_is_rolled_back(suite_target: Target) -> None:
    target = suite_target
    host, name = target.host, target.host.name
    before = host.current_system()
    r = target.deploy(f"nixos://{name}/fail-activation")
    assert r.returncode == 3, r.output
    res = r.host(f"nixos://{name}/fail-activation")
    assert res["outcome"] == "rolled-back" and res["previous_system"] == before, res
    host.assert_clean_after(running=before, boot=before)
    assert host.profile() == before and host.generations() == 1, "nothing was committed"
    assert "fixture-failing.service" not in host.failed_units()


def test_matrix_a_lockout_is_rolled_back_by_the_host(suite_target: Target) -> None:
    target = suite_target
    host, name = target.host, target.host.name
    before = host.current_system()
    r = target.deploy(CONFIRM, f"nixos://{name}/lockout")
    assert r.returncode == 3, r.output
    res = r.host(f"nixos://{name}/lockout")
    assert res["outcome"] == "rolled-back", res
    assert "no confirmation over a new SSH connection within 6s" in str(res["error"]), res
    host.assert_clean_after(running=before, boot=before)
    assert host.out("systemctl is-active sshd.service") == "active"
    assert host.profile() == before and host.generations() == 1


# ---- the verified reboot where systemd sandboxes generators (256 and later: the lab's firmware
# stand-in reads in the generator and writes in the unit it makes; lab/README.md, Boot loader)
@pytest.mark.lab  # starts its host itself, without a lab fixture
def test_sid_a_panicking_kernel_comes_back_by_itself_and_a_good_one_is_booted_once() -> None:
    host = suite_host("sid")
    before, gens, default = host.current_system(), host.generations(), loader_default(host)
    dest = f"nixos://{host.name}"
    r = deploy(*FAST, "--reboot=if-needed", f"{dest}/panic-at-boot", timeout=900)
    assert r.returncode == 3, r.output
    res = r.host(f"{dest}/panic-at-boot")
    assert res["outcome"] == "rolled-back" and "the new system did not boot" in str(res["error"]), res
    assert_back_on(host, before, gens, default)
    r = deploy(*FAST, "--reboot=if-needed", f"{dest}/new-kernel", timeout=900)
    assert r.returncode == 0, r.output
    new = r.host(f"{dest}/new-kernel")["system"]
    assert host.current_system() == new == host.out("readlink -f /run/booted-system") == host.boot_default()
    assert trial_left(host) == ""
    assert host.out("tail -n 1 /var/log/fixture-nixos-boot.log").split()[2] == "oneshot"
    # the boot's activation (the firmware unit's, not the sandboxed generator's) wrote /etc
    assert host.out("readlink -f /etc/static") == host.out(f"readlink -f {new}/etc")


# ---- the lab's only VM (sid, systemd 262, a real kernel): a new kernel that really panics
# (sysrq; panic=5 resets the VM) comes back on the old default by itself; a good one is
# booted once, by its one-shot entry, then made the default
@pytest.mark.vm
@pytest.mark.parametrize("pair", [Pair(LOCAL_NIX, "sid", "2.34", "262")], ids=lambda p: p.id)
def test_vm_sid_a_panicking_kernel_comes_back_and_a_good_one_is_booted_once_then_the_default(
    pair: Pair, sid_vm: Host
) -> None:
    vm = sid_vm
    _check_versions(vm, pair)
    # a fresh login to the VM under TCG and the suite's load takes longer than FAST's 5s;
    # the VM's own build under TCG is not what this tests
    slow = ("--settle-time=0", "--health-timeout=60s", "--confirm-timeout=60s", "--boot-timeout=120s")
    args = (*slow, "--build-on=local", "--reboot=if-needed")
    before, gens, default = vm.current_system(), vm.generations(), loader_default(vm)
    dest = f"nixos://{SID_VM_NAME}/panic-at-boot"
    r = deploy(*args, dest, ssh_config=VM_SSH_CONFIG, timeout=1200)
    assert r.returncode == 3, r.output
    res = r.host(dest)
    assert res["outcome"] == "rolled-back" and "the new system did not boot" in str(res["error"]), res
    assert_back_on(vm, before, gens, default)
    # really: the kernel panicked (the serial console outlives the VM's resets)
    assert "Kernel panic" in (LAB_DIR / "vms" / SID_VM_NAME / "console.log").read_text(errors="replace")

    boot = vm.out(BOOT_ID)
    dest = f"nixos://{SID_VM_NAME}/new-kernel"
    r = deploy(*args, dest, ssh_config=VM_SSH_CONFIG, timeout=900)
    assert r.returncode == 0, r.output
    res = r.host(dest)
    assert res["outcome"] == "activated" and res["previous_system"] == before, res
    assert vm.out(BOOT_ID) != boot, "no reboot"
    assert vm.current_system() == res["system"] == vm.out("readlink -f /run/booted-system")
    assert vm.boot_default() == res["system"] == vm.profile()
    assert vm.system_state() == "running", vm.failed_units()
    # booted once by its one-shot entry, which the boot consumed; the guard is gone
    assert vm.out("tail -n 1 /var/log/fixture-nixos-boot.log").split()[2] == "oneshot"
    assert trial_left(vm) == ""


# ---- the lab itself: a host keeps its suite; starting it on another discards its layer
@pytest.mark.lab  # starts its host itself, without a lab fixture
def test_lab_a_host_keeps_its_suite_and_another_suite_discards_its_layer() -> None:
    host = suite_host("sid")
    name = host.name
    host.ssh("touch /etc/lab-marker")
    lab("stop", name)
    lab("start", name)  # no --suite: its own
    assert host.out("cat /etc/debian_version").endswith("/sid")
    assert host.ssh("test -e /etc/lab-marker", check=False).returncode == 0, "its writable layer was kept"
    lab("stop", name)
    started = lab("start", "--suite", "trixie", name)
    assert "discarding its writable layer" in started.stderr
    assert host.out("cat /etc/debian_version").startswith("13.")
    assert host.ssh("test -e /etc/lab-marker", check=False).returncode == 1
    lab("reset", name)
    assert host.out("cat /etc/debian_version").startswith("13."), "reset keeps the suite"
    assert host.system_state() == "running", host.failed_units()
    bad = lab("start", "--suite", "potato", name, check=False)
    assert bad.returncode == 1 and "unknown suite 'potato'" in bad.stderr
