"""A scripted host for flow tests: a Remote whose commands are answered from a table, in order.

A whole host's deploy, plan, status or rollback then runs in-process in milliseconds, and the
test sees every command it sent, by name, in the order sent. A command the table does not
expect next fails the test with the command and what was expected instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from deploy_flake.errors import ConnectionLost, DeployError, ProcessTimeout
from deploy_flake.process import Completed, LineSink
from deploy_flake.remote.ssh import Remote


@dataclass(frozen=True)
class Reply:
    """What one command answers: its output and exit status, or ssh's failure, or no end."""

    stdout: str = ""
    stderr: str = ""
    returncode: int = 0
    lost: bool = False  # ssh exits 255: no connection, or a lost one
    hangs: bool = False  # it runs past its timeout

    def completed(self, argv: Sequence[str]) -> Completed:
        code = 255 if self.lost else self.returncode
        return Completed(tuple(argv), code, self.stdout, self.stderr, len(self.stdout.encode()))


Answer = Reply | Callable[[Sequence[str], bytes | None], Reply]


def command_name(argv: Sequence[str]) -> str:
    """How a flow test names a command: `agent start`, `facts`, `nix build`, `rm`, ... (a
    command under `timeout N` by its own name)."""
    if len(argv) > 2 and argv[0] == "timeout":
        return command_name(argv[2:])
    if len(argv) >= 5 and argv[:2] == ["/bin/sh", "-c"] and argv[3].startswith("/run/deploy-flake/agent-"):
        return f"agent {argv[4]}"
    if len(argv) >= 3 and argv[0] == "sh" and argv[1] == "-c":
        script = argv[2]
        for mark, name in (
            ('echo "uid=$(id -u)"', "facts"),
            ('echo "machine_id=$(cat /etc/machine-id', "identity"),
            ("top=$1 cur=$2", "inspect"),
            ('mkdir -p "${1%/*}" && exec nix-store', "gc root"),
            ("exec systemctl reboot", "reboot"),
            ('mkdir -p "${1%/*}"', "agent install"),
        ):
            if mark in script:
                return name
        return "sh"
    if argv[:2] == ["nix", "build"] or (argv[:1] == ["nix"] and "build" in argv):
        return "nix build"
    if argv[:1] == ["nix"] and "archive" in argv:
        return "nix flake archive"
    if argv[:1] == ["nix"] and "copy" in argv:
        return "nix copy"
    if argv[0].endswith("/bin/switch-to-configuration") and len(argv) > 1:
        return f"switch-to-configuration {argv[1]}"
    return " ".join(argv[:2]) if argv[:1] in (["systemctl"], ["nix-store"]) else argv[0]


class FakeHost:
    """The table of expected commands and the record of those sent, shared by every Remote the
    deploy makes for this host (with_sudo makes another)."""

    def __init__(self, table: Sequence[tuple[str, Answer]]) -> None:
        self.table: deque[tuple[str, Answer]] = deque(table)
        self.sent: list[str] = []
        self.stdin: dict[str, bytes | None] = {}  # the last stdin each command name got
        self.mismatch = ""  # the first command the table did not expect (the deploy may swallow it)

    def answer(self, name: str, argv: Sequence[str], stdin: bytes | None) -> Reply:
        self.sent.append(name)
        self.stdin[name] = stdin
        if not self.table:
            self.mismatch = (
                self.mismatch or f"unexpected command {name!r} (nothing more expected): {list(argv)}"
            )
            raise AssertionError(self.mismatch)
        want, answer = self.table.popleft()
        if want != name:
            self.mismatch = (
                self.mismatch or f"expected {want!r}, the deploy sent {name!r}; sent so far {self.sent}"
            )
            raise AssertionError(self.mismatch)
        return answer(argv, stdin) if callable(answer) else answer

    @property
    def left(self) -> list[str]:
        """What the table still expected when the deploy ended."""
        return [name for name, _ in self.table]


def _stream(text: str, sink: LineSink | None) -> None:
    if sink is not None:
        for line in text.splitlines():
            sink(line)


@dataclass(frozen=True)
class FakeRemote(Remote):
    """A Remote whose every command (ssh, Nix's copies, the shared connection) is answered by
    its FakeHost instead of a host."""

    host: FakeHost | None = field(default=None, compare=False)

    def _host(self) -> FakeHost:
        assert self.host is not None
        return self.host

    def with_sudo(self, sudo: bool, *, password: bool = False) -> Remote:
        return FakeRemote(self.dest, self.settings, sudo, sudo and password, self.elevate, host=self.host)

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        root: bool = False,
        fresh: bool = False,
        stdin: bytes | None = None,
        on_stdout: LineSink | None = None,
        on_stderr: LineSink | None = None,
        what: str = "",
    ) -> Completed:
        argv = list(argv)
        reply = self._host().answer(command_name(argv), argv, stdin)  # what the command reads
        await asyncio.sleep(0)  # as a real command would, let the other tasks run
        done = reply.completed(argv)
        _stream(reply.stdout, on_stdout)
        _stream(reply.stderr, on_stderr)
        if reply.hangs:
            raise ProcessTimeout(argv, timeout, done)
        if reply.lost:
            raise ConnectionLost(self.dest.host, done, what)
        return done

    async def run_nix(
        self, argv: Sequence[str], *, timeout: float, on_stderr: LineSink | None = None
    ) -> Completed:
        argv = list(argv)
        reply = self._host().answer(command_name(argv), argv, None)
        await asyncio.sleep(0)
        _stream(reply.stderr, on_stderr)
        if reply.hangs:
            raise ProcessTimeout(argv, timeout, reply.completed(argv))
        return reply.completed(argv)

    async def connect(self, timeout: float) -> bool:
        """Reply(stdout="reused"): a live shared connection was there already."""
        reply = self._host().answer("connect", [], None)
        if reply.lost or reply.returncode != 0:
            raise DeployError(f"cannot reach {self.dest.host} over SSH: {reply.stderr.strip()}")
        return reply.stdout == "reused"

    async def disconnect(self) -> None:
        self._host().answer("disconnect", [], None)
