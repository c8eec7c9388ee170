"""The agent script as it is joined from its parts: the shared constants have one copy,
Python's, and the transaction's budgets come with its settings and are checked there."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from deploy_flake.agent.protocol import Mode
from deploy_flake.agent.script import PARTS, SHARED, part, script, script_path, shared_constants
from deploy_flake.agent.settings import (
    KILL_GRACE_S,
    LOCK_WAIT_S,
    PROFILE_SET_S,
    STOP_MARGIN_S,
)
from tests.agent_settings import settings as _settings


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


def test_the_settings_carry_the_recovery_and_guard_budgets() -> None:
    for s in (_settings(), _settings(mode=Mode.BOOT, settle_s=0, generation=3)):
        lines = dict(line.split("=", 1) for line in s.encode().decode().splitlines())
        assert lines["RECOVERY_S"] == str(s.recovery_s())
        assert lines["GUARD_S"] == str(s.guard_s())


def test_the_units_stop_timeout_is_what_the_agent_computed_before() -> None:
    """The agent's own formula, before the deployer computed RECOVERY_S for it."""
    s = _settings(activation_s=123, health_s=45, boot_s=67)
    before = (
        2 * LOCK_WAIT_S
        + PROFILE_SET_S
        + s.boot_s
        + KILL_GRACE_S
        + 2 * (LOCK_WAIT_S + s.activation_s + KILL_GRACE_S + s.health_s)
        + 60
    )
    assert s.recovery_s() + STOP_MARGIN_S == before


# ------------------------------------------------------------ the agent's own check
def _shell(tmp_path: Path, name: str) -> str:
    """The shell the agent runs under on a host: dash, or bash run as `sh` (POSIX mode, NixOS's)."""
    if name == "dash":
        return "/bin/dash" if Path("/bin/dash").exists() else pytest.skip("no dash here")
    link = tmp_path / "sh"  # bash named sh: its POSIX mode, as NixOS's /bin/sh
    link.symlink_to("/bin/bash")
    return str(link)


def _agent_checks(tmp_path: Path, settings: str, shell: str = "/bin/sh") -> str:
    """Runs the joined script's settings_problem on `settings` (the whole script, but for
    its dispatch on the verb): what it finds wrong, or "ok"."""
    text = script().decode()
    dispatch = part("main.sh")
    driver = (
        'DIR=$SETTINGS_DIR\nload_settings\nif problem=$(settings_problem); then echo "$problem"; '
        "else echo ok; fi\n"
    )
    agent = tmp_path / "agent.sh"
    agent.write_text(text[: -len(dispatch)] + driver)
    (tmp_path / "settings").write_text(settings)
    done = subprocess.run(
        [shell, str(agent), "check", "unit-test"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "SETTINGS_DIR": str(tmp_path)},
    )
    return done.stdout.strip()


@pytest.mark.parametrize("shell", ["dash", "bash-posix"])
def test_the_agent_takes_the_deployers_settings(tmp_path: Path, shell: str) -> None:
    sh = _shell(tmp_path, shell)
    assert _agent_checks(tmp_path, _settings().encode().decode(), sh) == "ok"
    assert _agent_checks(tmp_path, _settings(mode=Mode.BOOT, settle_s=0).encode().decode(), sh) == "ok"
    bad = _settings().encode().decode().replace("GUARD_S=", "GUARD_S=x")
    assert _agent_checks(tmp_path, bad, sh).startswith("GUARD_S must be a whole number")


@pytest.mark.parametrize("dialect", ["sh", "dash"])
def test_the_agent_passes_shellcheck(dialect: str) -> None:
    """As POSIX sh (what bash's POSIX mode runs, NixOS's /bin/sh) and as dash."""
    if shutil.which("shellcheck") is None:
        pytest.skip("no shellcheck here")
    done = subprocess.run(
        ["shellcheck", "-s", dialect, "-"], input=script(), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stdout.decode()


@pytest.mark.parametrize("key", ["RECOVERY_S", "GUARD_S"])
@pytest.mark.parametrize("value", [None, "", "0", "-5", "12s", "1.5"])
def test_the_agent_refuses_settings_without_valid_budgets(
    tmp_path: Path, key: str, value: str | None
) -> None:
    lines = [line for line in _settings().encode().decode().splitlines() if not line.startswith(f"{key}=")]
    if value is not None:
        lines.append(f"{key}={value}")
    problem = _agent_checks(tmp_path, "\n".join(lines) + "\n")
    shown = value or ""
    assert problem == (
        f"{key} must be a whole number of seconds, at least 1 (not '{shown}'): a zero limit would be no limit"
    )
