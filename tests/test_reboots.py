"""--reboot: a committed system is rebooted into, and the host must come back on it, healthy.

On nspawn hosts (a reboot restarts the container: new boot id, the boot entry's system
activated at boot); the real kernel reboots are the QEMU VMs' (test_verified_reboot.py, test_matrix.py).
"""

from __future__ import annotations

import time

from tests.lab import BOOT_ID, Host, deploy, lab, notes, run_cli, wait_for


def test_reboot_if_needed_reboots_only_the_host_whose_kernel_changed(hosts: dict[str, Host]) -> None:
    alpha, beta = hosts["alpha"], hosts["beta"]
    boot_a, boot_b = alpha.out(BOOT_ID), beta.out(BOOT_ID)
    r = deploy("--reboot=if-needed", "nixos://alpha/new-kernel", "nixos://beta/beta")
    assert r.returncode == 0, r.output
    a, b = r.host("nixos://alpha/new-kernel"), r.host("nixos://beta/beta")
    assert a["outcome"] == b["outcome"] == "activated"
    assert any("booted the new system once" in n for n in notes(a)), a
    assert alpha.out(BOOT_ID) != boot_a
    assert alpha.current_system() == a["system"] == alpha.out("readlink -f /run/booted-system")
    assert alpha.system_state() == "running"
    assert beta.out(BOOT_ID) == boot_b, "a host that needs no reboot is not rebooted"
    assert not any("reboot" in n for n in notes(b)), b
    # and the status afterwards: nothing left to reboot for
    s = deploy("status", "--json", "alpha")
    assert s.returncode == 0, s.output
    assert '"reboot_needed": false' in s.output


def test_reboot_never_notes_the_need_and_always_reboots(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    boot = alpha.out(BOOT_ID)
    r = deploy("nixos://alpha/new-kernel")  # the default: never
    assert r.returncode == 0, r.output
    assert any("reboot needed" in n for n in notes(r.host("nixos://alpha/new-kernel")))
    assert alpha.out(BOOT_ID) == boot
    # --test=skip writes only the boot entry; --reboot=if-needed then boots into it
    r = deploy("--test=skip", "--reboot=if-needed", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = r.host("nixos://alpha/good")["system"]
    assert alpha.out(BOOT_ID) != boot
    assert alpha.current_system() == good
    # always: even when nothing needs it
    boot = alpha.out(BOOT_ID)
    r = deploy("--reboot=always", "--settle-time=0", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    assert alpha.out(BOOT_ID) != boot
    assert alpha.current_system() == good


def test_a_host_that_comes_back_on_another_system_is_reported(hosts: dict[str, Host]) -> None:
    """The boot loader falls back to the old entry (here: a unit puts it back at shutdown)."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.ssh(
        "cat > /root/boot-fallback.sh <<'EOF'\n"
        "PATH=/run/current-system/sw/bin\n"
        f"e=$(grep -l 'init={before}/init' /boot/loader/entries/*.conf | head -n 1)\n"
        'sed -i "s|^default .*|default ${e##*/}|" /boot/loader/loader.conf\nEOF\n'
        "cat > /etc/systemd/system/boot-fallback.service <<EOF\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
        "ExecStop=/bin/sh /root/boot-fallback.sh\nEOF\n"
        "systemctl daemon-reload && systemctl start boot-fallback.service"
    )
    r = deploy("--reboot=always", "--reboot-unverified", "nixos://alpha/good")
    assert r.returncode == 4, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "unknown"
    assert f"came back running {before}" in str(res["error"]), res
    assert "not the new system" in str(res["error"])
    assert alpha.current_system() == before


def test_reboot_options_are_checked() -> None:
    for argv, message in [
        (("--reboot=sometimes", "alpha"), "'sometimes' is not one of"),
        (("--reboot=always", "--reboot-timeout=0", "alpha"), "--reboot-timeout"),
        (("--reboot=always", "--reboot-timeout=0.5s", "alpha"), "--reboot-timeout"),
        (("--reboot=always", "--dry-activate", "alpha"), "cannot --reboot"),
        (("plan", "--reboot=always", "alpha"), "No such option '--reboot'"),
    ]:
        done = run_cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert message in done.stderr, (argv, done.stderr)


def test_a_host_too_slow_to_come_back_is_reported_then_not_waited_on(hosts: dict[str, Host]) -> None:
    """(on nspawn: the boot-entry semantics are the fixture's on every host; the real kernel
    reboots are the VMs', test_verified_reboot.py and test_matrix.py)"""
    alpha = hosts["alpha"]
    boot = alpha.out(BOOT_ID)
    t0 = time.monotonic()
    r = deploy("--reboot=always", "--reboot-unverified", "--reboot-timeout=1s", "nixos://alpha/good")
    took = time.monotonic() - t0
    assert r.returncode == 4, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "unknown"
    assert "did not come back within 1s" in str(res["error"]), res
    assert wait_for(lambda: alpha.ssh(BOOT_ID, check=False, timeout=20).stdout.strip() not in ("", boot), 300)
    assert alpha.system_state() == "running"
    assert alpha.current_system() == res["system"], "it booted the committed entry after all"
    assert took < 300, took


def test_a_reboot_comes_back_on_the_confirmed_boot_entry_only(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    r = deploy("--settle-time=0", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = r.host("nixos://alpha/good")["system"]
    # a failed activation never touches the boot entry: a reboot comes back into good
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 3, r.output
    boot = alpha.out(BOOT_ID)
    lab("reboot", "alpha")
    assert alpha.out(BOOT_ID) != boot
    assert alpha.current_system() == good == alpha.out("readlink -f /run/booted-system")
    assert alpha.system_state() == "running"
    # --test=skip writes only the boot entry; the next boot runs it
    r = deploy("--test=skip", "nixos://alpha/good-v2")
    assert r.returncode == 0, r.output
    assert alpha.current_system() == good
    lab("reboot", "alpha")
    assert alpha.current_system() == r.host("nixos://alpha/good-v2")["system"]
    assert alpha.out("systemctl is-active fixture-extra.service") == "active"
