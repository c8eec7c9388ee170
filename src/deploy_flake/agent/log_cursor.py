"""Where the deployer is in the agent's log: the agent sends its log from an offset on, then
its status line; the next call starts where the last one stopped, so no line is shown twice
and none is lost when a call is cut."""

from __future__ import annotations

import contextlib

from deploy_flake import process
from deploy_flake.agent.protocol import STATE_LINE, STATUS_MARK, Phase
from deploy_flake.process import LineSink


class LogCursor:
    def __init__(self) -> None:
        self.offset = 0  # bytes of the agent's log already shown
        self.phase: Phase | None = None  # the last in-progress phase its log showed
        self._start = 0

    def showing(self, on_line: LineSink) -> LineSink:
        """The line sink of one call: shows the log's lines and counts them. A line like a
        status line is the log's only when another line follows it: the last line of an
        answer is the agent's status, not log, even if the call then failed or was cut
        (counted as log, the next call would start inside a line of the log)."""
        self._start = self.offset
        unsure = 0

        def show(text: str) -> None:
            nonlocal unsure
            # what was shown stays shown, even if this call is cut off or cancelled
            self.offset += unsure
            unsure = 0
            if text.startswith(STATUS_MARK):
                unsure = len(text.encode()) + 1
                return
            self.offset += len(text.encode()) + 1
            if text.startswith(STATE_LINE):  # where it is, should the stream be cut
                with contextlib.suppress(ValueError):
                    logged = Phase(text.removeprefix(STATE_LINE).strip())
                    if not logged.final and logged is not Phase.NONE:  # log text is no verdict
                        self.phase = logged
            if text:
                on_line(text)

        return show

    def answered(self, done: process.Completed) -> None:
        """A whole answer came (its status line last): the log ends where that line begins."""
        marker = done.stdout.rfind("\n" + STATUS_MARK)
        if marker >= 0:
            self.offset = self._start + done.stdout_size - len(done.stdout[marker:].encode())
