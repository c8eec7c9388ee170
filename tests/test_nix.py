"""The exact command line of each Nix call whose flags differ across Nix versions.

Every one of them was run as it is here with Nix 2.8, 2.26 and 2.34 (tests/data/nix-output)."""

from __future__ import annotations

from pathlib import Path

from deploy_flake import nix
from deploy_flake.agent.script import script
from deploy_flake.host import inspection

FEATURES = ["--extra-experimental-features", "nix-command flakes"]
SOURCE = "/nix/store/" + "s" * 32 + "-source"
SYSTEM = "/nix/store/" + "t" * 32 + "-nixos-system-web1"


def test_flake_metadata_argv(tmp_path: Path) -> None:
    assert nix.metadata_argv(tmp_path) == [
        "nix",
        *FEATURES,
        "flake",
        "metadata",
        "--json",
        f"path:{tmp_path.resolve()}",
    ]


def test_flake_archive_argv(tmp_path: Path) -> None:
    assert nix.archive_argv("ssh-ng://web1", tmp_path) == [
        "nix",
        *FEATURES,
        "flake",
        "archive",
        "--json",
        "--to",
        "ssh-ng://web1",
        f"path:{tmp_path.resolve()}",
    ]


def test_build_argv_builds_the_copied_source_with_extra_args_before_the_installable() -> None:
    flake = nix.Flake(url="path:/f", store_path=SOURCE)
    argv = nix.build_argv(flake, "web1", gc_root="/tmp/gc.system", extra_args=("--max-jobs", "2"))
    assert argv == [
        "nix",
        *FEATURES,
        "build",
        "--out-link",
        "/tmp/gc.system",
        "--json",
        "-L",
        "--max-jobs",
        "2",
        f"path:{SOURCE}#nixosConfigurations.web1.config.system.build.toplevel",
    ]


def test_copy_argv_both_directions() -> None:
    assert nix.copy_argv(SYSTEM, "ssh-ng://web1", to=True) == [
        "nix",
        *FEATURES,
        "copy",
        "--no-check-sigs",
        "--to",
        "ssh-ng://web1",
        SYSTEM,
    ]
    assert nix.copy_argv(SYSTEM, "ssh-ng://builder", to=False)[-3:] == ["--from", "ssh-ng://builder", SYSTEM]


def test_closure_diff_argv() -> None:
    old = "/nix/store/" + "o" * 32 + "-nixos-system-web1"
    assert inspection.closure_diff_argv(old, SYSTEM) == [
        "nix",
        *FEATURES,
        "store",
        "diff-closures",
        old,
        SYSTEM,
    ]


def test_profile_commands_of_the_agent() -> None:
    """The agent (on the host) switches the system profile with nix-env: the same two command
    lines on Nix 2.8 to 2.34 (`nix-env --set` and `--switch-generation`; `nix profile` is not
    for the system profile), each bounded and with the deploy lock's fd closed."""
    text = script().decode()
    calls = sorted({line.strip() for line in text.splitlines() if "nix-env " in line and "timeout" in line})
    assert calls == [
        'timeout -k "$KILL_GRACE_S" "$PROFILE_SET_S" nix-env -p "$PROFILE" --set "$NEW" 8>&-',
        'timeout -k "$KILL_GRACE_S" "$PROFILE_SET_S" nix-env -p "$PROFILE" --switch-generation '
        '"$GENERATION" 8>&-',
    ]
    assert "PROFILE=/nix/var/nix/profiles/system" in text
