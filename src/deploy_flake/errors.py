"""The one error tree: every failure deploy-flake reports is a DeployError, a message a user
can act on. Its branches say what kind of failure it was, for the few places that decide
differently by kind (a retry, a lost connection that is expected, an interruption). One
branch lives with the results it carries: fleet.run.InterruptedTwice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy_flake.completed import Completed


class DeployError(Exception):
    """A failure explained in one sentence that says what happened and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(DeployError):
    """Bad input found before anything was done on any host."""


class PermanentError(DeployError):
    """A failure that trying again cannot heal (a copy the host refuses): never retried."""


class ProcessTimeout(DeployError):
    """A command ran past its deadline and was killed (with everything it started)."""

    def __init__(self, argv: Sequence[str], timeout: float, partial: Completed) -> None:
        super().__init__(f"{argv[0]} did not finish within {timeout:.0f}s")
        self.timeout = timeout
        self.partial = partial  # what it printed until then


class ConnectionLost(DeployError):
    """ssh could not reach the host, or lost it (ssh's own exit status 255)."""

    def __init__(self, host: str, done: Completed, what: str = "") -> None:
        self.ssh_error = done.last_error()
        self.completed = done
        during = f" during {what}" if what else ""
        super().__init__(f"lost the SSH connection to {host}{during}: {self.ssh_error}")


class WrongHost(PermanentError):
    """A shared SSH connection reaches another machine than the host's (another destination's
    connection): nothing may run over it, and trying again would reach the same machine."""
