"""A flake with inputs, new to the host: the flake and every input reach it and build.

The copy really transfers paths, also when no flake.lock exists yet (deploy-flake's own
evaluation writes it; Nix 2.34 then names another source path, see nix.flake_metadata)."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.lab import Host, deploy, fixture_lib_into

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]


def fixture_lib(directory: Path, nonce: str) -> Path:
    """The fixture's building blocks as a flake of their own (an input), unique to this test."""
    directory.mkdir()
    fixture_lib_into(directory)
    (directory / "flake.nix").write_text(
        f'{{ outputs = {{ self }}: {{ nonce = "{nonce}"; lib = import ./lib.nix; }}; }}\n'
    )
    return directory


def consumer(directory: Path, input_url: str) -> Path:
    directory.mkdir()
    (directory / "flake.nix").write_text(
        "{\n"
        f'  inputs.fx.url = "{input_url}";\n'
        '  outputs = { self, fx }: let l = fx.lib { system = "x86_64-linux"; }; in {\n'
        '    nixosConfigurations.shared = l.mkSystem { hostName = "shared"; version = fx.nonce; };\n'
        "  };\n"
        "}\n"
    )
    return directory


def git_repo(directory: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=lab", "-c", "user.email=lab@example.invalid", "commit", "-qm", "fixture lib")


def archived_paths(flake: Path) -> list[str]:
    """The store paths of the flake and its inputs (nix flake archive --json, to this machine's store)."""
    done = subprocess.run(
        [*NIX, "flake", "archive", "--json", f"path:{flake}"], capture_output=True, text=True, check=True
    )
    doc = json.loads(done.stdout)
    return [doc["path"], *(i["path"] for i in doc.get("inputs", {}).values())]


@pytest.mark.parametrize("kind", ["path", "git+file"])
def test_a_flake_with_an_input_and_no_lock_file(hosts: dict[str, Host], tmp_path: Path, kind: str) -> None:
    nonce = secrets.token_hex(4)
    lib = fixture_lib(tmp_path / "lib", nonce)
    if kind == "git+file":
        git_repo(lib)
    flake = consumer(tmp_path / "flake", f"{kind}:{lib}" if kind == "path" else f"git+file://{lib}")
    assert not (flake / "flake.lock").exists()
    alpha = hosts["alpha"]
    r = deploy("--settle-time=0", "nixos://alpha/shared", flake=flake)
    assert r.returncode == 0, r.output
    res = r.host("nixos://alpha/shared")
    assert str(res["system"]).endswith(f"-nixos-system-shared-{nonce}")
    assert alpha.current_system() == res["system"]
    assert (flake / "flake.lock").exists(), "the deploy's evaluation locked the input"
    # the flake and its input travelled: both are in the host's store, copied by this deploy
    assert "copying path" in r.output, r.output
    paths = archived_paths(flake)
    assert len(paths) == 2, paths
    for path in paths:
        assert alpha.ssh(f"test -e {path}", check=False).returncode == 0, f"{path} is not on alpha"
    # a second deploy of the now-locked flake builds the same system and changes nothing
    r = deploy("--settle-time=0", "nixos://alpha/shared", flake=flake)
    assert r.returncode == 0, r.output
    assert r.host("nixos://alpha/shared")["system"] == res["system"]
