"""--ask-sudo-password / --sudo-password-fd: deploying to hosts where sudo needs a password.

The password reaches a host only on sudo's stdin: never in the output, events, report, logs
or a process list."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab import SUDO_PASSWORD, SUDO_USER, Host, deploy_argv

PASSWORD = SUDO_PASSWORD
WATCH_LOG = "/root/ps-watch.log"


@pytest.fixture
def delta(hosts: dict[str, Host]) -> Host:
    """delta, whose lab login SUDO_USER's sudo asks for its password (the configuration's
    sudoers: no sudoers.d, as on NixOS)."""
    return hosts["delta"]


def run_with_password(
    tmp_path: Path, password: str, *args: str, watch: Host | None = None
) -> tuple[int, str, dict[str, object], str]:
    """deploy-flake with the password on a pipe's fd; its exit code, output, report, and every command
    line seen on this machine (and on `watch`) while it ran."""
    report = tmp_path / "report.json"
    logs = tmp_path / "logs"
    if watch is not None:
        watch.ssh(
            "systemd-run -E PATH --unit=ps-watch"
            f" sh -c 'while :; do ps -eo args; sleep 0.05; done > {WATCH_LOG}'"
        )
    read_end, write_end = os.pipe()
    os.write(write_end, password.encode() + b"\n")
    os.close(write_end)
    argv = deploy_argv(
        "--report",
        str(report),
        "--log-dir",
        str(logs),
        "--instrumentation=json",
        "--sudo-password-fd",
        str(read_end),
        *args,
    )
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(read_end,), text=True
    )
    os.close(read_end)
    seen: list[str] = []
    while proc.poll() is None:
        seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout)
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    if watch is not None:
        watch.ssh("systemctl stop ps-watch.service")
        seen.append(watch.out(f"cat {WATCH_LOG}; rm -f {WATCH_LOG}"))
    logged = "".join(p.read_text() for p in logs.rglob("*") if p.is_file())
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, out + logged, data, "".join(seen)


def test_a_sudo_password_is_used_and_never_shown(delta: Host, tmp_path: Path) -> None:
    before = delta.current_system()
    rc, out, report, processes = run_with_password(
        tmp_path, PASSWORD, "--settle-time=0", f"nixos://{SUDO_USER}@delta/good", watch=delta
    )
    assert rc == 0, out
    res = report["hosts"][0]  # type: ignore[index]
    assert res["outcome"] == "activated", res
    assert delta.current_system() == res["system"] != before
    assert len(processes) > 1000, "the process lists were sampled"
    for where, text in (("output, events and logs", out), ("report", json.dumps(report)), ("ps", processes)):
        assert PASSWORD not in text, f"the password appears in the {where}"


def test_no_or_a_wrong_password_changes_nothing(delta: Host, tmp_path: Path) -> None:
    before = delta.current_system()
    # without one: the message says how to give it
    done = subprocess.run(
        deploy_argv(f"nixos://{SUDO_USER}@delta/good"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--ask-sudo-password" in done.stdout + done.stderr
    rc, out, report, _ = run_with_password(tmp_path, "not-the-password", f"nixos://{SUDO_USER}@delta/good")
    assert rc == 1, out
    assert "did not accept the password" in str(report["hosts"][0]["error"])  # type: ignore[index]
    assert "not-the-password" not in out
    delta.assert_clean_after(running=before, boot=before)


def test_the_password_never_reaches_a_command_sudo_runs_without_one(delta: Host, tmp_path: Path) -> None:
    """A NOPASSWD rule for sh (but not for `true`): sudo asks for no password for the
    commands deploy-flake runs, so the password must not be written to them; before, it
    became the first line of the agent script and of the transaction's settings, executed
    as root and logged."""
    # the sudoers the activation copied, as an admin's edit of it (the next activation undoes it)
    delta.ssh(f"echo '{SUDO_USER} ALL=(ALL) NOPASSWD: /bin/sh' >> /etc/sudoers")
    assert delta.ssh(f"su {SUDO_USER} -c 'sudo -n true'", check=False).returncode != 0  # a password for true
    delta.ssh("journalctl --rotate --vacuum-time=1s >/dev/null 2>&1; true")
    before = delta.current_system()
    rc, out, report, _ = run_with_password(
        tmp_path, PASSWORD, "--settle-time=0", f"nixos://{SUDO_USER}@delta/good"
    )
    assert rc == 0, out
    res = report["hosts"][0]  # type: ignore[index]
    assert res["outcome"] == "activated", res
    assert delta.current_system() == res["system"] != before
    assert PASSWORD not in out
    on_host = delta.out("cat /run/deploy-flake/agent* /run/deploy-flake/*/settings /run/deploy-flake/*/log")
    assert on_host and PASSWORD not in on_host, "the password was written into the agent's files"
    assert PASSWORD not in delta.out("journalctl -b --no-pager"), "the password is in the journal"


def test_password_options_are_checked(tmp_path: Path) -> None:
    def refused(*args: str, **kw: object) -> str:
        done = subprocess.run(
            deploy_argv(*args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **kw,  # type: ignore[call-overload]
        )
        assert done.returncode == 2, done.stderr
        return str(done.stderr)

    assert "needs a terminal" in refused("--ask-sudo-password", "alpha", start_new_session=True)
    assert "exclude each other" in refused("--ask-sudo-password", "--sudo-password-fd", "0", "alpha")
    assert "cannot read the sudo password from --sudo-password-fd 9" in refused(
        "--sudo-password-fd", "9", "alpha"
    )
    assert "is empty" in refused("--sudo-password-fd", "0", "alpha", input="\n")
