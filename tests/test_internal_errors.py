"""An unexpected error in the deployer (a bug, an OSError) ends only its own host's deploy.

The other hosts go on, the report is written, and no traceback is shown."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from tests.lab import CONFIRM, FIXTURE_FLAKE, SSH_CONFIG, Host, wait_for


def test_an_unexpected_error_ends_only_its_own_host(
    hosts: dict[str, Host], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """An OSError before the transaction and a crash after it started, on two hosts of three:
    the third is deployed, the report is written, no traceback."""
    from deploy_flake.agent import client as agent_module
    from deploy_flake.agent.protocol import Status
    from deploy_flake.cli import deploy_flake
    from deploy_flake.process import LineSink

    real_install, real_confirm = agent_module.Agent.install, agent_module.Agent.confirm

    async def install(self: agent_module.Agent) -> None:
        if self.remote.dest.host == "beta":
            raise OSError(24, "Too many open files")
        await real_install(self)

    async def confirm(self: agent_module.Agent, on_line: LineSink) -> tuple[Status | None, str]:
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
