"""The agent script as it goes to the host, and where it lives there."""

from __future__ import annotations

import hashlib
from importlib import resources

from deploy_flake.agent.protocol import AGENT_DIR


def script() -> bytes:
    return (resources.files("deploy_flake") / "data" / "deploy-flake-agent.sh").read_bytes()


def script_path() -> str:
    """Where the agent lives on the host: named by its content, so versions never mix."""
    return f"{AGENT_DIR}/agent-{hashlib.sha256(script()).hexdigest()[:16]}.sh"
