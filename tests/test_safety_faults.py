"""Fault injection on lab hosts: each test breaks one thing at one moment of the
transaction and then checks the host itself, as the other safety tests do.

The promise under test: every host ends on its new, confirmed configuration or
back on its previous one, its boot entry only ever on a confirmed configuration,
and the report and exit code say which."""

from __future__ import annotations

import re
import signal
import time

import pytest
from click.testing import CliRunner

from deploy_flake.agent.script import script, script_path
from tests.lab import FIXTURE_FLAKE, SSH_CONFIG, Background, Host, deploy, lab, wait_for

CONFIRM = "--confirm-timeout=6s"


def _system(r_host: dict[str, object]) -> str:
    system = r_host["system"]
    assert isinstance(system, str)
    return system


def _clean_deploy_works(host: Host, dest: str) -> None:
    r = deploy(dest)
    assert r.returncode == 0, r.output
    system = _system(r.host(dest))
    host.assert_clean_after(running=system, boot=system)


def _seconds(systemd_timespan: str) -> int:
    """'21min', '1h 5min 3s', '90s' -> seconds."""
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(h|min|s)\b", systemd_timespan))


def _install_agent(host: Host) -> str:
    """The agent script on the host, where deploy-flake puts it; its path."""
    path = script_path()
    host.ssh(f"mkdir -p /run/deploy-flake && cat > {path}", input=script().decode())
    return path


# ------------------------------------------------------------------ item 1: crash loops
def test_crash_looping_service_is_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/crash-loop")
    assert r.returncode == 3, r.output
    err = str(r.host("nixos://alpha/crash-loop")["error"])
    assert "crashing and restarting: fixture-crash-loop.service" in err, err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.ssh("systemctl is-active fixture-crash-loop.service", check=False).stdout.strip() != "active"
    assert alpha.generations() == 1


# ------------------------------------------------------------------ item 2: no zero limit
def test_the_agent_itself_refuses_a_zero_limit(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    path = _install_agent(alpha)
    settings = (
        f"NEW={before}\nMODE=test\nACTIVATION_S=0\nHEALTH_S=60\nSETTLE_S=0\nCONFIRM_S=30\nBOOT_S=60\n"
        "HOLDER=test\nGC_ROOT=\nRECOVERY_S=600\nGUARD_S=300\n"
    )
    done = alpha.ssh(f"/bin/sh {path} start zero-limit", input=settings)
    assert done.stdout.startswith("@@deploy-flake-state\tfailed\t"), done.stdout
    assert "ACTIVATION_S must be a whole number of seconds, at least 1" in done.stdout
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.transaction_states() == {"zero-limit": "failed"}


def test_the_agent_itself_refuses_settings_without_its_budgets(hosts: dict[str, Host]) -> None:
    """The deployer computes the recovery's and the guard's budgets: without them (settings
    written by hand, or by a deployer from before), nothing is started."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    path = _install_agent(alpha)
    settings = (
        f"NEW={before}\nMODE=test\nACTIVATION_S=60\nHEALTH_S=60\nSETTLE_S=0\nCONFIRM_S=30\nBOOT_S=60\n"
        "HOLDER=test\nGC_ROOT=\nRECOVERY_S=600\n"
    )
    done = alpha.ssh(f"/bin/sh {path} start no-guard-budget", input=settings)
    assert done.stdout.startswith("@@deploy-flake-state\tfailed\t"), done.stdout
    assert "GUARD_S must be a whole number of seconds, at least 1 (not '')" in done.stdout
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.transaction_states() == {"no-guard-budget": "failed"}


# ------------------------------------------------------------------ item 5: one host's bug
def test_an_unexpected_error_ends_only_its_own_host(
    hosts: dict[str, Host], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """An OSError before the transaction and a crash after it started, on two hosts of three:
    the third is deployed, the report is written, no traceback."""
    from deploy_flake.agent import client as agent_module
    from deploy_flake.agent.protocol import Status
    from deploy_flake.cli import deploy_flake

    real_install, real_confirm = agent_module.Agent.install, agent_module.Agent.confirm

    async def install(self: agent_module.Agent) -> None:
        if self.remote.dest.host == "beta":
            raise OSError(24, "Too many open files")
        await real_install(self)

    async def confirm(self: agent_module.Agent, on_line: agent_module.LineSink) -> tuple[Status | None, str]:
        if self.remote.dest.host == "gamma":
            raise RuntimeError("a bug in the deployer")
        return await real_confirm(self, on_line)

    monkeypatch.setattr(agent_module.Agent, "install", install)
    monkeypatch.setattr(agent_module.Agent, "confirm", confirm)
    before = hosts["alpha"].current_system()
    report = f"/tmp/deploy-flake-test-report-inproc-{time.monotonic_ns()}.json"
    args = ["--flake", str(FIXTURE_FLAKE), "--ssh-config", str(SSH_CONFIG), CONFIRM, "--report", report]
    result = CliRunner().invoke(deploy_flake, [*args, "nixos://alpha/good", "beta", "gamma"])
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output
    import json
    from pathlib import Path

    hosts_report = {h["destination"]: h for h in json.loads(Path(report).read_text())["hosts"]}
    Path(report).unlink()
    assert hosts_report["nixos://alpha/good"]["outcome"] == "activated"
    assert hosts_report["beta"]["outcome"] == "failed"
    assert "internal error: OSError" in hosts_report["beta"]["error"]
    assert hosts_report["gamma"]["outcome"] == "unknown"
    assert "a bug in the deployer" in hosts_report["gamma"]["error"]
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    good = hosts_report["nixos://alpha/good"]["system"]
    alpha.assert_clean_after(running=good, boot=good)
    beta.assert_clean_after(running=before, boot=before)
    # gamma was never confirmed: it returns to its previous system by itself
    assert wait_for(
        lambda: (
            gamma.transaction_states()
            and all(s == "rolled-back" for s in gamma.transaction_states().values())
        ),
        60,
    ), gamma.transaction_states()
    gamma.assert_clean_after(running=before, boot=before)


# ------------------------------------------------------------------ item 6: Ctrl-C in systemd-run
def test_ctrl_c_while_systemd_run_starts_the_transaction(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    # a slow systemd-run, ahead of the real one on the agent's PATH
    wrapper = 'touch /run/fixture-systemd-run-called; sleep 4; exec /usr/bin/systemd-run "$@"'
    alpha.ssh(
        f"printf '#!/bin/sh\\n%s\\n' '{wrapper}' > /usr/local/sbin/systemd-run"
        " && chmod 755 /usr/local/sbin/systemd-run"
    )
    bg = Background(CONFIRM, "nixos://alpha/good")
    called = "test -e /run/fixture-systemd-run-called"
    assert wait_for(lambda: alpha.ssh(called, check=False).returncode == 0, 90)
    bg.signal(signal.SIGINT)
    r = bg.finish()
    assert r.returncode == 1, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "failed" and "before anything was changed" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert set(alpha.transaction_states().values()) == {"failed"}
    assert alpha.generations() == 1


# ------------------------------------------------------------------ Ctrl-C during the commit
def test_ctrl_c_during_the_commit_keeps_the_confirmed_system(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    bg = Background(CONFIRM, "nixos://alpha/slow-boot")
    bg.wait_output("state: committing")
    bg.signal(signal.SIGINT)
    r = bg.finish()
    assert r.returncode == 0, r.output
    res = r.host("nixos://alpha/slow-boot")
    assert res["outcome"] == "activated"
    assert "already committed" in r.output
    system = _system(res)
    alpha.assert_clean_after(running=system, boot=system)
    assert alpha.profile() == system and alpha.generations() == 2


def test_interrupted_twice_still_writes_the_report(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    bg.signal(signal.SIGINT)
    bg.wait_output("interrupted: asking the host to roll back")
    bg.signal(signal.SIGINT)
    r = bg.finish(timeout=60)
    assert r.returncode == 130, r.output
    assert "interrupted twice" in r.output and "Traceback" not in r.output
    res = r.host("nixos://alpha/slow-activation")
    assert res["outcome"] in ("unknown", "rolled-back"), res
    # the host finishes on its own
    assert wait_for(lambda: set(alpha.transaction_states().values()) == {"rolled-back"}, 60)
    alpha.assert_clean_after(running=before, boot=before)


# ------------------------------------------------------------------ the unit killed in each phase
@pytest.mark.parametrize(
    ("phase", "config", "extra", "first"),
    [
        ("activating", "slow-activation", (), None),
        ("checking", "good", ("--settle-time=8s",), None),
        # the deploy user cannot confirm once sudo asks for a password; root can still look
        ("awaiting-confirmation", "deploy@alpha/break-sudo", (), None),
        ("committing", "slow-boot", (), None),
        ("rolling-back", "fail-activation", (), "slow-activation"),
    ],
)
def test_transaction_unit_killed_in_each_phase(
    hosts: dict[str, Host], phase: str, config: str, extra: tuple[str, ...], first: str | None
) -> None:
    alpha = hosts["alpha"]
    if first is not None:  # a previous system whose re-activation takes a while
        assert deploy(f"nixos://alpha/{first}").returncode == 0
    before, profile, gens = alpha.current_system(), alpha.profile(), alpha.generations()
    dest = f"nixos://{config}" if "@" in config else f"nixos://alpha/{config}"
    bg = Background(CONFIRM, *extra, dest)
    bg.wait_output(f"state: {phase}", timeout=90)
    stop_timeout = alpha.out("systemctl show -p TimeoutStopUSec --value 'deploy-flake-*.service'")
    # the unit's stop timeout covers the longest recovery: lock wait, restore, rollback twice
    assert _seconds(stop_timeout) >= 30 + 120 + 300 + 2 * (300 + 60), stop_timeout
    alpha.kill_transactions()
    r = bg.finish()
    assert r.returncode == 3, r.output
    res = r.host(dest)
    assert "the activation unit was stopped" in str(res["error"]), res
    assert res["previous_system"] == before
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == profile and alpha.generations() == gens


# ------------------------------------------------------------------ item 7: recovery vs a new deploy
def test_a_new_deploy_first_finishes_a_killed_one(hosts: dict[str, Host]) -> None:
    """The killed unit's recovery never ran (as when a new deploy takes the lock first):
    the next deploy rolls it back before it starts, and records the right previous system."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    bg.signal(signal.SIGKILL)
    bg.finish()
    # no ExecStopPost recovery, no guard: their script is gone when the unit dies
    alpha.ssh("mv /run/deploy-flake/agent-*.sh /run/deploy-flake/hidden")
    alpha.kill_transactions()
    # nothing runs any more but the guard's timer, waiting (its service found no script either)
    live = "systemctl list-units --plain --no-legend --state=active,activating,deactivating 'deploy-flake-*'"

    def left() -> list[str]:
        return [line.split()[0].rsplit("-", 1)[-1] for line in alpha.out(live).splitlines()]

    assert wait_for(lambda: left() == ["guard.timer"], 30), left()
    assert set(alpha.transaction_states().values()) == {"activating"}
    r = deploy("nixos://alpha/good")
    assert r.returncode == 0, r.output
    assert "finishing the earlier deploy" in r.output
    assert "an earlier deploy's units failed" in r.output  # its guard's service: not the system's health
    res = r.host("nixos://alpha/good")
    assert res["previous_system"] == before  # not the half-activated slow-activation
    good = _system(res)
    alpha.assert_clean_after(running=good, boot=good)
    assert sorted(alpha.transaction_states().values()) == ["activated", "rolled-back"]
    assert alpha.generations() == 2


# ------------------------------------------------------------------ item 8: a failed restore
def test_a_boot_entry_restore_that_fails_is_unknown(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before, profile = alpha.current_system(), alpha.profile()
    alpha.inject_fault("boot", before, 1)  # the old system's boot step fails once
    r = deploy("nixos://alpha/fail-boot")
    assert r.returncode == 4, r.output
    res = r.host("nixos://alpha/fail-boot")
    err = str(res["error"])
    assert res["outcome"] == "unknown"
    assert "writing the previous boot entry again failed" in err and "switch-to-configuration boot" in err
    # the running system is back; the profile link is back; the new generation's link stays
    # (a GC root of the system the boot loader may still name) until the boot entry is rewritten
    assert alpha.current_system() == before and alpha.profile() == profile
    assert alpha.generations() == 2
    assert alpha.out("ls /nix/var/nix/profiles/system-2-link >/dev/null && echo kept") == "kept"
    # the command the message gives repairs it
    alpha.ssh("/nix/var/nix/profiles/system/bin/switch-to-configuration boot")
    alpha.assert_clean_after(running=before, boot=before)


# ------------------------------------------------------------------ item 11: a failed rollback
def test_a_failed_rollback_is_retried_once(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.inject_fault("test", before, 1)
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 3, r.output
    assert "(attempt 2)" in r.output
    alpha.assert_clean_after(running=before, boot=before)


def test_a_rollback_that_fails_twice_is_unknown_with_the_commands(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.inject_fault("test", before, 2)
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 4, r.output
    res = r.host("nixos://alpha/fail-activation")
    assert res["outcome"] == "unknown" and res["previous_system"] == before
    command = f"{before}/bin/switch-to-configuration test"
    assert command in str(res["error"]), res["error"]
    assert alpha.boot_default() == before  # the boot entry was never touched
    alpha.ssh(command, check=False)
    alpha.ssh("systemctl reset-failed")
    alpha.assert_clean_after(running=before, boot=before)


# ------------------------------------------------------------------ item 10: tools of the old system
def test_rollback_uses_the_tools_of_the_previous_system(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/broken-tools")
    assert r.returncode == 3, r.output
    assert "must not be used" not in r.output  # none of its tools was run
    alpha.assert_clean_after(running=before, boot=before)


# ------------------------------------------------------------------ item 12: sudo broken
def test_a_configuration_that_breaks_sudo_is_rolled_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy(CONFIRM, "nixos://deploy@alpha/break-sudo")
    assert r.returncode == 3, r.output
    res = r.host("nixos://deploy@alpha/break-sudo")
    assert res["outcome"] == "rolled-back" and "no confirmation" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.ssh("sudo -n true", user="deploy", check=False).returncode == 0


# ------------------------------------------------------------------ item 13: another switch
def test_refused_while_another_switch_runs(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    alpha.ssh("systemd-run --unit=nixos-upgrade.service sleep 120")
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    assert "another switch is in progress on this host: nixos-upgrade.service is active" in str(
        r.host("nixos://alpha/good")["error"]
    )
    alpha.ssh("systemctl stop nixos-upgrade.service")
    alpha.ssh(
        "mkdir -p /run/nixos && systemd-run --unit=other-switch"
        " flock /run/nixos/switch-to-configuration.lock sleep 120"
    )
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    assert "holds /run/nixos/switch-to-configuration.lock" in str(r.host("nixos://alpha/good")["error"])
    alpha.ssh("systemctl stop other-switch.service")
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_profile_changed_during_the_settle_window_rolls_back(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "--settle-time=8s", "nixos://alpha/good")
    bg.wait_output("state: checking")
    # someone else's switch: a new generation of the profile (here: of the system being tried)
    theirs = alpha.current_system()
    alpha.ssh(f"nix-env -p /nix/var/nix/profiles/system --set {theirs}")
    r = bg.finish()
    assert r.returncode == 3, r.output
    err = str(r.host("nixos://alpha/good")["error"])
    assert "the system profile was changed by someone else during the deploy" in err, err
    assert "system-2-link" in err
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.profile() == theirs and alpha.generations() == 2  # theirs, untouched


# ------------------------------------------------------------------ a reboot mid-transaction
def test_host_rebooted_mid_transaction(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "--settle-time=10s", "nixos://alpha/good")
    bg.wait_output("state: checking")
    lab("reboot", "alpha", timeout=120)
    r = bg.finish()
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "rolled-back" and "lost the record of the deploy" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


# ------------------------------------------------------------------ item 14: at the window's edge
@pytest.mark.parametrize("outage_s", [7.0, 9.5])
def test_confirmation_at_the_edge_of_its_window(hosts: dict[str, Host], outage_s: float) -> None:
    """The network comes back around the moment the confirmation window closes: whichever
    side of the edge the confirmation lands on, the report says what the host did."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "--settle-time=2s", "nixos://alpha/good")
    bg.wait_output("state: checking")
    lab("net", "alpha", "down")
    try:
        time.sleep(outage_s)  # settle 2 s, then the 6 s window
    finally:
        lab("net", "alpha", "up")
    r = bg.finish()
    res = r.host("nixos://alpha/good")
    assert res["outcome"] in ("activated", "rolled-back"), r.output
    if res["outcome"] == "activated":
        assert r.returncode == 0
        system = _system(res)
        alpha.assert_clean_after(running=system, boot=system)
    else:
        assert r.returncode == 3 and "no confirmation" in str(res["error"])
        alpha.assert_clean_after(running=before, boot=before)


# ------------------------------------------------------------------ an early confirmation
def _checking_transaction(host: Host, deploy_id: str) -> tuple[str, str]:
    """The agent on the host, and a transaction DEPLOY_ID recorded as checking (no unit runs
    it: the test plays its part). The agent's path and the transaction's directory."""
    path = _install_agent(host)
    d = f"/run/deploy-flake/{deploy_id}"
    host.ssh(
        f"mkdir -p {d} && printf 'HEALTH_S=5\\nSETTLE_S=0\\n' > {d}/settings && echo checking > {d}/state"
    )
    return path, d


def test_an_early_confirmation_is_held_until_the_transaction_asks(hosts: dict[str, Host]) -> None:
    """Without a settle window the deployer logs in as soon as the activation finished
    (checking): the agent's confirm must not confirm anything before the transaction asks
    (awaiting-confirmation), and must then show the log until the transaction ends.
    Driven by hand against the real script: the test plays the transaction's unit."""
    import subprocess
    import threading

    alpha = hosts["alpha"]
    path, d = _checking_transaction(alpha, "early")
    alpha.ssh(f"echo 'line before' > {d}/log")
    answer: list[subprocess.CompletedProcess[str]] = []
    confirm = threading.Thread(
        target=lambda: answer.append(alpha.ssh(f"/bin/sh {path} confirm early 0 20", check=False))
    )
    confirm.start()
    time.sleep(2)  # the login is in; the transaction is still checking
    assert alpha.ssh(f"test -e {d}/confirm", check=False).returncode == 1, "confirmed before asked"
    alpha.ssh(f"echo awaiting-confirmation > {d}/state")
    assert wait_for(lambda: alpha.ssh(f"test -e {d}/confirm", check=False).returncode == 0, 5, 0.1)
    alpha.ssh(f"echo committing > {d}/state; echo 'committed here' >> {d}/log")
    time.sleep(1)
    alpha.ssh(f"echo activated > {d}/state")
    confirm.join(30)
    assert answer, "the confirmation never answered"
    out = answer[0].stdout
    assert "line before" in out and "committed here" in out, out
    assert out.rstrip().splitlines()[-1].startswith("@@deploy-flake-state\tactivated"), out


def test_an_early_confirmation_after_a_failed_check_confirms_nothing(hosts: dict[str, Host]) -> None:
    """The check found a problem (rolling back): the held confirmation answers with that."""
    alpha = hosts["alpha"]
    path, d = _checking_transaction(alpha, "early-fail")
    background = (
        f"(sleep 1; echo rolling-back > {d}/state; sleep 1; echo rolled-back > {d}/state) >/dev/null 2>&1 &"
    )
    alpha.ssh(background)
    out = alpha.ssh(f"/bin/sh {path} confirm early-fail 0 20", check=False).stdout
    assert alpha.ssh(f"test -e {d}/confirm", check=False).returncode == 1
    assert out.rstrip().splitlines()[-1].startswith("@@deploy-flake-state\trolled-back"), out


# ------------------------------------------------------------------ the agent's watch
def test_the_watch_follows_the_log_and_believes_only_the_state_file(hosts: dict[str, Host]) -> None:
    """The agent's watch waits on the log (tail -F), not on a clock: it shows each line as it
    comes, an activation's output that looks like a state line does not end it, the state
    file does; a state written without its log line is seen within its one-second re-read;
    MAX_S bounds it; it leaves no process nor pipe behind. Driven by hand on the host: the
    test plays the transaction's part."""
    alpha = hosts["alpha"]
    path, d = _checking_transaction(alpha, "watched")
    script_text = f"""
        d={d}
        echo activating > $d/state
        printf 'line one\\n' > $d/log
        /bin/sh {path} watch watched 0 20 checking > /tmp/watch.out 2>&1 & w=$!
        sleep 0.5
        echo 'fixture: [deploy-flake] state: activated' >> $d/log
        sleep 1.5
        kill -0 $w && echo "still watching"
        echo checking > $d/state && echo '[deploy-flake] state: checking' >> $d/log
        wait $w; echo "first watch: exit $?"
        off=$(stat -c %s $d/log)
        /bin/sh {path} watch watched "$off" 20 > /tmp/watch2.out 2>&1 & w=$!
        sleep 0.5
        echo 'late line' >> $d/log
        echo activated > $d/state
        wait $w; echo "second watch: exit $?"
        echo rolling-back > $d/state
        /bin/sh {path} watch watched "$off" 1 > /tmp/watch3.out 2>&1; echo "third watch: exit $?"
        ls $d | grep -c '^watch\\.' || true
        pgrep -f "tail .*$d/log" || echo "no tail left"
    """
    done = alpha.ssh(script_text, timeout=90)
    report = done.stdout
    assert "still watching" in report, report
    assert "first watch: exit 0" in report and "second watch: exit 0" in report, report
    assert "third watch: exit 0" in report and "no tail left" in report, report
    assert report.splitlines()[-2] == "0", report  # no pipe left in the transaction's directory

    first = alpha.out("cat /tmp/watch.out").splitlines()
    fake, real = "fixture: [deploy-flake] state: activated", "[deploy-flake] state: checking"
    assert first[:3] == ["line one", fake, real], first
    assert first[-1].split("\t")[:2] == ["@@deploy-flake-state", "checking"], first
    second = alpha.out("cat /tmp/watch2.out").splitlines()
    assert second[0] == "late line", second
    assert second[-1].split("\t")[:2] == ["@@deploy-flake-state", "activated"], second
    third = alpha.out("cat /tmp/watch3.out").splitlines()
    assert third[-1].split("\t")[:2] == ["@@deploy-flake-state", "rolling-back"], third
