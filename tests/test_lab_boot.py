"""The lab's model of systemd-boot as NixOS installs it (lab/README.md, "Boot loader").

switch-to-configuration's boot loader installer writes loader.conf, one entry per generation
and kernel copies on a /boot of its own; the fixture's bootctl sets the one-shot entry (an EFI
variable in /sys/firmware/efi/efivars); the image's generator boots as systemd-boot would.
On nspawn hosts (a reboot restarts the container); tests/test_verified_reboot.py has the
real kernel panic on the QEMU VM.
"""

from __future__ import annotations

import re

from tests.lab import ENTRY_SYSTEM, Host, deploy, lab

GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
EFIVARS = "/sys/firmware/efi/efivars"
ONESHOT = f"{EFIVARS}/LoaderEntryOneShot-{GUID}"
SELECTED = f"{EFIVARS}/LoaderEntrySelected-{GUID}"


def _entries(host: Host) -> list[str]:
    return host.out("cd /boot/loader/entries && ls").split()


def _entry(host: Host, entry: str) -> dict[str, str]:
    lines = host.out(f"cat /boot/loader/entries/{entry}").splitlines()
    return dict(line.split(" ", 1) for line in lines)


def _loader_conf(host: Host) -> list[str]:
    return host.out("cat /boot/loader/loader.conf").splitlines()


def _efivar(host: Host, path: str) -> str | None:
    """The entry id an efivarfs file holds (4 bytes of attributes, UTF-16LE, NUL-terminated)."""
    raw = host.out(f"od -An -tx1 -v {path} 2>/dev/null || true").split()
    if not raw:
        return None
    data = bytes(int(b, 16) for b in raw)
    assert data[4:].endswith(b"\0\0"), data
    return data[4:-2].decode("utf-16-le")


def _booted(host: Host) -> str:
    return host.out("cat /run/fixture-nixos/booted-entry")


def test_two_deploys_write_the_systemd_boot_layout(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    base = alpha.current_system()
    assert alpha.out("findmnt -n -o TARGET /boot") == "/boot", "/boot is a filesystem of its own"
    assert _entries(alpha) == ["nixos-generation-1.conf"]
    assert alpha.boot_default() == base
    r = deploy("nixos://alpha/alpha")
    assert r.returncode == 0, r.output
    r = deploy("nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = alpha.current_system()
    assert _entries(alpha) == [f"nixos-generation-{n}.conf" for n in (1, 2, 3)]
    conf = ["timeout 5", "default nixos-generation-3.conf", "editor 0", "console-mode keep"]
    assert _loader_conf(alpha) == conf
    assert alpha.boot_default() == good
    e = _entry(alpha, "nixos-generation-3.conf")
    assert e["title"] == "NixOS" and e["sort-key"] == "nixos"
    assert e["version"].startswith("Generation 3 NixOS fixture-1 (good) (Linux 6.1.0), built on ")
    assert e["options"] == f"init={good}/init panic=5"
    assert alpha.out(ENTRY_SYSTEM + "nixos-generation-1.conf") == base
    # kernel and initrd copied, named after their store path; one copy for the shared kernel
    kernel = alpha.out(f"readlink -f {good}/kernel")
    name = kernel.removeprefix("/nix/store/").replace("/", "-") + ".efi"
    assert e["linux"] == f"/EFI/nixos/{name}"
    assert e["initrd"].startswith("/EFI/nixos/") and e["initrd"].endswith("-initrd.efi")
    assert alpha.out(f"cmp {kernel} /boot{e['linux']} && echo same") == "same"
    assert len(alpha.out("ls /boot/EFI/nixos").split()) == 2
    # the fixture's bootctl, first on the PATH
    assert alpha.out("command -v bootctl") == "/run/current-system/sw/bin/bootctl"
    assert alpha.out("bootctl is-installed") == "yes"
    assert alpha.out("bootctl --print-boot-path; bootctl --print-esp-path") == "/boot\n/boot"
    listing = alpha.out("bootctl list")
    assert "id: nixos-generation-3.conf" in listing and "(default)" in listing


def test_a_oneshot_entry_boots_once_then_the_default(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    base = alpha.current_system()
    r = deploy("nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = alpha.current_system()
    assert alpha.out(f"findmnt -n -o TARGET {EFIVARS}") == EFIVARS
    refused = alpha.ssh("bootctl set-oneshot nixos-generation-9.conf", check=False)
    assert refused.returncode != 0 and "nixos-generation-9.conf" in refused.stderr
    alpha.ssh("bootctl set-oneshot nixos-generation-2.conf && bootctl set-oneshot ''")
    assert _efivar(alpha, ONESHOT) is None
    alpha.ssh("bootctl set-oneshot nixos-generation-1.conf")
    assert alpha.out(f"od -An -tx1 -N4 {ONESHOT}").split() == ["07", "00", "00", "00"]
    assert _efivar(alpha, ONESHOT) == "nixos-generation-1.conf"
    assert "(oneshot)" in alpha.out("bootctl list")
    lab("reboot", "alpha", timeout=300)
    assert alpha.current_system() == base == alpha.out("readlink -f /run/booted-system")
    assert _booted(alpha) == "nixos-generation-1.conf"
    assert _efivar(alpha, SELECTED) == "nixos-generation-1.conf"
    assert _efivar(alpha, ONESHOT) is None, "systemd-boot removes the one-shot entry it boots"
    assert alpha.boot_default() == good
    lab("reboot", "alpha", timeout=300)
    assert alpha.current_system() == good
    assert _booted(alpha) == "nixos-generation-2.conf"
    assert _efivar(alpha, SELECTED) == "nixos-generation-2.conf"


def test_a_panicking_oneshot_entry_comes_back_on_the_default_in_a_container(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    r = deploy("nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = alpha.current_system()
    _panic_entry_as_oneshot(alpha, deploy("--test=skip", "nixos://alpha/panic-at-boot"))
    lab("reboot", "alpha", timeout=300)  # the panicking boot reboots at once; back on the default
    assert alpha.current_system() == good
    assert _booted(alpha) == "nixos-generation-2.conf"
    assert "nixos-generation-3.conf: the kernel of" in alpha.out("cat /var/log/fixture-nixos-boot.log")
    assert _efivar(alpha, ONESHOT) is None


def _panic_entry_as_oneshot(host: Host, r: object) -> None:
    """panic-at-boot committed as generation 3, then generation 2 made the default again (its
    own boot loader install, as a deploy that boots a new system once would leave it), and
    generation 3 set as the one-shot entry."""
    assert getattr(r, "returncode", None) == 0, getattr(r, "output", r)
    assert host.out("test -e /nix/var/nix/profiles/system-3-link/fixture-panic-at-boot && echo yes") == "yes"
    host.ssh("/nix/var/nix/profiles/system-2-link/bin/switch-to-configuration boot")
    assert host.out("sed -n 's/^default //p' /boot/loader/loader.conf") == "nixos-generation-2.conf"
    host.ssh("bootctl set-oneshot nixos-generation-3.conf")


def test_a_boot_entry_limit_keeps_the_newest_entries(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    for config in ("new-kernel", "good", "boot-limit-2"):
        r = deploy(f"nixos://alpha/{config}")
        assert r.returncode == 0, r.output
    assert _entries(alpha) == ["nixos-generation-3.conf", "nixos-generation-4.conf"]
    assert _loader_conf(alpha)[1] == "default nixos-generation-4.conf"
    # new-kernel's copies went with its entry: only the shared kernel and initrd are left
    assert len(alpha.out("ls /boot/EFI/nixos").split()) == 2
    assert alpha.out("ls /nix/var/nix/profiles | grep -c '^system-.*-link$'") == "4"


def test_a_full_boot_refuses_the_deploy_before_anything_changes(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before, gens = alpha.current_system(), alpha.generations()
    # leave less room than a kernel copy (1 MiB) takes
    alpha.ssh(
        "a=$(df -k --output=avail /boot | tail -n 1); "
        "dd if=/dev/zero of=/boot/filler bs=1K count=$((a - 512)) 2>/dev/null; sync",
        check=False,
    )
    # plan says so, with the figures, and the same verdict as the deploy
    r = deploy("plan", "nixos://alpha/new-kernel")
    assert r.returncode == 1, r.output
    plan = r.host("nixos://alpha/new-kernel")["plan"]
    assert isinstance(plan, dict), r.output
    assert str(plan["checks"]).startswith("no space on /boot: 0 MiB free"), plan
    boot = plan["boot"]
    assert isinstance(boot, dict) and boot["loader"] == "systemd-boot", plan
    assert isinstance(boot["free_kib"], int) and boot["free_kib"] < 1024, boot
    assert isinstance(boot["needs_kib"], int) and boot["needs_kib"] > 1024, boot
    assert re.search(r"/boot: 0\.\d MiB free; the new kernel and initrd need \d+\.\d MiB", r.output), r.output
    r = deploy("nixos://alpha/new-kernel")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://alpha/new-kernel")["error"])
    assert re.match(
        r"no space on /boot: 0 MiB free, and the new system's kernel and initrd need \d+ MiB there", err
    ), err
    assert "nothing was changed" in err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == gens
    alpha.ssh("rm -f /boot/filler")
