"""Every run keeps each host's whole output (build log, the agent's log, notes) in a
run directory, so the live view can stay short and nothing is lost with the terminal."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import IO

from deploy_flake.errors import UsageError
from deploy_flake.models import HostResult, Stage
from deploy_flake.output.events import Events


def default_log_dir() -> Path:
    """$XDG_STATE_HOME/deploy-flake/runs (~/.local/state/deploy-flake/runs)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "deploy-flake" / "runs"


def new_run_dir(base: Path) -> Path:
    """A fresh directory for this run under base; a clear error if it cannot be made."""
    run = base / (time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3))
    try:
        run.mkdir(parents=True, mode=0o700)
        (run / ".written").write_text("")
        (run / ".written").unlink()
    except OSError as e:
        raise UsageError(f"--log-dir {base}: cannot write a run directory there: {e.strerror or e}") from None
    return run


class RunLog:
    """Events that go to one file per host in the run directory, and on to `inner`.

    A host's file is open only while the host is at work (closed when it finishes), and
    only its owner may read it (0600, in a 0700 run directory: build logs can hold
    secrets). A write that fails (a full disk, the open-file limit) never ends the host's
    deploy: that host's log stops there, the display says so at once and the host's
    result (the report) carries a note.
    """

    def __init__(self, directory: Path, inner: Events) -> None:
        self.directory = directory
        self.inner = inner
        self.files: dict[str, IO[str]] = {}
        self.failed: dict[str, str] = {}  # label -> the note that says its log is incomplete

    def path(self, label: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.@-]+", "_", label).strip("._") or "host"
        return self.directory / f"{name}.log"

    def _write(self, label: str, text: str) -> None:
        if label in self.failed:
            return
        try:
            f = self.files.get(label)
            if f is None:
                fd = os.open(self.path(label), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                f = self.files[label] = os.fdopen(fd, "a", encoding="utf-8")
            f.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            f.flush()
        except OSError as e:
            self._close(label)
            why = e.strerror or str(e)
            self.failed[label] = (
                f"the run log {self.path(label)} is incomplete: writing it failed at "
                f"{time.strftime('%H:%M:%S')} ({why}); the deploy went on"
            )
            self.inner.note(label, self.failed[label])

    def _close(self, label: str) -> None:
        f = self.files.pop(label, None)
        if f is not None:
            with contextlib.suppress(OSError):  # what could not be flushed is lost, the file closed
                f.close()

    def stage(self, label: str, stage: Stage) -> None:
        self._write(label, f"== {stage}")
        self.inner.stage(label, stage)

    def line(self, label: str, text: str) -> None:
        self._write(label, text)
        self.inner.line(label, text)

    def note(self, label: str, text: str) -> None:
        self._write(label, f"deploy-flake: {text}")
        self.inner.note(label, text)

    def finished(self, label: str, result: HostResult) -> None:
        self._write(label, f"== {result.outcome}" + (f": {result.error}" if result.error else ""))
        self._close(label)  # a host at work holds one descriptor for its log, not the whole run
        failed = self.failed.pop(label, None)  # a later job on the host (--all-or-nothing) tries again
        if failed is not None:
            result.notes.append(failed)
        self.inner.finished(label, result)

    def close(self) -> None:
        for label in list(self.files):
            self._close(label)
