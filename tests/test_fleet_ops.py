"""Day-to-day fleet operations on lab hosts: status, plan, rollback, the inventory."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.lab import FIXTURE_FLAKE, SSH_CONFIG, Host, deploy, lab, run_cli, system_of


def _status(*args: str) -> tuple[int, dict[str, dict[str, object]]]:
    done = run_cli("status", "--json", *args)
    doc = json.loads(done.stdout)
    return done.returncode, {h["destination"]: h for h in doc["hosts"]}


def _snapshot(host: Host) -> tuple[str, str, str, int]:
    return host.current_system(), host.profile(), host.boot_default(), host.generations()


# ---- status: what each host runs, whether it needs a reboot, its last deploy
def test_status_reboot_needed_unreachable_and_after_a_rollback(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    base = alpha.current_system()
    assert deploy("nixos://alpha/new-kernel").returncode == 0
    assert deploy("nixos://gamma/good").returncode == 0
    rollback = run_cli("rollback", "gamma")
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    lab("net", "beta", "down")
    try:
        rc, rows = _status("alpha", "beta", "gamma")
    finally:
        lab("net", "beta", "up")
    assert rc == 1  # not every host answered
    a, b, g = rows["alpha"], rows["beta"], rows["gamma"]
    assert a["reachable"] is True and a["state"] == "running" and a["failed_units"] == []
    assert a["reboot_needed"] is True and "kernel" in a["reboot_reasons"]  # type: ignore[operator]
    assert a["current_system"] == alpha.current_system() != a["booted_system"] == base
    assert a["profile_system"] == a["current_system"] and a["generation"] == 2
    last = a["last_deploy"]
    assert isinstance(last, dict) and last["system"] == a["current_system"]
    assert last["flake"].startswith("path:") and last["by"] and last["time"]
    assert b["reachable"] is False and "cannot reach beta" in str(b["error"])
    assert g["reachable"] is True and g["current_system"] == base and g["generation"] == 1
    assert g["reboot_needed"] is False
    g_last = g["last_deploy"]
    assert isinstance(g_last, dict) and g_last["flake"] == "rollback to generation 1"
    # the table, as a person reads it on a pipe
    plain = run_cli("status", "alpha", "gamma")
    assert plain.returncode == 0, plain.stderr
    assert "alpha: state running" in plain.stdout and "reboot yes: kernel" in plain.stdout
    # the same JSON events as a deploy: the result event carries the status
    events = run_cli("status", "--instrumentation=json", "alpha")
    results = [e for e in map(json.loads, events.stdout.splitlines()) if e["event"] == "result"]
    assert len(results) == 1 and results[0]["reachable"] is True and results[0]["generation"] == 2


# ---- plan, --dry-activate and --ask: the changes shown, nothing changed until confirmed
def test_plan_shows_the_changes_and_changes_nothing(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    assert deploy("nixos://alpha/good").returncode == 0
    before = _snapshot(alpha)
    for argv in (("plan", "nixos://alpha/good-v2"), ("--dry-activate", "nixos://alpha/good-v2")):
        done = run_cli(*argv)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "change: fixture-app: 1.0 → 1.1" in out
        assert "would restart: fixture-app.service" in out
        assert "would stop: fixture-oneshot.service" in out
        assert "would start: fixture-extra.service" in out
        assert "reboot needed: no" in out and "checks: ok" in out
        assert "deploy-flake plan:" in out
        assert _snapshot(alpha) == before
        assert not alpha.deploy_units() and alpha.transaction_states() == {
            k: v for k, v in alpha.transaction_states().items() if v == "activated"
        }
    # a plan for a system a deploy would refuse says why, and exits 1
    done = run_cli("plan", "nixos://alpha/no-sshd")
    assert done.returncode == 1 and "does not have sshd" in done.stdout
    assert _snapshot(alpha) == before


def test_ask_shows_every_plan_and_asks_once(hosts: dict[str, Host]) -> None:
    alpha, beta = hosts["alpha"], hosts["beta"]
    before = {h.name: _snapshot(h) for h in (alpha, beta)}
    no = run_cli("--ask", "--jobs", "1", "nixos://alpha/good", "nixos://beta/webserver", input="n\n")
    assert no.returncode == 1, no.stdout + no.stderr
    assert no.stderr.count("Activate on 2 host(s)") == 1
    assert "would start: fixture-extra.service" in no.stdout + no.stderr  # beta's plan
    assert "not confirmed at the --ask prompt" in no.stdout
    assert {h.name: _snapshot(h) for h in (alpha, beta)} == before
    assert not alpha.deploy_units() and not alpha.transaction_states()
    yes = run_cli("--ask", "nixos://alpha/good", "nixos://beta/webserver", input="y\n")
    assert yes.returncode == 0, yes.stdout + yes.stderr
    assert alpha.current_system().endswith("nixos-system-good-1")
    assert beta.current_system().endswith("nixos-system-webserver-1")


# ---- the rollback command: to the previous generation or a named one, and back if it fails
def test_rollback_to_the_previous_and_to_a_named_generation(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    base = alpha.current_system()
    good = system_of(deploy("nixos://alpha/good").host("nixos://alpha/good"))
    done = run_cli("rollback", "alpha")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolling back to generation 1" in done.stdout
    alpha.assert_clean_after(running=base, boot=base)
    assert alpha.profile() == base and alpha.generations() == 2
    done = run_cli("rollback", "--to", "2", "alpha")
    assert done.returncode == 0, done.stdout + done.stderr
    alpha.assert_clean_after(running=good, boot=good)
    assert alpha.profile() == good and alpha.generations() == 2
    bad = run_cli("rollback", "--to", "7", "alpha")
    assert bad.returncode == 1 and "has no system generation 7 (it has 1, 2)" in bad.stdout


def test_a_rollback_to_a_broken_generation_is_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    # generation 2: a broken system, written for the next boot only; generation 3: good
    assert deploy("--test=skip", "nixos://alpha/fail-activation").returncode == 0
    good = system_of(deploy("nixos://alpha/good").host("nixos://alpha/good"))
    done = run_cli("rollback", "alpha")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "fixture-failing.service" in done.stdout
    alpha.assert_clean_after(running=good, boot=good)
    assert alpha.profile() == good and alpha.generations() == 3


# ---- a command word after the options is refused, never taken for a host
def test_a_command_after_options_is_not_taken_for_a_host(hosts: dict[str, Host]) -> None:
    """`deploy-flake --flake . status web1` would deploy web1 and a host called status."""
    alpha = hosts["alpha"]
    before = _snapshot(alpha)
    options = ["--flake", str(FIXTURE_FLAKE), "--ssh-config", str(SSH_CONFIG)]
    argv = [sys.executable, "-m", "deploy_flake", *options]
    done = subprocess.run([*argv, "status", "alpha"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "'status' is a command: put it first" in done.stderr
    assert _snapshot(alpha) == before and not alpha.transaction_states()


# ---- --on: the inventory's tags choose the hosts; every host needs '*' spelled out
def test_inventory_tags_select_the_hosts(hosts: dict[str, Host]) -> None:
    alpha, beta, gamma, delta = (hosts[n] for n in ("alpha", "beta", "gamma", "delta"))
    untouched = {n: _snapshot(hosts[n]) for n in ("gamma", "delta")}
    done = run_cli("--on", "@web", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for host, config in ((alpha, "alpha"), (beta, "beta")):
        assert host.current_system().endswith(f"nixos-system-{config}-1")
    assert {n: _snapshot(hosts[n]) for n in ("gamma", "delta")} == untouched
    # status of every host needs '*' spelled out; delta comes as its inventory user, with sudo
    rc, rows = _status("--on", "*")
    assert rc == 0 and sorted(rows) == [
        "nixos://alpha/alpha",
        "nixos://beta/beta",
        "nixos://deploy@delta/delta",
        "nixos://gamma/gamma",
    ]
    none = run_cli("status", timeout=60)
    assert none.returncode == 2 and "--on '*'" in none.stderr
    missing = run_cli("--on", "@nosuchtag", timeout=60)
    assert missing.returncode == 2 and "nosuchtag" in missing.stderr
    assert gamma.current_system() == untouched["gamma"][0] and delta.generations() == 1
