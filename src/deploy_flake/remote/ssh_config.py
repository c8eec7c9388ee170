"""Each destination as ssh itself resolves it (ssh -G), with the ssh options it will be reached
with (an inventory host's own among them): two destinations that ssh takes to the same machine
(aliases, users, ports, HostName or ProxyJump options) are refused before any host is touched."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from deploy_flake import process
from deploy_flake.destination import Destination, SshTarget, check_distinct_hosts
from deploy_flake.errors import UsageError
from deploy_flake.remote.ssh import config_command

# ssh -G only reads configuration files; a `Match exec` in them may run a command.
SSH_CONFIG_TIMEOUT_S = 30
SSH_CONFIG_PARALLEL = 32


# A destination and every ssh option it is reached with: its own (an inventory's), then the run's.
Reached = tuple[Destination, tuple[str, ...]]


def check_distinct_destinations(targets: Sequence[Reached], ssh_config: Path | None) -> None:
    """Refuses two destinations that ssh takes to the same machine (aliases, users, ports, and
    each destination's own options: HostName, Port, ProxyJump)."""
    if len(targets) > 1:
        check_distinct_hosts(asyncio.run(_ssh_targets(targets, ssh_config)))


async def _ssh_targets(targets: Sequence[Reached], ssh_config: Path | None) -> list[SshTarget]:
    limit = asyncio.Semaphore(SSH_CONFIG_PARALLEL)

    async def one(dest: Destination, options: tuple[str, ...]) -> SshTarget:
        async with limit:
            return await _ssh_target(dest, ssh_config, options)

    answers = await asyncio.gather(*(one(d, o) for d, o in targets), return_exceptions=True)
    for answer in answers:  # the first problem in command-line order, whichever finished first
        if isinstance(answer, BaseException):
            raise answer
    return [a for a in answers if isinstance(a, SshTarget)]


async def _ssh_target(dest: Destination, ssh_config: Path | None, ssh_options: tuple[str, ...]) -> SshTarget:
    argv = config_command(dest, config_file=ssh_config, options=ssh_options)
    try:
        done = await process.run(argv, timeout=SSH_CONFIG_TIMEOUT_S)
    except process.ProcessTimeout:
        raise UsageError(
            f"reading the ssh configuration for {dest.raw!r} (ssh -G) took over {SSH_CONFIG_TIMEOUT_S}s"
        ) from None
    except OSError as e:
        raise UsageError(f"cannot run ssh: {e.strerror or e}") from None
    if not done.ok:
        raise UsageError(f"ssh cannot read its configuration for {dest.raw!r}: {done.last_lines(1)}")
    return SshTarget.from_ssh_config(dest, done.stdout)
