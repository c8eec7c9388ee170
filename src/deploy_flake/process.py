"""The only place that starts processes: local commands, ssh and nix alike."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from deploy_flake.completed import Completed
from deploy_flake.errors import ProcessTimeout

__all__ = [
    "Answer",
    "Completed",
    "Dialogue",
    "LineSink",
    "ProcessTimeout",
    "kill_all",
    "run",
    "run_detached",
]

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class Answer:
    """A line of a dialogue on the command's stderr (sudo's password prompt): the line is
    neither kept nor shown; `data` is written to the command's stdin, closed after it if `close`."""

    data: bytes = b""
    close: bool = False


# A stderr line -> the answer to it, or None for an ordinary line (kept and shown).
Dialogue = Callable[[str], "Answer | None"]

# How much of a stream is kept in memory. One that goes to a sink (a build log, the agent's
# log: shown, and kept whole in the run log) keeps only its tail, for error messages and the
# agent's last status line (Nix's last error block is a few KiB); one without a sink is read
# by the caller (JSON, the host's facts) and is kept up to KEEP_BYTES.
KEEP_BYTES = 4 * 1024 * 1024
TAIL_BYTES = 64 * 1024
# Every process started here and not yet reaped, for kill_all.
_LIVE: set[asyncio.subprocess.Process] = set()


def kill_all() -> None:
    """SIGKILLs every process this module started that still runs (a hard stop)."""
    for proc in list(_LIVE):
        if proc.returncode is None:  # not reaped: its pid is still its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


async def run(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_stdout: LineSink | None = None,
    on_stderr: LineSink | None = None,
    dialogue: Dialogue | None = None,
) -> Completed:
    """Run argv, stream its lines to the sinks, and return what it printed.

    stdin: written at once, then closed. dialogue (instead of stdin): stdin stays open and
    gets only what the dialogue answers to the command's stderr lines, until it closes it
    (or stderr ends).

    The process gets its own session, so a timeout or a cancellation kills it
    and everything it started (an ssh ControlMaster it forks is not affected:
    ssh -f detaches into a session of its own).
    """
    if stdin is not None and dialogue is not None:
        raise ValueError("process.run: stdin or a dialogue, not both")
    full_env = None if env is None else {**os.environ, **env}
    piped = stdin is not None or dialogue is not None
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if piped else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
        start_new_session=True,
    )
    _LIVE.add(proc)
    out, err = _Kept(on_stdout), _Kept(on_stderr)
    # what goes to stdin, in order: its end (close) is the last answer
    answers: asyncio.Queue[Answer] = asyncio.Queue()
    if stdin is not None:
        answers.put_nowait(Answer(stdin, close=True))

    async def feed() -> None:
        assert proc.stdin is not None
        while True:
            answer = await answers.get()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if answer.data:
                    proc.stdin.write(answer.data)
                    await proc.stdin.drain()
            if answer.close:
                proc.stdin.close()
                return

    async def pump(
        stream: asyncio.StreamReader | None, kept: _Kept, dialogue: Dialogue | None = None
    ) -> None:
        assert stream is not None
        try:
            await _pump(stream, kept, dialogue)
        finally:
            if dialogue is not None:  # no more questions: stdin ends
                answers.put_nowait(Answer(close=True))

    async def _pump(stream: asyncio.StreamReader, kept: _Kept, dialogue: Dialogue | None) -> None:
        while True:
            try:
                line = await stream.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                line = e.partial
            except asyncio.LimitOverrunError:
                line = await stream.read(65536)
            if not line:
                return
            if dialogue is not None:
                answer = dialogue(line.decode(errors="replace").rstrip("\r\n"))
                if answer is not None:
                    answers.put_nowait(answer)
                    continue
            kept.add(line)

    tasks = [
        asyncio.ensure_future(pump(proc.stdout, out)),
        asyncio.ensure_future(pump(proc.stderr, err, dialogue)),
    ]
    if piped:
        tasks.append(asyncio.ensure_future(feed()))

    def result() -> Completed:
        return Completed(
            argv=tuple(argv),
            returncode=proc.returncode if proc.returncode is not None else -1,
            stdout=out.text(),
            stdout_size=out.size,
            stderr=err.text(),
        )

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*tasks)
            await proc.wait()
    except TimeoutError:
        await _kill(proc, tasks)
        raise ProcessTimeout(argv, timeout or 0, result()) from None
    except asyncio.CancelledError:
        await asyncio.shield(_kill(proc, tasks))
        raise
    finally:
        if proc.returncode is not None:
            _LIVE.discard(proc)
    for kept in (out, err):
        if kept.sink_error is not None:  # the process ran to its end all the same
            raise kept.sink_error
    return result()


class _Kept:
    """One stream of a process: each line to its sink, and what is kept of it in memory.

    A sink that raises (a bug: the display and the run log never do) is called no more, but
    the stream is still read to its end, so the process never blocks on a full pipe; run()
    raises the error once the process has ended.
    """

    def __init__(self, sink: LineSink | None) -> None:
        self.sink = sink
        self.limit = KEEP_BYTES if sink is None else TAIL_BYTES
        self.lines: collections.deque[bytes] = collections.deque()
        self.kept = 0  # bytes in self.lines
        self.size = 0  # every byte read
        self.sink_error: Exception | None = None

    def add(self, line: bytes) -> None:
        self.size += len(line)
        self.kept += len(line)
        self.lines.append(line)
        while self.kept > self.limit and len(self.lines) > 1:
            self.kept -= len(self.lines.popleft())
        if self.sink is not None:
            try:
                self.sink(line.decode(errors="replace").rstrip("\r\n"))
            except Exception as e:
                self.sink, self.sink_error = None, e

    def text(self) -> str:
        return b"".join(self.lines).decode(errors="replace")


async def run_detached(argv: Sequence[str], *, timeout: float) -> Completed:
    """Run a command that leaves a daemon behind (ssh -f): its output goes to a file,
    not to pipes the daemon would inherit and hold open."""
    with tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        _LIVE.add(proc)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            await _kill(proc, [])
            err.seek(0)
            raise ProcessTimeout(
                argv, timeout, Completed(tuple(argv), -1, "", err.read().decode(errors="replace"))
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(_kill(proc, []))
            raise
        finally:
            if proc.returncode is not None:
                _LIVE.discard(proc)
        err.seek(0)
        return Completed(tuple(argv), proc.returncode or 0, "", err.read().decode(errors="replace"))


async def _kill(proc: asyncio.subprocess.Process, tasks: Sequence[asyncio.Future[None]]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            break  # reaped: its pid may already belong to an unrelated process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), 3)
            break
        except TimeoutError:
            continue
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
