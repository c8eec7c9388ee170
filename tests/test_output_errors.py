"""Output and logs never end a run: a reader that stops reading (`| head`), a log directory
that fills up. Every host still ends its deploy as it would have, the report is complete and
the exit code is the hosts' own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

from tests.lab import Host, deploy_argv


def _report_path() -> Path:
    return Path(f"/tmp/deploy-flake-test-report-{os.getpid()}-{time.monotonic_ns()}.json")


def test_a_reader_that_stops_after_three_lines_ends_no_host(hosts: dict[str, Host], tmp_path: Path) -> None:
    """`deploy-flake … | head -n 3` with three hosts, one of them failing: every host ends as it
    would have (two activated, one rolled back), the report is complete, the exit code is 3,
    each host's log is whole, and nothing on stderr is a traceback."""
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    before = alpha.current_system()
    report = _report_path()
    argv = deploy_argv(
        "--report", str(report), "--log-dir", str(tmp_path), "alpha", "nixos://beta/fail-activation", "gamma"
    )
    done = subprocess.run(
        ["bash", "-c", '"$@" | head -n 3; exit "${PIPESTATUS[0]}"', "bash", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert len(done.stdout.splitlines()) == 3, done.stdout
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode == 3, done.stderr
    results = {h["destination"]: h for h in json.loads(report.read_text())["hosts"]}
    report.unlink()
    assert set(results) == {"alpha", "nixos://beta/fail-activation", "gamma"}, results
    assert results["alpha"]["outcome"] == "activated", results
    assert results["gamma"]["outcome"] == "activated", results
    assert results["nixos://beta/fail-activation"]["outcome"] == "rolled-back", results
    for host in (alpha, gamma):
        system = results[host.name]["system"]
        host.assert_clean_after(running=system, boot=system)
    beta.assert_clean_after(running=before, boot=before)
    # the deployer's own lines (on stderr) still came, and the logs are whole and closed
    assert "every host's whole output is in" in done.stderr, done.stderr
    (run_dir,) = tmp_path.iterdir()
    logs = sorted(p.name for p in run_dir.iterdir())
    assert logs == ["alpha.log", "beta_fail-activation.log", "gamma.log"], logs
    for log in run_dir.iterdir():
        assert log.read_text().splitlines()[-1].split(" ", 1)[1].startswith("== "), log
        assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_full_log_directory_is_a_note_and_ends_no_host(hosts: dict[str, Host], tmp_path: Path) -> None:
    """--log-dir on a file system that is full after the run directory is made: the deploy
    goes on to the end, the report says that the log is incomplete, the exit code is 0."""
    alpha = hosts["alpha"]
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], check=True)
    try:
        # full: directories and empty files can still be made there, not a byte written
        subprocess.run(["sh", "-c", f"cat /dev/zero > {mount}/filler"], check=False, capture_output=True)
        report = _report_path()
        done = subprocess.run(
            deploy_argv("--report", str(report), "--log-dir", str(mount), "nixos://alpha/good"),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "internal error" not in output, output
    assert done.returncode == 0, output
    (result,) = json.loads(report.read_text())["hosts"]
    report.unlink()
    assert result["outcome"] == "activated", result
    assert any("log" in n and "No space left" in n for n in result["notes"]), result["notes"]
    system = result["system"]
    alpha.assert_clean_after(running=system, boot=system)
