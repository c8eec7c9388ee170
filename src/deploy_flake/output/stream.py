"""Printing that never ends a run: a stream nobody reads any more (`deploy-flake … | head`,
a CI log reader that died, a full disk under a redirection) is dropped, not raised from.

A host's deploy must end as it would have whatever happens to the deployer's output: the
first failed write stops the printing to that stream for the rest of the run, and the
stream's file descriptor is pointed at /dev/null, so that nothing written later (the
summary, rich's refresh, the interpreter's last flush at exit) fails again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO


class Stream:
    """One output stream (stdout or stderr) and whether it can still be written."""

    def __init__(self, name: str, out: IO[str] | None = None) -> None:
        self.name = name
        self._fixed = out
        self._lost: str | None = None
        self._lost_on: IO[str] | None = None

    @property
    def out(self) -> IO[str]:
        """The stream itself (sys.stdout or sys.stderr as they are now, unless given)."""
        if self._fixed is not None:
            return self._fixed
        return sys.stdout if self.name == "stdout" else sys.stderr

    @property
    def lost(self) -> str | None:
        """Why and when it stopped being written; None while it is written."""
        return self._lost if self._lost_on is self.out else None

    def write(self, text: str) -> bool:
        """Writes text and flushes it; False (and nothing more is written) once that failed."""
        if self.lost is not None:
            return False
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError) as e:  # ValueError: a closed file
            self.stop(e)
            return False
        return True

    def print(self, text: str) -> bool:
        return self.write(text + "\n")

    def stop(self, e: BaseException) -> None:
        """Stops writing this stream: e is what failed."""
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        self._lost, self._lost_on = f"{why}, at {time.strftime('%H:%M:%S')}", self.out
        _point_at_devnull(self.out)


def _point_at_devnull(out: IO[str]) -> None:
    """What is still buffered, and anything written later, goes nowhere and raises nothing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = out.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


STDOUT = Stream("stdout")
STDERR = Stream("stderr")
