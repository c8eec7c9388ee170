"""What the deploy tells whoever watches it: stages, output lines, results."""

from __future__ import annotations

from typing import Protocol

from deploy_flake.models import HostResult, Stage


class Events(Protocol):
    def stage(self, label: str, stage: Stage) -> None: ...

    def line(self, label: str, text: str) -> None:
        """A line of the host's own output (build log, activation)."""

    def note(self, label: str, text: str) -> None:
        """Something deploy-flake itself has to say about the host."""

    def finished(self, label: str, result: HostResult) -> None: ...
