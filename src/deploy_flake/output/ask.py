"""--ask: every host's plan first, one question, then all hosts activate, or none."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import IO

from deploy_flake.models import HostResult


class Gate:
    """Where every host of a run waits, with its plan, before its transaction starts.

    Once each host has either arrived or ended (failed before it got there), the plans
    are shown and one answer decides for all of them.
    """

    def __init__(self, hosts: int, *, out: IO[str] | None = None, answers: IO[str] | None = None) -> None:
        self.waiting = hosts
        self.arrived: list[HostResult] = []
        self.out = out or sys.stderr
        self.answers = answers or sys.stdin
        self.decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def arrive(self, result: HostResult) -> bool:
        """Waits for the answer; True: go on and activate."""
        self.arrived.append(result)
        self._one_less()
        return await asyncio.shield(self.decision)

    def leave(self) -> None:
        """A host that ended before the gate: nobody waits for it."""
        self._one_less()

    def _one_less(self) -> None:
        self.waiting -= 1
        if self.waiting == 0 and not self.decision.done():
            if not self.arrived:
                self.decision.set_result(False)
            else:
                self._ask()

    def _ask(self) -> None:
        from deploy_flake.output.display import plain_plan  # display imports models only

        names = ", ".join(r.destination for r in self.arrived)
        try:
            self.out.write(plain_plan(self.arrived) + "\n")
            self.out.write(f"Activate on {len(self.arrived)} host(s) ({names})? [y/N] ")
            self.out.flush()
        except (OSError, ValueError):  # a question nobody can read is answered no
            self.decision.set_result(False)
            return
        loop = asyncio.get_running_loop()
        fd = self.answers.fileno()

        def answered() -> None:
            loop.remove_reader(fd)
            line = self.answers.readline()
            if not self.answers.isatty():  # show what was answered, as a terminal would
                with contextlib.suppress(OSError, ValueError):
                    self.out.write(f"{line.strip()}\n")
                    self.out.flush()
            if not self.decision.done():
                self.decision.set_result(line.strip().lower() in ("y", "yes"))

        loop.add_reader(fd, answered)
