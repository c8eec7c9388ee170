"""deploy-flake run by a modern Nix (2.34) against the lab's Debian 12 hosts (Nix 2.8).

The deployer runs in a Debian sid root (entered with `lab deployer run`; conftest's
modern_deployer), the hosts are bookworm's (systemd 252). Each test id names the deployer's
and the host's Nix and systemd."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DEPLOYER_NIX
from tests.lab import FIXTURE_FLAKE, SSH_CONFIG, Host
from tests.test_flake_inputs import consumer, fixture_lib

PAIR = f"deployer-nix-{DEPLOYER_NIX}-target-nix-2.8-systemd-252"


def run_modern(
    argv: list[str], flake: Path, *args: str, tmp: Path
) -> tuple[int, str, list[dict[str, object]]]:
    """Its exit code, output, and the report's hosts."""
    report = tmp / f"report-{secrets.token_hex(3)}.json"
    done = subprocess.run(
        [*argv, "--flake", str(flake), "--ssh-config", str(SSH_CONFIG), "--report", str(report), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "XDG_STATE_HOME": str(tmp / "state")},
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, done.stdout + done.stderr, list(data.get("hosts", []))


@pytest.mark.parametrize("pair", [PAIR])
def test_first_deploy_of_a_flake_with_an_input_and_no_lock(
    pair: str, hosts: dict[str, Host], modern_deployer: list[str], tmp_path: Path
) -> None:
    """Nix 2.34 names the source from before it wrote flake.lock; the host must build the
    source it was sent (the bug: `getting status of '/nix/store/…-source'`)."""
    nonce = secrets.token_hex(4)
    flake = consumer(tmp_path / "flake", f"path:{fixture_lib(tmp_path / 'lib', nonce)}")
    rc, out, report = run_modern(
        modern_deployer, flake, "--settle-time=0", "nixos://alpha/shared", tmp=tmp_path
    )
    assert rc == 0, out
    (res,) = report
    assert res["outcome"] == "activated", res
    assert str(res["system"]).endswith(f"-shared-{nonce}")
    assert hosts["alpha"].current_system() == res["system"]
    assert (flake / "flake.lock").exists()


@pytest.mark.parametrize("pair", [PAIR])
def test_errors_of_a_local_build_say_what_failed(
    pair: str, hosts: dict[str, Host], modern_deployer: list[str], tmp_path: Path
) -> None:
    """Built by the deployer's Nix 2.34 (--build-on=local): its error output differs from 2.8's."""
    before = hosts["alpha"].current_system()
    rc, out, report = run_modern(
        modern_deployer,
        FIXTURE_FLAKE,
        "--build-on=local",
        "nixos://alpha/eval-fail",
        "nixos://beta/build-fail",
        tmp=tmp_path,
    )
    assert rc == 1, out
    errors = {h["destination"]: str(h["error"]) for h in report}
    assert "evaluation of eval-fail intentionally fails" in errors["nixos://alpha/eval-fail"], errors
    assert "exit code 1" in errors["nixos://beta/build-fail"], errors
    assert hosts["alpha"].current_system() == before
