"""--ask: every host's plan first, one question per wave, then the wave's hosts activate, or none.

A run has one wave, or two with --canary (the canaries, then the others once the canaries
were activated): each wave has its own Gate, and all of them read their answers, a line
each, from one Answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from enum import Enum
from typing import IO

from deploy_flake.models import HostResult


class Passage(Enum):
    """What a host at the gate is told once its wave is decided."""

    GO = "go"  # activate
    DECLINED = "declined"  # the answer was no (or none came): nothing is changed
    HALTED = "halted"  # --max-failures was reached meanwhile: skipped, nothing is changed


class Answers:
    """The answers to the run's questions, a line each, read from stdin as they come.

    Read from the file descriptor itself, never through a buffered stream: a buffer could
    hold the next wave's answer while the next question waits for the descriptor.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdin
        self._buffer = b""
        self._eof = False

    async def line(self) -> str:
        """The next line, "" once the input has ended (no answer is no)."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):  # no stdin at all: no answer
            return ""
        while b"\n" not in self._buffer and not self._eof:
            await _readable(fd)
            chunk = os.read(fd, 4096)
            self._eof = not chunk
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace").strip()

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except (OSError, ValueError):  # a regular file (stdin < file) cannot be waited on: always ready
        return
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class Gate:
    """Where every host of a wave waits, with its plan, before its transaction starts.

    Once each host of the wave has either arrived or ended (failed before it got there, or
    was never started), the plans are shown and one answer decides for all of them. Hosts
    that wait give their --jobs slot to those still building meanwhile.
    """

    def __init__(
        self, hosts: int, answers: Answers, *, canaries: bool = False, out: IO[str] | None = None
    ) -> None:
        self.waiting = hosts
        self.arrived: list[HostResult] = []
        self.answers = answers
        self.canaries = canaries
        self.out = out or sys.stderr
        self.halted: str | None = None  # why hosts at the gate are skipped (--max-failures)
        self.decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asking: asyncio.Task[None] | None = None

    async def wait(self, result: HostResult, limit: asyncio.Semaphore) -> Passage:
        """Arrives with result (its plan), waits for the wave's answer without holding a --jobs
        slot, and holds one again when it returns: whether to go on and activate."""
        self.arrived.append(result)
        limit.release()
        try:
            self._one_less()
            go_on = await asyncio.shield(self.decision)
        finally:
            await limit.acquire()
        if not go_on:
            return Passage.DECLINED
        return Passage.GO if self.halted is None else Passage.HALTED

    def leave(self) -> None:
        """A host of the wave that will never arrive (it ended before the gate, or was never
        started): nobody waits for it."""
        self._one_less()

    def halt(self, why: str) -> None:
        """--max-failures was reached: hosts that did not begin to activate are skipped. Asked
        before the question, the question is not asked."""
        if self.halted is None:
            self.halted = why

    def close(self) -> None:
        """Ctrl-C: no question is asked any more, and no host of the wave goes on."""
        if not self.decision.done():
            self.decision.set_result(False)
        if self._asking is not None:
            self._asking.cancel()

    def _one_less(self) -> None:
        self.waiting -= 1
        if self.waiting > 0 or self.decision.done():
            return
        if not self.arrived:
            self.decision.set_result(False)
        elif self.halted is not None:
            self.decision.set_result(True)  # each host is told HALTED
        else:
            self._asking = asyncio.ensure_future(self._ask())

    async def _ask(self) -> None:
        from deploy_flake.output.display import plain_plan  # display imports models only

        # in a stable order, not the order the hosts' plans happened to be ready in
        arrived = sorted(self.arrived, key=lambda r: r.destination)
        names = ", ".join(r.destination for r in arrived)
        which = "canary host(s)" if self.canaries else "host(s)"
        try:
            self.out.write(plain_plan(arrived) + "\n")
            self.out.write(f"Activate on {len(self.arrived)} {which} ({names})? [y/N] ")
            self.out.flush()
        except (OSError, ValueError):  # a question nobody can read is answered no
            self.decision.set_result(False)
            return
        try:
            answer = await self.answers.line()
        except OSError as e:  # stdin closed under us: no answer is no
            answer = ""
            with contextlib.suppress(OSError, ValueError):
                self.out.write(f"(cannot read the answer: {e})")
        if not self.answers.isatty():  # show what was answered, as a terminal would
            with contextlib.suppress(OSError, ValueError):
                self.out.write(f"{answer}\n")
                self.out.flush()
        if not self.decision.done():
            self.decision.set_result(answer.lower() in ("y", "yes"))
