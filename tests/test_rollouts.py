"""Staged rollouts on lab hosts: canary, --max-failures, --all-or-nothing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.lab import CONFIRM, Background, Host, deploy, deploy_argv, run_cli, system_of, wait_for


def _untouched(host: Host, base: str) -> None:
    assert host.current_system() == base and host.boot_default() == base
    assert host.generations() == 1 and not host.transaction_states()


def test_a_failing_canary_stops_the_rest(hosts: dict[str, Host]) -> None:
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    base = alpha.current_system()
    r = deploy("--canary", "1", "nixos://alpha/fail-activation", "beta", "gamma")
    assert r.returncode == 3, r.output  # the worst host that ran
    assert r.host("nixos://alpha/fail-activation")["outcome"] == "rolled-back"
    for dest, host in (("beta", beta), ("gamma", gamma)):
        res = r.host(dest)
        assert res["outcome"] == "skipped" and "canary nixos://alpha/fail-activation" in str(res["error"])
        _untouched(host, base)
    assert "2 host(s) skipped, never started: beta, gamma" in r.output
    alpha.assert_clean_after(running=base, boot=base)


def test_healthy_canaries_let_the_rest_go(hosts: dict[str, Host]) -> None:
    r = deploy("--canary", "1", "alpha", "beta")
    assert r.returncode == 0, r.output
    assert [h["outcome"] for h in r.hosts] == ["activated", "activated"]


def test_max_failures_stops_starting_new_hosts(hosts: dict[str, Host]) -> None:
    beta, gamma = hosts["beta"], hosts["gamma"]
    base = beta.current_system()
    r = deploy("--jobs", "1", "--max-failures", "1", "nixos://alpha/precheck-fail", "beta", "gamma")
    assert r.returncode == 1, r.output
    assert r.host("nixos://alpha/precheck-fail")["outcome"] == "failed"
    assert [r.host(d)["outcome"] for d in ("beta", "gamma")] == ["skipped", "skipped"]
    _untouched(beta, base)
    _untouched(gamma, base)


def test_all_or_nothing_rolls_back_the_hosts_that_succeeded(hosts: dict[str, Host]) -> None:
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    base = alpha.current_system()
    r = deploy("--all-or-nothing", "nixos://alpha/good", "nixos://beta/fail-activation", "gamma")
    assert r.returncode == 3, r.output
    for dest in ("nixos://alpha/good", "gamma"):
        res = r.host(dest)
        assert res["outcome"] == "rolled-back", res
        assert "rolled back by --all-or-nothing to generation 1" in str(res["error"])
        assert "nixos://beta/fail-activation" in str(res["error"])
    for host in (alpha, beta, gamma):
        host.assert_clean_after(running=base, boot=base)
        assert host.profile() == base


def test_every_run_keeps_each_hosts_output(hosts: dict[str, Host], tmp_path: Path) -> None:
    r = deploy("--log-dir", str(tmp_path), "nixos://alpha/good", "nixos://beta/fail-activation")
    assert r.returncode == 3, r.output
    (run,) = list(tmp_path.iterdir())
    assert f"every host's whole output is in {run}" in r.output
    logs = {p.name: p.read_text() for p in run.iterdir()}
    assert sorted(logs) == ["alpha_good.log", "beta_fail-activation.log"]
    assert "building '/nix/store/" in logs["alpha_good.log"]  # the build log
    assert "finished switching to system configuration" in logs["alpha_good.log"]  # the agent's
    assert "== activated" in logs["alpha_good.log"]
    assert "fixture-failing.service" in logs["beta_fail-activation.log"]
    assert "== rolled-back" in logs["beta_fail-activation.log"]


def test_the_default_log_dir_and_an_unwritable_one(hosts: dict[str, Host], tmp_path: Path) -> None:
    env_state = tmp_path / "state"
    done = subprocess.run(
        deploy_argv("alpha"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(env_state)},
    )
    assert done.returncode == 0, done.stderr
    (run,) = list((env_state / "deploy-flake" / "runs").iterdir())
    assert (run / "alpha.log").read_text().count("== done") == 1
    blocked = tmp_path / "file"
    blocked.write_text("")
    before = hosts["beta"].current_system()
    bad = run_cli("--log-dir", str(blocked / "x"), "beta")
    assert bad.returncode == 2 and "--log-dir" in bad.stderr and "Traceback" not in bad.stderr
    assert hosts["beta"].current_system() == before


def test_interrupted_twice_during_the_all_or_nothing_undo_reports_every_host(
    hosts: dict[str, Host],
) -> None:
    """A second Ctrl-C while --all-or-nothing rolls alpha back: the report still has beta (rolled
    back by its own deploy), not only the host being undone; alpha ends on a confirmed system,
    the one the report names."""
    alpha, beta = hosts["alpha"], hosts["beta"]
    base = alpha.current_system()
    # the undo's transaction (its id ends in u-N) takes a while to start: a window for the
    # two Ctrl-Cs, while the deployer waits for the host's answer to the first
    alpha.wrap_tool(
        "systemd-run",
        'case "$*" in *--unit=deploy-flake-*u-[0-9]" "*) touch /run/fixture-undo-starting; sleep 6;; esac; '
        'exec "$REAL" "$@"',
    )
    bg = Background(
        CONFIRM, "--settle-time=0", "--all-or-nothing", "nixos://alpha/good", "nixos://beta/fail-activation"
    )
    starting = "test -e /run/fixture-undo-starting"
    assert wait_for(lambda: alpha.ssh(starting, check=False).returncode == 0, 180), bg.output()
    bg.signal(signal.SIGINT)
    bg.wait_output("interrupted: asking the host to roll back")
    bg.signal(signal.SIGINT)
    r = bg.finish(timeout=120)
    assert r.returncode == 130, r.output
    assert "Traceback" not in r.output
    assert sorted(str(h["destination"]) for h in r.hosts) == [
        "nixos://alpha/good",
        "nixos://beta/fail-activation",
    ], r.report
    assert r.host("nixos://beta/fail-activation")["outcome"] == "rolled-back"
    a = r.host("nixos://alpha/good")
    assert a["outcome"] == "unknown" and "--all-or-nothing was rolling it back" in str(a["error"]), a
    # the hosts finish on their own: alpha back on the system this run activated
    assert wait_for(lambda: not alpha.deploy_units() and alpha.lock_free(), 60), alpha.deploy_units()
    new = system_of(a)
    alpha.assert_clean_after(running=new, boot=new)
    assert alpha.profile() == new
    beta.assert_clean_after(running=base, boot=base)
