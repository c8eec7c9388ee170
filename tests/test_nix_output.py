"""deploy-flake's parsers fed with what Nix 2.8, 2.26 and 2.34 really print.

The files under tests/data/nix-output/VERSION/ come from tests/data/nix-output/capture.sh,
run with this machine's Nix (2.8) and in the lab's deployer roots (trixie 2.26, sid 2.34)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from deploy_flake import nix, process
from deploy_flake.errors import DeployError

DATA = Path(__file__).parent / "data" / "nix-output"
VERSIONS = ["2.8.0", "2.26.3", "2.34.8"]
THROW = "capture: evaluation of eval-fail intentionally fails"
BROKEN_DRV = "/nix/store/rrlylw0p8ygw5dpp50gam9fds58gz9rf-broken-dep-1.0.drv"


def output(version: str, name: str) -> str:
    return (DATA / version / name).read_text()


def test_every_captured_version_is_tested() -> None:
    assert sorted(p.name for p in DATA.iterdir() if p.is_dir()) == sorted(VERSIONS)
    for version in VERSIONS:
        assert output(version, "version") == f"nix (Nix) {version}\n"


@pytest.mark.parametrize("version", VERSIONS)
def test_metadata_names_the_source_the_archive_copies(version: str) -> None:
    flake = nix.parse_metadata(output(version, "metadata.json"))
    assert flake.url.startswith("path:/tmp/deploy-flake-nix-output/flake?")
    assert flake.store_path == json.loads(output(version, "archive.json"))["path"]
    assert flake.store_path.startswith("/nix/store/") and flake.store_path.endswith("-source")


def test_unexpected_metadata_is_a_deploy_error() -> None:
    for bad in ("", "[]", '{"url": "path:/f"}', "warning: something"):
        with pytest.raises(DeployError, match="unexpected output from nix flake metadata"):
            nix.parse_metadata(bad)


@pytest.mark.parametrize("version", VERSIONS)
def test_build_json_gives_the_toplevel(version: str) -> None:
    out = nix.parse_build_output(output(version, "build.json"))
    assert out == "/nix/store/8hn1rnw4xpclv0dlgxad2ywcflmgqfzc-nixos-system-capture"


@pytest.mark.parametrize("version", VERSIONS)
def test_evaluation_error_says_what_the_throw_says(version: str) -> None:
    stderr = output(version, "build-eval-fail.stderr")
    assert nix._last_nix_error(stderr)[0] == THROW
    assert nix._build_failure(stderr, "eval-fail") == f"the build failed: {THROW}"


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("2.8.0", f"builder for '{BROKEN_DRV}' failed with exit code 1"),
        ("2.26.3", f"builder for '{BROKEN_DRV}' failed with exit code 1"),
        ("2.34.8", f"Cannot build '{BROKEN_DRV}'. Reason: builder failed with exit code 1."),
    ],
)
def test_build_failure_names_the_failed_builder_and_its_exit_code(version: str, reason: str) -> None:
    stderr = output(version, "build-build-fail.stderr")
    assert nix._build_failure(stderr, "build-fail") == f"the build failed: {reason}"


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_configuration_says_how_to_name_one(version: str) -> None:
    stderr = output(version, "build-no-such-config.stderr")
    assert nix._build_failure(stderr, "no-such-config") == (
        "the flake has no nixosConfigurations.no-such-config: name the configuration with nixos://HOST/NAME"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_archive_json_names_the_flake_and_its_inputs(version: str) -> None:
    archived = json.loads(output(version, "archive.json"))
    assert set(archived) == {"path", "inputs"}
    assert archived["inputs"]["dep"]["path"] == "/nix/store/ya9a20rrlh8w52khy8xkn3iqggfczyiy-source"


def test_nix_2_34_names_the_tree_without_the_lock_file_it_just_wrote() -> None:
    """Why flake_metadata asks twice: the metadata call that writes flake.lock names a tree the
    archive after it never copies (on 2.34; 2.8 and 2.26 name the copied one)."""
    for version in VERSIONS:
        first = nix.parse_metadata(output(version, "metadata-new-lock.json")).store_path
        copied = json.loads(output(version, "archive-after-new-lock.json"))["path"]
        assert (first == copied) is (version != "2.34.8")
        assert nix.parse_metadata(output(version, "metadata.json")).store_path == copied


def _fake_nix(
    monkeypatch: pytest.MonkeyPatch, directory: Path, answers: list[str], *, writes_lock: bool
) -> list[list[str]]:
    """process.run answering `nix flake metadata` with the captured outputs, in turn; the first
    call writes flake.lock when writes_lock."""
    calls: list[list[str]] = []

    async def run(argv: list[str], *, timeout: float | None = None) -> process.Completed:
        calls.append(list(argv))
        if writes_lock and len(calls) == 1:
            (directory / "flake.lock").write_text('{"version": 7}\n')
        return process.Completed(tuple(argv), 0, answers[len(calls) - 1], "")

    monkeypatch.setattr(process, "run", run)
    return calls


@pytest.mark.parametrize("version", VERSIONS)
def test_metadata_that_writes_the_lock_file_is_asked_again(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }\n")
    answers = [output(version, "metadata-new-lock.json"), output(version, "metadata.json")]
    calls = _fake_nix(monkeypatch, tmp_path, answers, writes_lock=True)
    flake = asyncio.run(nix.flake_metadata(tmp_path))
    assert flake.store_path == json.loads(output(version, "archive-after-new-lock.json"))["path"]
    assert calls == [nix.metadata_argv(tmp_path)] * 2


def test_metadata_with_the_lock_file_in_place_is_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }\n")
    (tmp_path / "flake.lock").write_text('{"version": 7}\n')
    calls = _fake_nix(monkeypatch, tmp_path, [output("2.34.8", "metadata.json")], writes_lock=False)
    flake = asyncio.run(nix.flake_metadata(tmp_path))
    assert flake.store_path == json.loads(output("2.34.8", "archive.json"))["path"]
    assert len(calls) == 1
