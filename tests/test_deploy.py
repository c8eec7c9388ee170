"""The core pipeline on lab hosts, as a user runs it.

Several hosts at once, one of them failing; destination forms, users and addresses; the
checks before activation (health, pre-activation scripts, system type); build and evaluation
failures; what an activation restarts, and its own ssh killed under it; the output (per-host
lines, JSON events, the terminal view, --help); copy retries; --test=skip; bad input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from deploy_flake.destination import Destination
from deploy_flake.remote.ssh import SshSettings, control_name
from tests.lab import (
    FIXTURE_FLAKE,
    HOSTS_DIR,
    SSH_CONFIG,
    SUDO_PASSWORD,
    SUDO_USER,
    Host,
    deploy,
    deploy_argv,
    lab,
)


def test_three_hosts_in_parallel(hosts: dict[str, Host]) -> None:
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    before = alpha.current_system()
    r = deploy("alpha", "nixos://beta/good", "deploy@gamma")
    assert r.returncode == 0, r.output
    for dest, host, config in (
        ("alpha", alpha, "alpha"),
        ("nixos://beta/good", beta, "good"),
        ("deploy@gamma", gamma, "gamma"),
    ):
        res = r.host(dest)
        assert res["outcome"] == "activated" and res["stage"] == "done" and res["config"] == config
        assert res["previous_system"] == before
        system = res["system"]
        assert isinstance(system, str) and system.endswith(f"nixos-system-{config}-1")
        host.assert_clean_after(running=system, boot=system)
        assert host.profile() == system
    assert "activated" in r.output and "deploy-flake summary" in r.output
    # every output line carries its host
    assert "[beta/good] finished switching to system configuration" in r.output


def test_seed_command_line_forms(hosts: dict[str, Host]) -> None:
    """`destination-host1 nixos://destination-host2/webserver`: host name as config, and a named one."""
    r = deploy("delta", "nixos://beta/webserver")
    assert r.returncode == 0, r.output
    assert r.host("delta")["config"] == "delta"
    assert r.host("nixos://beta/webserver")["config"] == "webserver"
    assert hosts["beta"].out("systemctl is-active fixture-extra.service") == "active"


def test_next_generation_restarts_stops_and_starts_units(hosts: dict[str, Host]) -> None:
    assert deploy("nixos://alpha/good").returncode == 0
    app_pid = hosts["alpha"].out("systemctl show -p MainPID --value fixture-app.service")
    r = deploy("nixos://alpha/good-v2")
    assert r.returncode == 0, r.output
    assert "change: fixture-app: 1.0 → 1.1" in r.output  # the closure diff, before activating
    assert "\x1b[" not in r.output  # plain lines on a pipe
    assert "stopping the following units: fixture-oneshot.service" in r.output
    assert "restarting the following units: fixture-app.service" in r.output
    assert "starting the following units: fixture-extra.service" in r.output
    alpha = hosts["alpha"]
    assert alpha.out("systemctl show -p MainPID --value fixture-app.service") != app_pid
    assert alpha.ssh("systemctl is-active fixture-oneshot.service", check=False).stdout.strip() == "inactive"
    assert alpha.generations() == 3  # initial, good, good-v2


def test_unhealthy_host_is_refused_and_unchanged(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    alpha.ssh("systemd-run --unit=broken-thing.service /bin/false", check=False)
    assert alpha.system_state() == "degraded"
    before, gens = alpha.current_system(), alpha.generations()
    r = deploy("nixos://alpha/good")
    assert r.returncode == 1, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "failed" and res["stage"] == "preflight"
    assert "System is not healthy." in str(res["error"]) and "broken-thing.service" in str(res["error"])
    assert alpha.current_system() == before and alpha.generations() == gens
    # skipping the preflight check deploys anyway
    assert deploy("--preflight-check=skip", "nixos://alpha/good").returncode == 0


def test_failing_pre_activation_check_changes_nothing(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/precheck-fail")
    assert r.returncode == 1
    assert "fixture: check 'always-fail' FAILED" in r.output
    assert r.host("nixos://alpha/precheck-fail")["stage"] == "pre-activate"
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_named_pre_activation_script(hosts: dict[str, Host]) -> None:
    r = deploy("--pre-activate-script=sw/bin/nixos-version", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    assert "fixture-1 (good)" in r.output
    missing = deploy("--pre-activate-script=bin/no-such-check", "nixos://alpha/good-v2")
    assert missing.returncode == 1 and "no executable bin/no-such-check" in missing.output


def test_other_sanity_checks(hosts: dict[str, Host]) -> None:
    r = deploy("nixos://alpha/wrong-system")
    assert r.returncode == 1
    assert "--skip-check=system-type" in str(r.host("nixos://alpha/wrong-system")["error"])


def test_build_and_evaluation_failures(hosts: dict[str, Host]) -> None:
    before = hosts["alpha"].current_system()
    r = deploy("nixos://alpha/build-fail", "nixos://beta/eval-fail", "nixos://gamma/no-such-config")
    assert r.returncode == 1
    assert "fixture: this derivation intentionally fails to build" in r.output  # the build log is shown
    assert "builder for" in str(r.host("nixos://alpha/build-fail")["error"])
    assert "evaluation of eval-fail intentionally fails" in str(r.host("nixos://beta/eval-fail")["error"])
    assert "no nixosConfigurations.no-such-config" in str(r.host("nixos://gamma/no-such-config")["error"])
    assert all(h["stage"] == "build" and h["outcome"] == "failed" for h in r.hosts)
    assert hosts["alpha"].current_system() == before


def test_failing_activation_leaves_boot_entry_untouched(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("nixos://alpha/fail-activation")
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/fail-activation")
    assert res["outcome"] == "rolled-back"
    assert "fixture-failing.service" in str(res["error"])
    assert "warning: the following units failed: fixture-failing.service" in r.output  # activation output
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1


def test_one_failing_host_among_three(hosts: dict[str, Host]) -> None:
    r = deploy("alpha", "nixos://beta/precheck-fail", "gamma")
    assert r.returncode == 1
    outcomes = {h["destination"]: h["outcome"] for h in r.hosts}
    assert outcomes == {"alpha": "activated", "nixos://beta/precheck-fail": "failed", "gamma": "activated"}
    assert hosts["gamma"].current_system().endswith("nixos-system-gamma-1")


def test_ssh_client_killed_during_activation(hosts: dict[str, Host]) -> None:
    """The activation runs in a unit on the host: killing the deployer's ssh does not stop it."""
    from tests.lab import Background, wait_for

    bg = Background("nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    # kill every ssh client of this deploy that talks to alpha, the shared connection included
    # (this worker's alpha only: another worker's pool has an alpha too, and its own ssh config)
    socket = control_name(
        Destination.parse("nixos://alpha/slow-activation"),
        SshSettings(control_dir=Path("/unused"), config_file=SSH_CONFIG),
    )
    pattern = f"^ssh -F {re.escape(str(SSH_CONFIG))} .*{socket}"
    killed = subprocess.run(["pkill", "-e", "-f", pattern], capture_output=True, text=True, check=False)
    assert "killed" in killed.stdout
    r = bg.finish()
    assert r.returncode == 0, r.output
    system = r.host("nixos://alpha/slow-activation")["system"]
    assert isinstance(system, str)
    assert wait_for(lambda: hosts["alpha"].current_system() == system, 10)
    hosts["alpha"].assert_clean_after(running=system, boot=system)


def test_two_long_aliases_with_one_prefix_each_reach_their_own_host(
    hosts: dict[str, Host], tmp_path: Path
) -> None:
    """Two ssh aliases whose first 60 characters agree (issue 17, item 1): each has its own
    shared connection, so each host builds and runs its own configuration (they once shared
    the first one's, and the second host's deploy ran on the first host)."""
    prefix = "fleet-host-with-a-rather-long-name-whose-first-sixty-characters-are-shared-"
    blocks = []
    for name in ("alpha", "beta"):
        block = (HOSTS_DIR / name / "ssh_config").read_text()
        assert block.startswith(f"Host {name}\n"), block
        blocks.append(f"Host {prefix}{name}\n" + block.split("\n", 1)[1])
    config = tmp_path / "ssh_config"
    config.write_text("\n".join(blocks))
    one, other = f"nixos://{prefix}alpha/alpha", f"nixos://{prefix}beta/good"
    r = deploy(one, other, ssh_config=config)
    assert r.returncode == 0, r.output
    alpha_system, beta_system = r.host(one)["system"], r.host(other)["system"]
    assert isinstance(alpha_system, str) and alpha_system.endswith("nixos-system-alpha-1")
    assert isinstance(beta_system, str) and beta_system.endswith("nixos-system-good-1")
    for host, system in ((hosts["alpha"], alpha_system), (hosts["beta"], beta_system)):
        host.assert_clean_after(running=system, boot=system)
        assert host.profile() == system
        assert host.generations() == 2  # the image's and this deploy's: one transaction each


@pytest.mark.parametrize(
    ("login", "password"), [("deploy", None), (SUDO_USER, SUDO_PASSWORD)], ids=["nopasswd", "sudo-password"]
)
def test_non_root_user_with_sudo(hosts: dict[str, Host], login: str, password: str | None) -> None:
    """Both of the lab's sudo logins: deploy (wheel, NOPASSWD) and SUDO_USER, whose sudo asks
    for its password (--sudo-password-fd)."""
    r = deploy(f"{login}@alpha", sudo_password=password)
    assert r.returncode == 0, r.output
    assert hosts["alpha"].profile() == r.host(f"{login}@alpha")["system"]
    # without sudo a non-root user cannot activate: a clear error, nothing changed
    r2 = deploy("--no-sudo", "nixos://deploy@beta/good")
    assert r2.returncode != 0
    assert hosts["beta"].generations() == 1


def test_ipv6_literal_with_port(hosts: dict[str, Host]) -> None:
    from tests.lab import CLIENT_KEY, KNOWN_HOSTS

    lab("forward", "alpha", "::1", "2622")
    r = deploy(
        "-o",
        f"IdentityFile={CLIENT_KEY}",
        "-o",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "nixos://root@[::1]:2622/good",
        ssh_config=None,
    )
    assert r.returncode == 0, r.output
    assert hosts["alpha"].current_system().endswith("nixos-system-good-1")


def test_test_skip_writes_only_the_boot_entry(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    r = deploy("--test=skip", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    system = r.host("nixos://alpha/good")["system"]
    assert alpha.current_system() == before and alpha.boot_default() == system


def test_json_instrumentation(hosts: dict[str, Host]) -> None:
    done = subprocess.run(
        deploy_argv("--instrumentation=json", "alpha"),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = {e["event"] for e in events}
    assert {"stage", "output", "result"} <= kinds
    assert events[-1]["event"] == "result" and events[-1]["outcome"] == "activated"


def test_bad_input_fails_before_anything_changes(hosts: dict[str, Host]) -> None:
    before = hosts["alpha"].current_system()
    cases = [
        (["nixos://alpha:99999/good"], "port"),
        (["nixos://alpha/good;reboot"], "not a valid configuration name"),
        (["nixos://alpha/$(touch /tmp/pwned)"], "not a valid configuration name"),
        (["alpha", "--copy-timeout=soon"], "is not a duration"),
        (["alpha", "-o", "NoEquals"], "KEY=VALUE"),
    ]
    for args, message in cases:
        r = deploy(*args)
        assert r.returncode == 2, (args, r.output)
        assert message in r.output
        assert "Traceback" not in r.output
    missing = deploy("alpha", flake=FIXTURE_FLAKE / "nowhere")
    assert missing.returncode == 2 and "no flake.nix" in missing.output
    unreachable = deploy("nixos://no-such-host.invalid/good")
    assert unreachable.returncode == 1 and "cannot reach no-such-host.invalid" in unreachable.output
    assert "Traceback" not in unreachable.output
    assert hosts["alpha"].current_system() == before and hosts["alpha"].generations() == 1
    assert hosts["alpha"].ssh("test -e /tmp/pwned", check=False).returncode == 1


def test_help_and_version() -> None:
    done = subprocess.run(
        deploy_argv("--help", ssh_config=SSH_CONFIG), capture_output=True, text=True, check=True
    )
    for option in (
        "--preflight-check",
        "--pre-activate-script",
        "--test",
        "--build-cmdline",
        "--copy-timeout",
        "--instrumentation",
        "--jobs",
        "--ssh-config",
        "--ssh-option",
        "--sudo",
        "--report",
        "--confirm-timeout",
        "--activation-timeout",
        "Exit codes",
    ):
        assert option in done.stdout
    v = subprocess.run(deploy_argv("--version", ssh_config=None), capture_output=True, text=True, check=True)
    assert "deploy-flake" in v.stdout


def test_copy_timeout_retries_then_fails_cleanly(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    # a host whose store answers slowly: Nix's ssh-ng copy runs `nix-daemon --stdio` there, found
    # on the login's PATH (NixOS's: /run/wrappers/bin comes first; /usr/local is on none)
    alpha.ssh(
        "printf '#!/bin/sh\\nsleep 5\\nexec /run/current-system/sw/bin/nix-daemon \"$@\"\\n'"
        " > /run/wrappers/bin/nix-daemon && chmod 755 /run/wrappers/bin/nix-daemon"
    )
    assert alpha.out("command -v nix-daemon") == "/run/wrappers/bin/nix-daemon"
    r = deploy("--copy-timeout=1s", "nixos://alpha/good")
    assert r.returncode == 1, r.output
    assert "copy attempt 1 failed" in r.output and "copy attempt 2 failed" in r.output
    assert "copying the flake failed after 3 attempts" in str(r.host("nixos://alpha/good")["error"])
    assert hosts["alpha"].current_system() == before


def test_live_view_on_a_terminal(hosts: dict[str, Host]) -> None:
    """On a terminal: prefixed output lines, then a summary table."""
    import shlex

    cmd = shlex.join(deploy_argv("alpha", "nixos://beta/good"))
    done = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={"TERM": "xterm", "COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout)
    assert done.returncode == 0, screen
    assert "[beta/good]" in screen
    assert re.search(r"beta/good +(connect|copy|build)", screen)  # the live view's line for the host
    assert "deploy-flake summary" in screen and "┃ host" in screen


def test_reboot_needed_is_reported(hosts: dict[str, Host]) -> None:
    r = deploy("nixos://alpha/new-kernel")
    assert r.returncode == 0, r.output
    assert "reboot needed to use the new kernel, initrd, kernel-modules" in r.output
    assert any("reboot needed" in n for n in r.host("nixos://alpha/new-kernel")["notes"])  # type: ignore[attr-defined]
