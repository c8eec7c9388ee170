"""The new system onto the host: the flake copied there and the system built there
(--build-on=target, the default), or built once by the run's builder and copied there."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from deploy_flake import nix
from deploy_flake.deploy.host import HostJob
from deploy_flake.destination import check_config_name
from deploy_flake.host.target import HostFacts
from deploy_flake.models import Stage


@contextlib.asynccontextmanager
async def copying_flake(job: HostJob) -> AsyncIterator[asyncio.Task[None] | None]:
    """The flake's copy to the host, begun at once: it needs nothing the host's facts tell,
    so it runs while they are read. None when the run's builder builds (it has the flake).
    A copy the job no longer waits for when it ends is stopped."""
    copy = None
    if job.run.builder is None:
        copy = asyncio.create_task(_copy_flake(job))
    try:
        yield copy
    finally:
        if copy is not None:
            await _settle(copy)


async def _copy_flake(job: HostJob) -> None:
    await nix.retry_copy(
        "copying the flake",
        lambda: nix.flake_archive(job.remote, job.opts.flake_dir, timeout=job.t.copy, on_line=job.line),
        job.t,
        job.note,
    )


async def build_system(job: HostJob, facts: HostFacts, copy: asyncio.Task[None] | None) -> str:
    """Builds this host's configuration on it, once the flake's copy (started with the
    facts' lookup) is there; or, with a builder, has it built and copies the system."""
    config = job.dest.config or check_config_name(
        facts.hostname, f"the host name that {job.dest.host} reports,"
    )
    job.result.config = config
    builder = job.run.builder
    if builder is not None:
        job.stage(Stage.BUILD)
        toplevel = await builder.toplevel(config, on_line=job.line, note=job.note)
        job.note(f"built {toplevel} {builder.where}")
        job.stage(Stage.COPY)
        await nix.retry_copy(
            "copying the system",
            lambda: nix.copy_closure(toplevel, to=job.remote, timeout=job.t.copy, on_line=job.line),
            job.t,
            job.note,
        )
        await nix.add_gc_root(job.remote, toplevel, job.gc_root)
        return toplevel
    job.stage(Stage.COPY)
    assert copy is not None, "a deploy or plan that builds on the host starts the copy with the facts"
    await copy
    job.stage(Stage.BUILD)
    # No result link from the build (its user could only write one where anyone may): the
    # root's GC root is made by root at once. A garbage collection in between would leave
    # the host without the system: the checks then refuse it, with nothing changed.
    toplevel = await nix.build_toplevel(
        job.remote,
        job.run.flake,
        config,
        extra_args=job.opts.build_args,
        gc_root=None,
        timeout=job.t.build,
        on_line=job.line,
    )
    await nix.add_gc_root(job.remote, toplevel, job.gc_root)
    job.note(f"built {toplevel}")
    return toplevel


async def _settle(task: asyncio.Task[None]) -> None:
    """A helper task this host no longer waits for: stopped (its process killed), and its
    outcome taken, so that an error nobody awaited is not reported again."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
