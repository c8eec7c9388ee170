"""What the deploy tells whoever watches it: stages, output lines, results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from deploy_flake.destination import Destination
from deploy_flake.models import HostResult, Outcome, Stage


class Events(Protocol):
    def stage(self, label: str, stage: Stage) -> None: ...

    def line(self, label: str, text: str) -> None:
        """A line of the host's own output (build log, activation)."""

    def note(self, label: str, text: str) -> None:
        """Something deploy-flake itself has to say about the host."""

    def finished(self, label: str, result: HostResult) -> None: ...


class Steady:
    """The events the run is given: whatever goes wrong in showing or logging them (a bug in
    a display) never reaches a host's deploy, whose every step, its rollback included,
    reports through here. It also keeps what each host said last, so that a run that ends
    early still knows every host's result as far as it was told."""

    def __init__(self, inner: Events) -> None:
        self.inner = inner
        self.failure: str | None = None  # the first error the display or the log raised
        self.seen: set[str] = set()  # hosts that told anything (they were started)
        self.results: dict[str, HostResult] = {}  # destination -> its result (the first job's)

    def _guard(self, tell: Callable[[], None]) -> None:
        try:
            tell()
        except Exception as e:
            if self.failure is None:
                self.failure = f"{type(e).__name__}: {e}"

    def stage(self, label: str, stage: Stage) -> None:
        self.seen.add(label)
        self._guard(lambda: self.inner.stage(label, stage))

    def line(self, label: str, text: str) -> None:
        self.seen.add(label)
        self._guard(lambda: self.inner.line(label, text))

    def note(self, label: str, text: str) -> None:
        self.seen.add(label)
        self._guard(lambda: self.inner.note(label, text))

    def finished(self, label: str, result: HostResult) -> None:
        self.results.setdefault(result.destination, result)
        self._guard(lambda: self.inner.finished(label, result))

    def as_far_as_known(self, dests: list[Destination], why: str) -> list[HostResult]:
        """Every host's result when the run ended early (why): what each host finished with,
        else failed (it never started) or unknown (it was at work)."""
        results = []
        for d in dests:
            known = self.results.get(d.raw)
            if known is not None:
                results.append(known)
                continue
            r = HostResult(destination=d.raw, host=d.host, config=d.config, error=why)
            if d.label in self.seen:
                r.outcome = Outcome.UNKNOWN
                r.error = (
                    f"{why}, while this host was at work: without a confirmation it returns to its "
                    f"previous system by itself; check with `deploy-flake status {d.raw}`"
                )
            results.append(r)
        return results
