"""What real NixOS hosts do that a plain one does not: a new init that only a boot starts
(switch-to-configuration exits 100), specialisations, platforms under other names, and
installing the boot loader again. On lab hosts, whose fixture models each (lab/README.md)."""

from __future__ import annotations

import json

from deploy_flake.agent.script import script, script_path
from tests.lab import Host, deploy, notes, run_cli, system_of, wait_for


def _switches(host: Host, verb: str) -> int:
    """How many times the fixture's switch-to-configuration VERB ran on the host."""
    return int(host.out(f"grep -c ' {verb} ' /run/fixture-nixos/history || true"))


def test_a_new_init_fails_with_nothing_changed_and_says_to_boot_into_it(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    tests_before = _switches(alpha, "test")
    r = deploy("nixos://alpha/new-init")
    assert r.returncode == 1, r.output
    res = r.host("nixos://alpha/new-init")
    assert res["outcome"] == "failed", res
    assert "incompatible with the running one's (systemd 2)" in str(res["error"])
    assert "deploy it with --test=skip --reboot=if-needed" in str(res["error"])
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1
    assert _switches(alpha, "test") == tests_before, "nothing is activated, nor activated again"

    plan = deploy("plan", "nixos://alpha/new-init")
    assert plan.returncode == 1, plan.output
    assert "deploy it with --test=skip --reboot=if-needed" in str(
        plan.host("nixos://alpha/new-init")["error"]
    )
    assert "units: not known: the new system's init starts only at a boot into it" in plan.output

    # what it says to do: the boot entry only (the reboot itself is the reboot tests')
    boot = deploy("--test=skip", "nixos://alpha/new-init")
    assert boot.returncode == 0, boot.output
    new = system_of(boot.host("nixos://alpha/new-init"))
    alpha.assert_clean_after(running=before, boot=new)


def test_the_agent_itself_takes_exit_100_for_nothing_changed(hosts: dict[str, Host]) -> None:
    """Should switch-to-configuration refuse a new init that the deployer's check let through
    (the running system changed meanwhile), the transaction fails with nothing changed: no
    rollback, no activation of the previous system."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    built = deploy("plan", "nixos://alpha/new-init")  # builds it on the host
    new = system_of(built.host("nixos://alpha/new-init"))
    path = script_path()
    alpha.ssh(f"mkdir -p /run/deploy-flake && cat > {path}", input=script().decode())
    tests_before = _switches(alpha, "test")
    settings = (
        f"NEW={new}\nMODE=test\nACTIVATION_S=60\nHEALTH_S=60\nSETTLE_S=0\nCONFIRM_S=30\nBOOT_S=60\n"
        "HOLDER=test\nGC_ROOT=\nRECOVERY_S=600\nGUARD_S=300\n"
    )
    alpha.ssh(f"/bin/sh {path} start new-init", input=settings)
    assert wait_for(lambda: alpha.transaction_states().get("new-init") == "failed", 60), (
        alpha.transaction_states()
    )
    reason = alpha.out("cat /run/deploy-flake/new-init/reason")
    assert 'switch-to-configuration test refused it ("won\'t take effect until you reboot")' in reason
    assert "deploy it with --test=skip --reboot=if-needed" in reason and "changed nothing" in reason
    assert _switches(alpha, "test") == tests_before + 1, "the previous system was activated again"
    alpha.assert_clean_after(running=before, boot=before)


def test_a_system_for_i686_is_deployed_to_an_x86_64_host(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    assert alpha.out("uname -m") == "x86_64"
    r = deploy("nixos://alpha/i686-system")
    assert r.returncode == 0, r.output
    new = system_of(r.host("nixos://alpha/i686-system"))
    assert alpha.out(f"cat {new}/system") == "i686-linux"
    alpha.assert_clean_after(running=new, boot=new)
    wrong = deploy("nixos://alpha/wrong-system")
    assert wrong.returncode == 1
    assert "built for aarch64-linux but the host runs x86_64-linux or i686-linux" in str(
        wrong.host("nixos://alpha/wrong-system")["error"]
    )
    alpha.assert_clean_after(running=new, boot=new)


def test_install_bootloader_installs_it_with_the_boot_entry(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    r = deploy("nixos://alpha/good")
    assert r.returncode == 0, r.output
    assert alpha.out("cat /boot/loader/fixture-installed 2>/dev/null || true") == ""
    r = deploy("--install-bootloader", "nixos://alpha/good-v2")
    assert r.returncode == 0, r.output
    new = system_of(r.host("nixos://alpha/good-v2"))
    assert alpha.out("cat /boot/loader/fixture-installed").split()[1:] == [new]
    alpha.assert_clean_after(running=new, boot=new)


def _child(host: Host, system: str, name: str) -> str:
    return host.out(f"readlink -f {system}/specialisation/{name}")


def test_a_host_on_a_specialisation_stays_on_it_or_is_refused(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    # --specialisation, as nixos-rebuild: the specialisation runs, the system is the boot entry
    r = deploy("--specialisation", "foo", "nixos://alpha/special")
    assert r.returncode == 0, r.output
    first = system_of(r.host("nixos://alpha/special"))
    foo1 = _child(alpha, first, "foo")
    assert foo1 != first
    alpha.assert_clean_after(running=foo1, boot=first)
    assert alpha.profile() == first
    assert alpha.out("systemctl is-active fixture-extra.service") == "active"

    # the next version: the host's specialisation is followed, and said
    r = deploy("nixos://alpha/special-v2")
    assert r.returncode == 0, r.output
    second = system_of(r.host("nixos://alpha/special-v2"))
    foo2 = _child(alpha, second, "foo")
    alpha.assert_clean_after(running=foo2, boot=second)
    assert any(
        "runs the specialisation foo of its system" in n for n in notes(r.host("nixos://alpha/special-v2"))
    )

    # a rollback goes to the previous generation's own foo
    r = deploy("rollback", "alpha")
    assert r.returncode == 0, r.output
    alpha.assert_clean_after(running=foo1, boot=first)

    # status says which specialisation runs
    shown = run_cli("status", "--json", "alpha")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    (row,) = json.loads(shown.stdout)["hosts"]
    assert row["specialisation"] == "foo" and row["current_system"] == foo1, row
    table = run_cli("status", "alpha")
    assert "(specialisation foo)" in table.stdout, table.stdout

    # a system without foo is refused, nothing changed
    generations = alpha.generations()
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    error = str(r.host("nixos://alpha/good")["error"])
    assert "runs the specialisation foo of its system, but the new system has no specialisation foo" in error
    assert "--specialisation ''" in error
    alpha.assert_clean_after(running=foo1, boot=first)
    assert alpha.generations() == generations

    # ... unless asked for: the system itself, or a specialisation it has
    missing = deploy("--specialisation", "baz", "nixos://alpha/special-v2")
    assert missing.returncode == 1
    assert "has no specialisation baz (--specialisation; it has: bar, foo)" in str(
        missing.host("nixos://alpha/special-v2")["error"]
    )
    r = deploy("--specialisation", "", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = system_of(r.host("nixos://alpha/good"))
    alpha.assert_clean_after(running=good, boot=good)
    assert alpha.out("systemctl is-active fixture-extra.service || true") != "active"
