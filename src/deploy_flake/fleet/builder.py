"""Build once for many hosts (--build-on=local or HOST): every configuration is built a
single time for the whole run, on the deployer or on one builder host, and its closure
copied to each host that runs it. --build-on=target, the default, builds on every host."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from deploy_flake import nix
from deploy_flake.errors import DeployError
from deploy_flake.models import BuildOn, BuildPlace, Timeouts
from deploy_flake.nix import Flake
from deploy_flake.process import LineSink
from deploy_flake.remote.ssh import Remote, SshSettings


class Builder:
    """The run's one builder: each configuration's system built once, however many hosts
    run it (Nix shares the store paths that configurations have in common)."""

    def __init__(
        self,
        build_on: BuildOn,
        flake: Flake,
        flake_dir: Path,
        *,
        ssh: SshSettings,
        workdir: Path,
        run_id: str,
        build_args: tuple[str, ...],
        timeouts: Timeouts,
    ) -> None:
        assert build_on.place is not BuildPlace.TARGET
        self.build_on = build_on
        self.flake = flake
        self.flake_dir = flake_dir
        self.workdir = workdir
        self.run_id = run_id
        self.build_args = build_args
        self.t = timeouts
        self.remote: Remote | None = None
        if build_on.builder is not None:
            control = ssh.control_dir / "builder"  # its own master, even if it is also a target
            control.mkdir(exist_ok=True)
            self.remote = Remote(build_on.builder, SshSettings(control, ssh.config_file, ssh.options))
        self._prepared: asyncio.Task[None] | None = None
        self._builds: dict[str, asyncio.Task[str]] = {}
        self._root_dir = ""  # on a builder host: this run's private directory of result links

    @property
    def where(self) -> str:
        return f"on {self.remote.dest.host}" if self.remote else "on the deployer"

    async def toplevel(self, config: str, *, on_line: LineSink, note: Callable[[str], None]) -> str:
        """The built system of config: the first host asking starts the build (its log goes to
        that host's output), the others wait for it. A failure fails every host that asked."""
        task = self._builds.get(config)
        if task is None:
            task = self._builds[config] = asyncio.create_task(self._build(config, on_line, note))
        else:
            note(f"waiting for the one build of {config} {self.where}")
        return await asyncio.shield(task)

    async def _prepare(self, note: Callable[[str], None], on_line: LineSink) -> None:
        """A builder host: the connection, and the flake with its inputs, once."""
        remote = self.remote
        assert remote is not None
        try:
            await remote.connect(self.t.connect)
        except DeployError as e:
            raise DeployError(f"the builder (--build-on): {e}") from None
        # the result links in a directory of the run's own (mktemp: mode 700, a name nobody
        # can guess or take first), not under a predictable name in the shared /tmp
        made = await remote.run(
            ["mktemp", "-d", "/tmp/deploy-flake-build.XXXXXXXXXX"], timeout=self.t.connect, what="mktemp"
        )
        if not made.ok or not made.stdout.strip():
            raise DeployError(f"the builder (--build-on): cannot make a directory in /tmp: {made.last_error}")
        self._root_dir = made.stdout.strip()
        await nix.retry_copy(
            f"copying the flake to the builder {remote.dest.host}",
            lambda: nix.flake_archive(remote, self.flake_dir, timeout=self.t.copy, on_line=on_line),
            self.t,
            note,
        )

    async def _build(self, config: str, on_line: LineSink, note: Callable[[str], None]) -> str:
        remote = self.remote
        if remote is None:
            root = str(self.workdir / f"result-{config}")
        else:
            if self._prepared is None:
                self._prepared = asyncio.create_task(self._prepare(note, on_line))
            await asyncio.shield(self._prepared)
            root = f"{self._root_dir}/{config}.system"
        note(f"building {config} {self.where}, once for every host that runs it")
        toplevel = await nix.build_toplevel(
            remote,
            self.flake,
            config,
            extra_args=self.build_args,
            gc_root=root,
            timeout=self.t.build,
            on_line=on_line,
        )
        if remote is not None:  # into the deployer's store, once; the hosts get it from there
            await nix.retry_copy(
                f"copying {config} from the builder {remote.dest.host}",
                lambda: nix.copy_closure(toplevel, source=remote, timeout=self.t.copy, on_line=on_line),
                self.t,
                note,
            )
        return toplevel

    async def close(self) -> None:
        """Stops builds nobody waits for any more; drops the builder's GC roots and connection."""
        tasks: list[asyncio.Task[str] | asyncio.Task[None]] = list(self._builds.values())
        if self._prepared is not None:
            tasks.append(self._prepared)
        for t in tasks:
            t.cancel()  # a no-op for those done
        await asyncio.gather(*tasks, return_exceptions=True)  # retrieved: each host reported it
        if self.remote is not None and self._prepared is not None:
            with contextlib.suppress(Exception):
                if self._root_dir:
                    await self.remote.run(["rm", "-rf", "--", self._root_dir], timeout=15)
                await self.remote.disconnect()
