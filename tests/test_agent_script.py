"""The agent script as it is joined from its parts: the shared constants have one copy, Python's."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from deploy_flake.agent.script import PARTS, SHARED, part, script, script_path, shared_constants
from deploy_flake.agent.settings import LOCK_WAIT_S, PROFILE_SET_S


def _defines(text: str, name: str) -> list[str]:
    """The lines of `text` that assign `name` (alone, or in a list of assignments)."""
    return [line for line in text.splitlines() if re.search(rf"(^|[\s;]){name}=", line)]


def test_every_part_is_joined_once() -> None:
    on_disk = {p.name for p in Path(str(resources.files("deploy_flake.agent") / "sh")).glob("*.sh")}
    assert sorted(PARTS) == sorted(on_disk)
    assert len(set(PARTS)) == len(PARTS)
    text = script().decode()
    assert text.startswith("#!/bin/sh\n")
    for name in PARTS:
        assert text.count(part(name)) == 1, name
    # the dispatch comes last: every function is defined before it runs
    assert text.endswith(part("main.sh"))


def test_shared_constants_are_written_once_below_the_header_with_pythons_values() -> None:
    text = script().decode()
    header_end = len(part("header.sh"))
    block = shared_constants()
    assert text.index(block) == header_end + 1  # right below the header, before any other part
    for name, value in SHARED:
        assert _defines(text, name) == [f"{name}={shlex.quote(str(value))}"], name
    values = dict(SHARED)
    assert values["LOCK_WAIT_S"] == LOCK_WAIT_S and values["PROFILE_SET_S"] == PROFILE_SET_S
    assert "STATE_LINE='[deploy-flake] state: '" in block
    assert "STATUS_TAG=@@deploy-flake-state" in block


@pytest.mark.parametrize("name", PARTS)
def test_no_part_defines_a_shared_constant(name: str) -> None:
    text = part(name)
    for constant, _ in SHARED:
        assert _defines(text, constant) == [], f"{name} defines {constant}"
    # nor is a shared constant kept equal by a comment any more
    assert "agent.py" not in text and "target.py" not in text


def test_the_script_path_names_the_joined_content() -> None:
    digest = hashlib.sha256(script()).hexdigest()[:16]
    assert script_path() == f"/run/deploy-flake/agent-{digest}.sh"


def test_the_module_prints_the_joined_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy_flake.agent.script"], capture_output=True, check=True
    )
    assert done.stdout == script()
