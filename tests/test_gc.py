"""deploy-flake gc on lab hosts (systemd-boot as NixOS has it, lab/README.md): old system
generations go, never one the host needs; the boot entries are written again, so /boot
shrinks; --collect-garbage frees the store; never while a deploy holds the lock."""

from __future__ import annotations

from tests.lab import Background, Host, deploy

ENTRIES = "ls /boot/loader/entries"
KERNELS = "ls /boot/EFI/nixos"
BOOT_FREE = "df -P -k /boot | awk 'NR == 2 { print $4 }'"


def test_gc_keep_2_keeps_what_it_must_and_boot_shrinks(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    systems = {}
    # generations 2-5: new-kernel (a kernel of its own on /boot), good (it runs), then two
    # committed for the next boot only (--test=skip): the running, booted, previous and
    # profile's generations all differ
    for config, extra in (
        ("new-kernel", ()),
        ("good", ()),
        ("panic-at-boot", ("--test=skip",)),
        ("good-v2", ("--test=skip",)),
    ):
        r = deploy("--settle-time=0", *extra, f"nixos://alpha/{config}")
        assert r.returncode == 0, r.output
        systems[config] = str(r.host(f"nixos://alpha/{config}")["system"])
    assert alpha.generations() == 5
    assert "nixos-generation-2.conf" in alpha.out(ENTRIES) and "6.2.0" in alpha.out(KERNELS)
    free = int(alpha.out(BOOT_FREE))

    r = deploy("gc", "--keep", "1", "--dry-run", "alpha")
    assert r.returncode == 0, r.output
    gc = r.hosts[0]["gc"]
    assert isinstance(gc, dict), r.hosts
    kept = {k["generation"]: k["why"] for k in gc["kept"]}
    assert kept == {
        5: "the system profile's generation",
        4: "the previous generation (a rollback's)",
        3: "the running system",
        1: "the booted system",
    }, kept
    assert [g["generation"] for g in gc["removed"]] == [2], gc
    assert r.hosts[0]["outcome"] == "unchanged" and alpha.generations() == 5
    assert "would remove generation 2 (" in r.output

    r = deploy("gc", "--keep", "2", "--collect-garbage", "alpha")
    assert r.returncode == 0, r.output
    res = r.hosts[0]
    assert res["outcome"] == "cleaned", res
    gc = res["gc"]
    assert isinstance(gc, dict) and [g["generation"] for g in gc["removed"]] == [2], gc
    assert "store paths deleted" in str(gc["store"]), gc
    assert alpha.out("ls /nix/var/nix/profiles | grep -c '^system-.*-link$'") == "4"
    assert "nixos-generation-2.conf" not in alpha.out(ENTRIES) and "6.2.0" not in alpha.out(KERNELS)
    assert int(alpha.out(BOOT_FREE)) > free
    assert int(str(gc["boot_free_after_kib"])) > int(str(gc["boot_free_before_kib"]))
    assert alpha.ssh(f"test -e {systems['new-kernel']}", check=False).returncode != 0  # collected
    assert alpha.ssh(f"test -e {systems['good-v2']}", check=False).returncode == 0
    assert (
        alpha.out("sed -n 's/^default[[:space:]]*//p' /boot/loader/loader.conf") == "nixos-generation-5.conf"
    )
    assert alpha.current_system() == systems["good"] and alpha.system_state() == "running"


def test_gc_waits_for_no_deploy_it_refuses_while_one_runs(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    for config in ("good", "good-v2"):
        assert deploy("--settle-time=0", f"nixos://alpha/{config}").returncode == 0
    bg = Background("--settle-time=0", "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    r = deploy("gc", "--keep", "1", "alpha")
    assert r.returncode == 1, r.output
    assert str(r.hosts[0]["error"]).startswith("a deploy is in progress on this host"), r.hosts
    assert alpha.generations() == 3
    done = bg.finish()
    assert done.returncode == 0, done.output
    r = deploy("gc", "--keep", "1", "alpha")  # the deploy is over: now it goes
    assert r.returncode == 0, r.output
    assert alpha.generations() == 3  # 4 is the profile's, 3 the previous, 1 the booted
