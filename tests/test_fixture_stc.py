"""The fixture's switch-to-configuration against NixOS's switch-to-configuration-ng contract.

Its lock, unit keys, socket activation, list files, refusal on non-NixOS, pre-switch
check and messages: seen through deploy-flake where that is the user's view, by calling
the fixture directly where it is the fixture's own contract (lab/README.md, "What the
fixture's switch-to-configuration models").
"""

from __future__ import annotations

from tests.lab import Background, Host, deploy, wait_for

LOCK = "/run/nixos/switch-to-configuration.lock"
HOLD_LOCK = f"mkdir -p /run/nixos && systemd-run -E PATH --unit=other-switch flock {LOCK} sleep 120"
KEYED = (
    "fixture-stop-start",
    "fixture-no-restart",
    "fixture-restart",
    "fixture-reload",
    "fixture-triggers",
    "fixture-keep",
)


def _built(host: Host, config: str) -> str:
    """CONFIG's toplevel, built on the host by a plan (which changes nothing)."""
    r = deploy("plan", f"nixos://{host.name}/{config}")
    assert r.returncode == 0, r.output
    system = r.host(f"nixos://{host.name}/{config}")["system"]
    assert isinstance(system, str) and system.startswith("/nix/store/"), system
    return system


def _stc(host: Host, toplevel: str, verb: str, env: str = "", user: str = "root") -> tuple[int, str]:
    done = host.ssh(f"{env} {toplevel}/bin/switch-to-configuration {verb}", check=False, user=user)
    return done.returncode, done.stderr


def _pids(host: Host) -> dict[str, str]:
    out = host.out(
        f"for u in {' '.join(KEYED)}; do echo $u $(systemctl show -p MainPID --value $u.service); done"
    )
    return {unit: pid for unit, pid in (line.split() for line in out.splitlines())}


def _active(host: Host, unit: str) -> str:
    return host.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()


def _on_unit_keys(host: Host) -> None:
    """The host runs unit-keys, and its socket-activated service was activated."""
    r = deploy(f"nixos://{host.name}/unit-keys")
    assert r.returncode == 0, r.output
    assert _active(host, "fixture-echo.socket") == "active"
    assert _echo(host) == "fixture-echo generation 1"  # a connection started the service
    assert _active(host, "fixture-echo.service") == "active"


def _echo(host: Host) -> str:
    """What fixture-echo.service answers on its socket (a connection starts it)."""
    return host.out("exec 3<>/dev/tcp/127.0.0.1/7070 && timeout 10 head -n 1 <&3")


# ---- the switch lock: one switch at a time, and the agent never holds it between calls
def test_a_second_switch_fails_while_the_lock_is_held(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    good = _built(alpha, "good")
    alpha.ssh(HOLD_LOCK)
    for verb in ("test", "switch", "dry-activate", "check"):
        rc, err = _stc(alpha, good, verb)
        assert (rc, err.strip()) == (11, "Could not acquire lock"), (verb, rc, err)
    assert alpha.current_system() == before and alpha.boot_default() == before
    alpha.ssh("systemctl stop other-switch.service")
    rc, err = _stc(alpha, good, "test")
    assert rc == 0, err
    assert alpha.current_system() == good


def test_deploy_reports_a_switch_that_took_the_lock_first(hosts: dict[str, Host]) -> None:
    """Another switch takes the lock between the agent's look and its switch-to-configuration."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    _built(alpha, "good")
    alpha.ssh("mkdir -p /run/fixture-faults && echo 5 > /run/fixture-faults/lock-delay")
    bg = Background("nixos://alpha/good")
    assert wait_for(lambda: "activating" in alpha.transaction_states().values(), 60), bg.output()
    alpha.ssh(HOLD_LOCK)
    r = bg.finish()
    assert r.returncode == 1, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "failed", res
    error = str(res["error"])
    assert f"another switch-to-configuration holds {LOCK} (Could not acquire lock)" in error, error
    assert "changed nothing" in error and "roll" not in error, error
    alpha.ssh("systemctl stop other-switch.service")
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_the_agent_never_holds_the_switch_lock_between_calls(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    bg = Background("--settle-time=6s", "nixos://alpha/good")
    assert wait_for(lambda: "checking" in alpha.transaction_states().values(), 60), bg.output()
    # the transaction is live (its settle window), between two switch-to-configuration calls
    assert alpha.ssh(f"flock -n {LOCK} true", check=False).returncode == 0
    r = bg.finish()
    assert r.returncode == 0, r.output
    assert alpha.ssh(f"flock -n {LOCK} true", check=False).returncode == 0


def test_a_rollback_waits_for_another_switch_to_finish(hosts: dict[str, Host]) -> None:
    """Another switch holds the lock when the transaction must roll back: the rollback waits
    for it (up to 30 s) instead of failing twice with `Could not acquire lock`."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background("--settle-time=10s", "nixos://alpha/good")
    assert wait_for(lambda: "checking" in alpha.transaction_states().values(), 60), bg.output()
    # another switch for 12 s (the rollback, under load, may take some seconds to start), then
    # a unit fails within the settle window: roll back
    alpha.ssh(f"mkdir -p /run/nixos && systemd-run -E PATH --unit=other-switch flock {LOCK} sleep 12")
    alpha.ssh("systemd-run --unit=fixture-boom sh -c 'exit 1'")
    r = bg.finish()
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "rolled-back", res
    assert "units failed: fixture-boom.service" in str(res["error"]), res
    assert f"another switch-to-configuration holds {LOCK}: waiting up to 30s" in r.output, r.output
    alpha.assert_clean_after(running=before, boot=before)


# ---- unit keys and socket activation: what a switch stops, restarts, reloads and keeps
def test_unit_keys_and_socket_activation(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    _on_unit_keys(alpha)
    before = _pids(alpha)
    v2 = _built(alpha, "unit-keys-v2")

    # dry-activate: what the switch would do, and nothing done
    rc, err = _stc(alpha, v2, "dry-activate")
    assert rc == 0, err
    assert err.splitlines() == [
        "would stop the following units: fixture-echo.service, fixture-echo.socket, fixture-gone.service,"
        " fixture-stop-start.service",
        "would NOT stop the following changed units: fixture-no-restart.service",
        "would activate the configuration...",
        "would reload the following units: fixture-reload.service, fixture-triggers.service",
        "would restart the following units: fixture-restart.service",
        "would start the following units: fixture-echo.socket, fixture-stop-start.service",
    ], err
    assert _pids(alpha) == before
    assert alpha.out("ls /run/nixos") == "switch-to-configuration.lock"  # dry-activate records nothing

    r = deploy("nixos://alpha/unit-keys-v2")
    assert r.returncode == 0, r.output
    out = r.output
    stopped = "fixture-echo.service, fixture-echo.socket, fixture-gone.service, fixture-stop-start.service"
    assert f"stopping the following units: {stopped}" in out
    assert "NOT restarting the following changed units: fixture-no-restart.service" in out
    assert "reloading the following units: fixture-reload.service, fixture-triggers.service" in out
    assert "restarting the following units: fixture-restart.service" in out
    assert "starting the following units: fixture-echo.socket, fixture-stop-start.service" in out
    after = _pids(alpha)
    assert after["fixture-stop-start"] != before["fixture-stop-start"]  # stopped, then started
    assert after["fixture-restart"] != before["fixture-restart"]  # X-StopIfChanged=false: restarted
    for kept in ("fixture-no-restart", "fixture-reload", "fixture-triggers", "fixture-keep"):
        assert after[kept] == before[kept], kept
    assert alpha.out("cat /run/fixture-reload.log /run/fixture-triggers.log").split() == ["reloaded"] * 2
    # (beside the PATH every fixture service gets, as NixOS's units do)
    assert (
        "FIXTURE_GEN=2"
        in alpha.out("systemctl show -p Environment --value fixture-no-restart.service").split()
    )
    assert _active(alpha, "fixture-keep.service") == "active"  # X-StopOnRemoval=false
    assert _active(alpha, "fixture-gone.service") == "inactive"  # removed: stopped
    assert _active(alpha, "fixture-echo.service") == "inactive"  # socket-activated: only stopped
    assert _active(alpha, "fixture-echo.socket") == "active"  # and its socket started again
    assert _echo(alpha) == "fixture-echo generation 2"
    assert alpha.out("ls /run/nixos") == "switch-to-configuration.lock"  # every list done and removed


def test_an_interrupted_switch_is_finished_by_the_next(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    _on_unit_keys(alpha)
    slow, v2 = _built(alpha, "unit-keys-v2-slow"), _built(alpha, "unit-keys-v2")
    # killed during its activation (10 s): after stopping units, before restarting any
    killed = alpha.ssh(
        f"timeout -s KILL 4 {slow}/bin/switch-to-configuration test < /dev/null > /tmp/stc.out 2>&1;"
        " echo $?; cat /tmp/stc.out"
    ).stdout
    assert killed.startswith("137\n") and "activating the configuration..." in killed, killed
    lists = {
        name: sorted(alpha.out(f"cat /run/nixos/{name}").split())
        for name in ("start-list", "restart-list", "reload-list")
    }
    assert lists == {
        "start-list": [
            "fixture-echo.socket",
            "fixture-stop-start.service",
            "multi-user.target",
            "sockets.target",
        ],
        "restart-list": ["fixture-restart.service"],
        "reload-list": ["fixture-reload.service", "fixture-triggers.service"],
    }, lists
    assert _active(alpha, "fixture-stop-start.service") == "inactive"
    assert _active(alpha, "fixture-echo.socket") == "inactive"
    # the next switch, to a system with the same units, does what the killed one left
    rc, err = _stc(alpha, v2, "test")
    assert rc == 0, err
    assert "reloading the following units: fixture-reload.service, fixture-triggers.service" in err
    assert "restarting the following units: fixture-restart.service" in err
    assert "starting the following units: fixture-echo.socket, fixture-stop-start.service" in err
    assert _active(alpha, "fixture-stop-start.service") == "active"
    assert _active(alpha, "fixture-echo.socket") == "active"
    assert alpha.out("ls /run/nixos") == "switch-to-configuration.lock"


# ---- refusals: not NixOS, a failing pre-switch check, a bad verb, not root
def test_refuses_a_system_that_is_not_nixos(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    _built(alpha, "good")
    alpha.ssh("rm /etc/NIXOS")
    rc, err = _stc(alpha, "/run/current-system", "test")
    assert (rc, err.strip()) == (2, "This is not a NixOS installation!"), (rc, err)
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "failed", res
    error = str(res["error"])
    assert "This is not a NixOS installation!" in error and "changed nothing" in error, error
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_pre_switch_check_verbs_and_usage(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    # through deploy-flake: the check fails the activation, and the host is rolled back
    r = deploy("nixos://alpha/pre-switch-fail")
    assert r.returncode != 0, r.output
    res = r.host("nixos://alpha/pre-switch-fail")
    assert res["outcome"] == "rolled-back" and "exit 1" in str(res["error"]), res
    assert "Pre-switch checks failed" in r.output
    alpha.assert_clean_after(running=before, boot=before)
    failing = res["system"]
    assert isinstance(failing, str)
    for verb in ("check", "test", "dry-activate", "boot"):
        rc, err = _stc(alpha, failing, verb)
        assert rc == 1 and err.strip().endswith("Pre-switch checks failed"), (verb, rc, err)
    assert (_stc(alpha, failing, "check", env="NIXOS_NO_CHECK=1")) == (0, "")
    assert _stc(alpha, before, "check") == (0, "")
    rc, err = _stc(alpha, before, "bogus")
    assert rc == 1 and err.startswith(
        "Usage: switch-to-configuration [check|switch|boot|test|dry-activate]\n"
    )
    rc, err = _stc(alpha, before, "test", user="deploy")
    assert (rc, err.strip()) == (1, "Error: switch-to-configuration must be run as the root user")
    assert alpha.current_system() == before and alpha.boot_default() == before
