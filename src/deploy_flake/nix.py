"""One function per Nix operation, local (the flake) or on a host (the build)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from deploy_flake import process
from deploy_flake.errors import DeployError, PermanentError, ProcessTimeout, UsageError
from deploy_flake.models import Timeouts
from deploy_flake.process import LineSink
from deploy_flake.remote.ssh import Remote

# Hosts need not enable flakes in their nix.conf.
NIX_FEATURES = ("--extra-experimental-features", "nix-command flakes")
# The flake output that describes the hosts (see inventory.py).
INVENTORY_ATTR = "deployFlake.hosts"
INVENTORY_EVAL_TIMEOUT_S = 300


@dataclass(frozen=True)
class Flake:
    """The flake as resolved locally: what is copied to every host."""

    url: str
    store_path: str

    def toplevel_attr(self, config: str) -> str:
        return f"nixosConfigurations.{config}.config.system.build.toplevel"


def flake_ref(directory: Path) -> str:
    """A path: reference, so that untracked files of a git checkout are deployed as they are."""
    return f"path:{directory.resolve()}"


def metadata_argv(directory: Path) -> list[str]:
    return ["nix", *NIX_FEATURES, "flake", "metadata", "--json", flake_ref(directory)]


def archive_argv(store_uri: str, directory: Path) -> list[str]:
    return ["nix", *NIX_FEATURES, "flake", "archive", "--json", "--to", store_uri, flake_ref(directory)]


def build_argv(
    flake: Flake, config: str, *, gc_root: str | None, extra_args: tuple[str, ...] = ()
) -> list[str]:
    """gc_root: the result link; None for none (a host's root is made by root, after the build)."""
    installable = f"path:{flake.store_path}#{flake.toplevel_attr(config)}"
    link = ["--out-link", gc_root] if gc_root else ["--no-link"]
    return ["nix", *NIX_FEATURES, "build", *link, "--json", "-L", *extra_args, installable]


def copy_argv(path: str, store_uri: str, *, to: bool) -> list[str]:
    """Copies path to the store at store_uri (to), or from it."""
    return ["nix", *NIX_FEATURES, "copy", "--no-check-sigs", "--to" if to else "--from", store_uri, path]


async def flake_metadata(directory: Path) -> Flake:
    """The flake as every host gets it. When this call writes flake.lock (new or changed), Nix
    2.34 names the source from before the lock file was written, while each `flake archive`
    after it copies the source with the lock file, a path the host would never have: so then
    ask again, with the lock file in place (Nix 2.8 and 2.26 answer the same path twice)."""
    if not (directory / "flake.nix").is_file():
        raise DeployError(f"no flake.nix in {directory}: pass the flake's directory with --flake DIR")
    lock = directory / "flake.lock"
    before = _contents(lock)
    flake = await _metadata(directory)
    if _contents(lock) != before:
        flake = await _metadata(directory)
    return flake


async def _metadata(directory: Path) -> Flake:
    try:
        done = await process.run(metadata_argv(directory), timeout=300)
    except FileNotFoundError:
        raise DeployError(
            "the nix command is not installed here; deploy-flake needs Nix on this machine"
        ) from None
    if not done.ok:
        raise DeployError(f"cannot evaluate the flake in {directory}: {done.last_lines(3)}")
    return parse_metadata(done.stdout)


def _contents(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def parse_metadata(stdout: str) -> Flake:
    """`nix flake metadata --json`: the same keys from Nix 2.8 to 2.34."""
    try:
        meta = json.loads(stdout)
        return Flake(url=meta.get("url") or meta["originalUrl"], store_path=meta["path"])
    except (ValueError, LookupError, TypeError, AttributeError):
        raise DeployError(f"unexpected output from nix flake metadata: {stdout[:200]!r}") from None


async def flake_archive(remote: Remote, directory: Path, *, timeout: float, on_line: LineSink) -> None:
    """Copies the flake and all its inputs to the host's store (path: and private inputs too)."""
    done = await remote.run_nix(
        archive_argv(remote.nix_store_uri(), directory), timeout=timeout, on_stderr=on_line
    )
    if not done.ok:
        raise DeployError(f"copying the flake to {remote.dest.host} failed: {done.last_lines(3)}")


async def build_toplevel(
    remote: Remote | None,
    flake: Flake,
    config: str,
    *,
    extra_args: tuple[str, ...],
    gc_root: str | None,
    timeout: float,
    on_line: LineSink,
) -> str:
    """Builds the system on the host (remote None: here), once, with its log streamed;
    returns the toplevel store path.

    The result link gc_root (if any) keeps the system from a garbage collection until the
    system profile holds it; a target host's own root is made by root right after the build
    (deploy/build.py), in a directory only root writes to.
    """
    argv = build_argv(flake, config, gc_root=gc_root, extra_args=extra_args)
    try:
        if remote is None:
            done = await process.run(argv, timeout=timeout, on_stderr=on_line)
        else:
            done = await remote.run(argv, timeout=timeout, on_stderr=on_line, what="the build")
    except ProcessTimeout:
        raise DeployError(f"the build did not finish within {timeout:.0f}s (--build-timeout)") from None
    if not done.ok:
        raise DeployError(_build_failure(done.stderr, config))
    return parse_build_output(done.stdout)


def parse_build_output(stdout: str) -> str:
    """The toplevel's store path from `nix build --json` (2.26+ add start and stop times)."""
    try:
        return str(json.loads(stdout)[0]["outputs"]["out"])
    except (ValueError, LookupError, TypeError):
        raise DeployError(f"unexpected output from nix build: {stdout[:200]!r}") from None


async def copy_closure(
    path: str,
    *,
    to: Remote | None = None,
    source: Remote | None = None,
    timeout: float,
    on_line: LineSink,
) -> None:
    """Copies a store path and its closure with Nix's own copy over ssh-ng: to a host from
    here, or from a host to here. Unsigned paths (our own builds) need a trusted user there."""
    remote = to or source
    assert remote is not None and (to is None) != (source is None)
    argv = copy_argv(path, remote.nix_store_uri(), to=to is not None)
    done = await remote.run_nix(argv, timeout=timeout, on_stderr=on_line)
    if done.ok:
        return
    where = f"to {remote.dest.host}" if to else f"from {remote.dest.host}"
    if "lacks a signature" in done.stderr or "lacks a valid signature" in done.stderr:
        user = remote.dest.user or "the login user"
        raise PermanentError(
            f"{remote.dest.host} refuses the closure built elsewhere: {user} is not a trusted Nix "
            "user there (add it to nix.settings.trusted-users, log in as root, or build on the "
            "host with --build-on=target)"
        )
    raise DeployError(f"copying the system {where} failed: {done.last_lines(3)}")


async def retry_copy(
    what: str, copy: Callable[[], Awaitable[None]], t: Timeouts, note: Callable[[str], None]
) -> None:
    """A copy with up to t.copy_attempts tries, each within t.copy (--copy-timeout), 2 s, 4 s,
    ... apart; a PermanentError (the host refuses the paths) is not tried again."""
    attempts = max(1, t.copy_attempts)
    for attempt in range(1, attempts + 1):
        try:
            await copy()
            return
        except DeployError as e:  # a timeout (ProcessTimeout) too
            reason = (
                f"no progress within {t.copy:.0f}s (--copy-timeout)"
                if isinstance(e, ProcessTimeout)
                else str(e)
            )
            if attempt == attempts or isinstance(e, PermanentError):
                tries = f"{attempt} attempts" if attempt > 1 else "1 attempt"
                raise DeployError(f"{what} failed after {tries}: {reason}") from None
            delay = 2.0**attempt
            note(f"{what}: copy attempt {attempt} failed ({reason}); retrying in {delay:.0f}s")
            await asyncio.sleep(delay)


# As root: the root's directory (the agent's, under /run) is root's alone, made here if the
# agent was not installed yet.
_ADD_ROOT = 'umask 077 && mkdir -p "${1%/*}" && exec nix-store --realise "$2" --add-root "$1"'


async def add_gc_root(remote: Remote, path: str, link: str) -> None:
    """A GC root on the host, made by root, for a store path built or copied there, until the
    transaction's end (the agent drops it) or the job's (the deployer does)."""
    argv = ["sh", "-c", _ADD_ROOT, "sh", link, path]
    done = await remote.run(argv, root=True, timeout=120, what=f"registering {path}")
    if not done.ok:
        raise DeployError(f"cannot register {path} on {remote.dest.host}: {done.last_lines(2)}")


# The failed builder, as Nix 2.8-2.26 (`builder for '….drv' failed with exit code 1`) and 2.34
# (`Cannot build '….drv'.`, the cause on a `Reason:` line below) say it.
_BUILDER_FAILED = re.compile(r"^error: ((?:builder for|Cannot build) '[^']+\.drv'.*)$")


def _build_failure(stderr: str, config: str) -> str:
    """The reason a `nix build` failed, in one line: the first builder that failed, else Nix's
    own (last) error message."""
    lines = [_ANSI.sub("", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    if any("does not provide attribute" in ln for ln in lines):
        return f"the flake has no nixosConfigurations.{config}: name the configuration with nixos://HOST/NAME"
    for i, line in enumerate(lines):
        failed = _BUILDER_FAILED.match(line)
        if failed:
            rest = lines[i + 1 :]
            block = rest[: next((j for j, ln in enumerate(rest) if ln.startswith("error:")), len(rest))]
            reason = [ln for ln in block if ln.startswith("Reason:")]
            return f"the build failed: {' '.join([failed.group(1), *reason[:1]])}"
    message, where = _last_nix_error(stderr)
    return f"the build failed: {message}{where}"


async def eval_inventory(flake_dir: Path) -> object:
    """The flake's deployFlake.hosts output as JSON data: one local `nix eval`, nothing built.

    Every failure is a UsageError: it happens before any host is touched.
    """
    if not (flake_dir / "flake.nix").is_file():
        raise UsageError(f"no flake.nix in {flake_dir}: pass the flake's directory with --flake DIR")
    # No import from derivation: reading the inventory builds nothing (a flake could
    # otherwise run a build on this machine just to say which hosts it has).
    argv = [
        "nix",
        *NIX_FEATURES,
        "eval",
        "--option",
        "allow-import-from-derivation",
        "false",
        "--json",
        f"{flake_ref(flake_dir)}#{INVENTORY_ATTR}",
    ]
    try:
        done = await process.run(argv, timeout=INVENTORY_EVAL_TIMEOUT_S)
    except FileNotFoundError:
        raise UsageError(
            "the nix command is not installed here; deploy-flake needs Nix on this machine"
        ) from None
    except ProcessTimeout:
        raise UsageError(
            f"evaluating {INVENTORY_ATTR} of the flake at {flake_dir} did not finish within "
            f"{INVENTORY_EVAL_TIMEOUT_S}s"
        ) from None
    if not done.ok:  # stdout may hold a partial document: never parse it
        raise UsageError(_inventory_failure(done.stderr, flake_dir))
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise UsageError(f"unexpected output from nix eval: {done.stdout[:200]!r}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STORE_SOURCE = re.compile(r"/nix/store/[a-z0-9]{32}-source/")


def _inventory_failure(stderr: str, flake_dir: Path) -> str:
    message, where = _last_nix_error(stderr)
    if "does not provide attribute" in message and f"'{INVENTORY_ATTR}'" in message:
        return f"the flake at {flake_dir} has no {INVENTORY_ATTR} output: {message}"
    if "allow-import-from-derivation" in message:
        return (
            f"{INVENTORY_ATTR} of the flake at {flake_dir} imports from a derivation, which would "
            f"build on this machine; reading the inventory builds nothing: {message}{where}"
        )
    return f"cannot evaluate {INVENTORY_ATTR} of the flake at {flake_dir}: {message}{where}"


def _last_nix_error(stderr: str) -> tuple[str, str]:
    """Nix's last `error:` message (newer Nix prints a trace of errors, the real one last),
    and where it happened (" (at flake.nix:3:5)") when Nix says so."""
    lines = [_ANSI.sub("", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    if not starts:
        return (lines[-1] if lines else "nix eval failed"), ""
    i = starts[-1]
    message = lines[i].removeprefix("error:").strip()
    if not message and i + 1 < len(lines):  # `error:` alone, the message on the next line
        i += 1
        message = lines[i]
    where = ""
    if i + 1 < len(lines) and lines[i + 1].startswith("at "):
        where = f" ({_STORE_SOURCE.sub('', lines[i + 1]).rstrip(':')})"
    return message or "nix eval failed", where


def build_args(cmdline: str | None) -> tuple[str, ...]:
    return tuple(shlex.split(cmdline)) if cmdline else ()
