"""The lab itself: real hosts that behave like NixOS where deploy-flake can tell."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.lab import (
    FIXTURE_FLAKE,
    HOSTS_DIR,
    KNOWN_HOSTS,
    LAB_CMD,
    LAB_DIR,
    SSH_CONFIG,
    SUDO_PASSWORD,
    SUDO_USER,
    Host,
    deploy,
    lab,
)


def test_hosts_come_up_healthy(hosts: dict[str, Host]) -> None:
    for host in hosts.values():
        assert host.system_state() == "running"
        assert host.failed_units() == []
        assert host.out("hostname") == host.name
        current = host.current_system()
        assert current == host.out("readlink -f /run/booted-system") == host.boot_default() == host.profile()
        assert current.endswith("-nixos-system-lab-1")
        assert host.out("systemctl is-active sshd.service fixture-app.service").split() == [
            "active",
            "active",
        ]


def test_sudo_keys_and_sshd_belong_to_the_configuration(hosts: dict[str, Host]) -> None:
    """As on NixOS: /etc/sudoers (a copy, no sudoers.d), the keys (/etc/ssh/authorized_keys.d/%u)
    and /etc/ssh/sshd_config (a link into /etc/static) are the running system's."""
    alpha = hosts["alpha"]
    assert alpha.out("cmp /etc/sudoers /run/current-system/etc/sudoers && stat -c %a /etc/sudoers") == "440"
    sudoers = alpha.out("cat /etc/sudoers")
    assert "includedir" not in sudoers and "%wheel  ALL=(ALL:ALL) NOPASSWD:SETENV: ALL" in sudoers
    assert alpha.out("readlink /etc/ssh/sshd_config") == "/etc/static/ssh/sshd_config"
    assert alpha.out("systemctl show -p ExecStart sshd.service").count("-f /etc/ssh/sshd_config") == 1
    assert alpha.out("ls /etc/ssh/authorized_keys.d").split() == ["deploy", "root", SUDO_USER]
    assert alpha.out("ls /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys 2>/dev/null || true") == ""
    assert alpha.out("id -nG deploy").split().count("wheel") == 1
    # deploy's sudo needs no password, SUDO_USER's asks for the lab's
    assert alpha.ssh("sudo -n true", user="deploy", check=False).returncode == 0
    asked = alpha.ssh("sudo -n true", user=SUDO_USER, check=False)
    assert asked.returncode == 1 and "password is required" in asked.stderr, asked.stderr
    given = alpha.ssh("sudo -S -p '' id -u", user=SUDO_USER, input=SUDO_PASSWORD + "\n", check=False)
    assert given.stdout.strip() == "0", given.stderr


def test_strict_host_keys(hosts: dict[str, Host], tmp_path: Path) -> None:
    assert "StrictHostKeyChecking yes" in (HOSTS_DIR / "alpha" / "ssh_config").read_text()
    # the key is known before the first connection; a wrong key is refused
    wrong = tmp_path / "known_hosts"
    beta_key = next(ln for ln in KNOWN_HOSTS.read_text().splitlines() if ln.startswith("beta "))
    wrong.write_text("alpha " + beta_key.split(" ", 1)[1] + "\n")
    done = subprocess.run(
        ["ssh", "-F", str(SSH_CONFIG), "-o", f"UserKnownHostsFile={wrong}", "alpha", "true"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 255
    assert (
        "Host key verification failed" in done.stderr
        or "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr
    )


def test_root_and_deploy_user_with_passwordless_sudo(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    assert alpha.ssh("id -u", user="deploy").stdout.strip() != "0"
    assert alpha.ssh("sudo -n id -u", user="deploy").stdout.strip() == "0"
    assert alpha.ssh("nix --version", user="deploy").stdout.startswith("nix (Nix) 2.")


def test_systemd_run_over_ssh(hosts: dict[str, Host]) -> None:
    done = hosts["alpha"].ssh(
        "systemd-run --wait --pipe --collect --quiet --service-type=oneshot /bin/sh -c 'exit 3'", check=False
    )
    assert done.returncode == 3


def test_reset_discards_changes(lab_pool: None) -> None:
    lab("reset", "epsilon")
    try:
        eps = Host("epsilon")
        eps.ssh("touch /etc/marker && systemctl stop fixture-app.service")
        lab("reset", "epsilon")
        assert eps.ssh("test -e /etc/marker", check=False).returncode == 1
        assert eps.out("systemctl is-active fixture-app.service") == "active"
    finally:
        lab("stop", "epsilon")
    assert not (HOSTS_DIR / "epsilon" / "super.pid").exists()


def test_a_pool_has_hosts_of_the_same_names_beside_the_others(hosts: dict[str, Host]) -> None:
    """LAB_POOL: each test worker's own alpha..delta (the same image, keys and VMs)."""

    def in_pool(pool: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LAB_POOL": pool}
        return subprocess.run(
            [str(LAB_CMD), *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    bad = in_pool("No/Pool", "ssh-config")
    assert bad.returncode == 1 and "invalid LAB_POOL 'No/Pool'" in bad.stderr
    config = Path(in_pool("t", "ssh-config").stdout.strip())
    assert config == LAB_DIR / "pools" / "t" / "ssh_config"
    started = in_pool("t", "start", "alpha")
    try:
        assert started.returncode == 0, started.stderr
        twin = Host("alpha", config)
        assert twin.out("hostname") == "alpha"
        twin.ssh("touch /etc/twin-marker")
        assert hosts["alpha"].ssh("test -e /etc/twin-marker", check=False).returncode == 1
    finally:
        in_pool("t", "stop", "--pool")  # that pool's hosts only (what a test session does at its end)
    assert not (LAB_DIR / "pools" / "t" / "hosts" / "alpha" / "super.pid").exists()
    assert hosts["alpha"].reachable()


def test_starting_a_running_host_leaves_it_running(hosts: dict[str, Host]) -> None:
    again = lab("start", "alpha", "beta", check=False)
    assert again.returncode == 0 and "alpha: already running" in again.stderr, again.stderr
    other = lab("start", "--suite", "sid", "alpha", check=False)
    assert other.returncode == 1 and "already running on bookworm, not sid" in other.stderr
    assert hosts["alpha"].reachable() and hosts["beta"].reachable()


def test_the_same_host_named_twice_is_started_and_reset_once(hosts: dict[str, Host]) -> None:
    lab("stop", "alpha")
    twice = lab("start", "alpha", "alpha", check=False)
    assert twice.returncode == 0, twice.stderr
    assert twice.stderr.count("alpha: ssh up") == 1, twice.stderr
    again = lab("reset", "alpha", "alpha", check=False)
    assert again.returncode == 0 and again.stderr.count("alpha: ssh up") == 1, again.stderr
    assert hosts["alpha"].reachable() and hosts["alpha"].system_state() == "running"


def test_reboot_comes_back_into_the_boot_entry(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    r = deploy("--test=skip", "nixos://alpha/good")
    assert r.returncode == 0, r.output
    good = r.host("nixos://alpha/good")["system"]
    assert alpha.current_system() != good
    lab("reboot", "alpha")
    assert alpha.current_system() == good == alpha.out("readlink -f /run/booted-system")
    assert alpha.system_state() == "running"


def test_switch_to_configuration_exit_codes_and_messages(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    r = deploy("--test=skip", "nixos://alpha/fail-activation")  # builds it on alpha; boot entry only
    assert r.returncode == 0
    top = r.host("nixos://alpha/fail-activation")["system"]
    assert isinstance(top, str)
    usage = alpha.ssh(f"{top}/bin/switch-to-configuration bogus", check=False)
    assert usage.returncode == 1 and "Usage:" in usage.stderr
    dry = alpha.ssh(f"{top}/bin/switch-to-configuration dry-activate", check=False)
    assert dry.returncode == 0 and "would start the following units: fixture-failing.service" in dry.stderr
    test = alpha.ssh(f"{top}/bin/switch-to-configuration test", check=False)
    assert test.returncode == 4
    assert "warning: the following units failed: fixture-failing.service" in test.stderr


def test_fixture_variants_evaluate_as_named(tmp_path: Path) -> None:
    def build(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "nix",
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--no-link",
                "--json",
                f"path:{FIXTURE_FLAKE}#nixosConfigurations.{name}.config.system.build.toplevel",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    for name in ("good", "good-v2", "lockout", "no-sshd", "new-kernel"):
        assert build(name).returncode == 0, name
    assert "intentionally fails to build" in build("build-fail").stderr
    assert "evaluation of eval-fail intentionally fails" in build("eval-fail").stderr


def test_bad_input_to_the_lab(lab_pool: None) -> None:
    too_many = subprocess.run(
        ["lab/lab", "start", "zeta"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LAB_MAX_HOSTS": "0"},
        cwd=FIXTURE_FLAKE.parent.parent,
    )
    assert too_many.returncode == 1 and "cannot start 1 more host" in too_many.stderr
    assert not (HOSTS_DIR / "zeta" / "super.pid").exists()
    with tempfile.TemporaryDirectory() as empty:
        no_mirror = subprocess.run(
            ["lab/lab", "build"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, "DEPLOY_FLAKE_LAB": empty, "LAB_MIRROR": "http://127.0.0.1:9/debian"},
            cwd=FIXTURE_FLAKE.parent.parent,
        )
    assert no_mirror.returncode == 1 and "cannot reach the Debian mirror" in no_mirror.stderr
    bad_name = lab("start", "Bad_Name", check=False)
    assert bad_name.returncode == 1 and "invalid host name" in bad_name.stderr


def test_port_in_use_for_a_forward(hosts: dict[str, Host]) -> None:
    import socket

    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = lab("forward", "alpha", "::1", str(port), check=False)
    assert done.returncode == 1 and "already in use" in done.stderr
    assert not (HOSTS_DIR / "alpha" / f"forward-{port}.pid").exists()


@pytest.mark.parametrize("flag", ["--help"])
def test_lab_usage(flag: str) -> None:
    done = subprocess.run(
        ["lab/lab", flag], capture_output=True, text=True, check=False, cwd=FIXTURE_FLAKE.parent.parent
    )
    assert "lab build" in done.stdout and done.returncode == 2
