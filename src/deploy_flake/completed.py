"""A finished command: its exit status and what it printed (process.run's answer, and what
a timeout or a lost connection carries)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Completed:
    """A finished process: exit code and captured output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    stdout_size: int = 0  # bytes, before decoding

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_lines(self, n: int = 12) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return "\n".join(lines[-n:])

    def last_error(self) -> str:
        """Its last line on stderr, or its exit status when it said nothing (ssh's failures)."""
        return self.last_lines(1) or f"ssh exited with {self.returncode}"
