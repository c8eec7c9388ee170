"""The flake for Nix users parses and offers what the README promises."""

from __future__ import annotations

import subprocess

from tests.lab import REPO


def test_flake_nix_parses_and_has_package_and_app() -> None:
    done = subprocess.run(
        ["nix-instantiate", "--parse", str(REPO / "flake.nix")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    text = (REPO / "flake.nix").read_text()
    for needle in (
        "packages = forAllSystems",
        "apps = forAllSystems",
        "deploy-flake = {",
        'type = "app"',
        "default = deploy-flake",
    ):
        assert needle in text


def test_agent_is_shipped_as_package_data() -> None:
    from deploy_flake.agent.script import script, script_path

    assert script().startswith(b"#!/bin/sh")
    assert script_path().startswith("/run/deploy-flake/agent-")
