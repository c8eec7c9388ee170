"""--build-on=local and --build-on=HOST: each configuration is built once for the whole run.

Its closure is copied to every host that runs it (paths new to the hosts: the copy is real);
a login Nix does not trust, and a builder out of reach, are refused."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from tests.lab import Host, deploy, fixture_lib_into, notes


def shared_flake(directory: Path) -> tuple[Path, str]:
    """A flake with one configuration, `shared`, that no store has seen yet."""
    nonce = secrets.token_hex(4)
    fixture_lib_into(directory)
    (directory / "flake.nix").write_text(
        '{ outputs = { self }: let fx = import ./lib.nix { system = "x86_64-linux"; }; in {\n'
        f'  nixosConfigurations.shared = fx.mkSystem {{ hostName = "shared"; version = "{nonce}"; }};\n'
        "}; }\n"
    )
    return directory, nonce


def builds_of(output: str, nonce: str) -> int:
    """How many times the toplevel derivation was built, by Nix's own log lines."""
    return len(re.findall(rf"building '/nix/store/[a-z0-9]+-nixos-system-shared-{nonce}\.drv'", output))


def test_build_on_local_builds_once_for_three_hosts(hosts: dict[str, Host], tmp_path: Path) -> None:
    flake, nonce = shared_flake(tmp_path)
    dests = ["nixos://alpha/shared", "nixos://beta/shared", "nixos://gamma/shared"]
    r = deploy("--build-on=local", "--settle-time=0", *dests, flake=flake)
    assert r.returncode == 0, r.output
    assert builds_of(r.output, nonce) == 1, r.output
    systems = {r.host(d)["system"] for d in dests}
    assert len(systems) == 1
    (system,) = systems
    for name in ("alpha", "beta", "gamma"):
        assert hosts[name].current_system() == system
        assert f"copying path '{system}' to 'ssh-ng://{name}'" in r.output, "the closure was copied"
        assert hosts[name].out("ls -d /tmp/deploy-flake-* 2>/dev/null || true") == ""

    # the control: built on each host, the same configuration is built once per host
    (tmp_path / "again").mkdir()
    flake, nonce = shared_flake(tmp_path / "again")
    r = deploy("--settle-time=0", "nixos://alpha/shared", "nixos://beta/shared", flake=flake)
    assert r.returncode == 0, r.output
    assert builds_of(r.output, nonce) == 2, r.output


def test_build_on_a_builder_host(hosts: dict[str, Host], tmp_path: Path) -> None:
    flake, nonce = shared_flake(tmp_path)
    gamma_before = hosts["gamma"].current_system()
    p = deploy("plan", "--build-on=gamma", "nixos://alpha/shared", flake=flake)
    assert p.returncode == 0, p.output
    r = deploy(
        "--build-on=gamma", "--settle-time=0", "nixos://alpha/shared", "nixos://beta/shared", flake=flake
    )
    assert r.returncode == 0, r.output
    assert builds_of(p.output + r.output, nonce) == 1, "planned and deployed from one build on gamma"
    system = r.host("nixos://alpha/shared")["system"]
    assert any("on gamma" in n for n in notes(r.host("nixos://alpha/shared")))
    assert hosts["alpha"].current_system() == hosts["beta"].current_system() == system
    # the builder built, and was not deployed to; its build result link is gone
    assert hosts["gamma"].current_system() == gamma_before
    assert hosts["gamma"].out("ls -d /tmp/deploy-flake-* 2>/dev/null || true") == ""
    assert hosts["gamma"].ssh(f"test -e {system}", check=False).returncode == 0


def test_build_elsewhere_refused_by_an_untrusted_login(hosts: dict[str, Host], tmp_path: Path) -> None:
    flake, _ = shared_flake(tmp_path)
    delta = hosts["delta"]
    before = delta.current_system()
    r = deploy("--build-on=local", "nixos://deploy@delta/shared", flake=flake)
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://deploy@delta/shared")["error"])
    assert "deploy is not a trusted Nix user" in err and "trusted-users" in err, err
    assert "attempt 2" not in r.output, "a refusal is not retried"
    delta.assert_clean_after(running=before, boot=before)


def test_an_unreachable_builder_fails_every_host_and_changes_nothing(
    hosts: dict[str, Host], tmp_path: Path
) -> None:
    flake, _ = shared_flake(tmp_path)
    before = hosts["alpha"].current_system()
    r = deploy("--build-on=nosuchhost", "nixos://alpha/shared", "nixos://beta/shared", flake=flake)
    assert r.returncode == 1, r.output
    for d in ("nixos://alpha/shared", "nixos://beta/shared"):
        assert "the builder (--build-on): cannot reach nosuchhost" in str(r.host(d)["error"])
    hosts["alpha"].assert_clean_after(running=before, boot=before)
