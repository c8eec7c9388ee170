"""The lab's hosts have NixOS's tools and PATHs (lab/README.md, "Tools and PATHs"), and
deploy-flake works under them: the agent takes every tool, and its shell, from the system
that ran before the deploy, under bash's POSIX mode and under dash."""

from __future__ import annotations

import pytest

from deploy_flake.agent.script import script_path
from tests.lab import Host, deploy

SW_BIN = "/run/current-system/sw/bin"


def _not_usr(path: str) -> None:
    dirs = path.split(":")
    assert not [d for d in dirs if d.startswith(("/usr", "/bin", "/sbin"))], path


def test_logins_sudo_and_units_see_nixos_paths(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    for user in ("root", "deploy"):
        path = alpha.ssh("echo $PATH", user=user).stdout.strip()
        _not_usr(path)
        assert path.startswith("/run/wrappers/bin:") and path.endswith(f":{SW_BIN}"), path
        found = alpha.ssh("command -v sh cat flock awk systemctl systemd-run nix-store sudo", user=user)
        assert found.stdout.split() == [
            f"{SW_BIN}/{t}" for t in "sh cat flock awk systemctl systemd-run nix-store".split()
        ] + ["/run/wrappers/bin/sudo"]
    # sudo keeps the caller's PATH (NixOS sets no secure_path)
    login = alpha.ssh("echo $PATH", user="deploy").stdout.strip()
    assert alpha.ssh("sudo -n sh -c 'echo $PATH'", user="deploy").stdout.strip() == login
    # a transient unit's PATH is only systemd's own bin/
    systemd = alpha.out("readlink -f /run/booted-system/systemd")
    unit_path = alpha.out("systemd-run --quiet --wait --pipe --collect sh -c 'echo $PATH'")
    assert unit_path == f"{systemd}/bin"
    # /bin/sh is the system's bash in POSIX mode, re-pointed by every activation
    before = alpha.current_system()
    assert alpha.out("readlink /bin/sh") == f"{before}/sw/bin/sh"
    assert alpha.out("/bin/sh -c 'echo ${BASH_VERSION:+bash}; shopt -qo posix && echo posix'").split() == [
        "bash",
        "posix",
    ]
    r = deploy("alpha")
    assert r.returncode == 0, r.output
    after = alpha.current_system()
    assert after != before and alpha.out("readlink /bin/sh") == f"{after}/sw/bin/sh"


@pytest.mark.parametrize(("previous", "shell"), [("tool-shims-a", "bash"), ("tool-shims-dash", "dash")])
def test_the_agent_runs_the_previous_systems_tools_and_shell(
    hosts: dict[str, Host], previous: str, shell: str
) -> None:
    """The systems' tools are shims that record which system's tool ran, by which process:
    every tool the agent ran (its transaction in the unit included) is the previous system's,
    run by the previous system's sh (bash as sh, or dash), never by /bin/sh, which the
    activation re-points to the new system's."""
    alpha = hosts["alpha"]
    r = deploy(f"nixos://alpha/{previous}")
    assert r.returncode == 0, r.output
    prev = alpha.current_system()
    alpha.ssh(": > /run/fixture-tools/log")
    r = deploy("nixos://alpha/tool-shims-b")
    assert r.returncode == 0, r.output
    new = alpha.current_system()
    assert new.endswith("nixos-system-tool-shims-b-1") and alpha.out("readlink /bin/sh") == f"{new}/sw/bin/sh"
    alpha.assert_clean_after(running=new, boot=new)

    agent = script_path()
    records = []  # (system's host name, tool, the caller's executable, the caller's argv)
    for line in alpha.out("cat /run/fixture-tools/log").splitlines():
        # (a caller's argument may span lines: `sh -c SCRIPT`)
        host, tool, exe, *argv = [*line.split(), "", "", ""][:3] + line.split()[3:]
        if len(argv) > 2 and argv[1] == agent:
            records.append((host, tool, exe, argv))
    verbs = {argv[2] for _, _, _, argv in records}
    assert {"start", "run", "confirm"} <= verbs, verbs
    assert {host for host, *_ in records} == {previous}
    assert {argv[0] for *_, argv in records} == {f"{prev}/sw/bin/sh"}
    assert {exe.rsplit("/", 1)[1] for _, _, exe, _ in records} == {shell}
    assert {tool for _, tool, _, _ in records} >= {"flock", "systemctl", "systemd-run"}
