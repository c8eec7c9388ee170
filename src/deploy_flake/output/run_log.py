"""Every run keeps each host's whole output (build log, the agent's log, notes) in a
run directory, so the live view can stay short and nothing is lost with the terminal."""

from __future__ import annotations

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
    """Events that go to one file per host in the run directory, and on to `inner`."""

    def __init__(self, directory: Path, inner: Events) -> None:
        self.directory = directory
        self.inner = inner
        self.files: dict[str, IO[str]] = {}

    def _write(self, label: str, text: str) -> None:
        f = self.files.get(label)
        if f is None:
            name = re.sub(r"[^A-Za-z0-9_.@-]+", "_", label).strip("._") or "host"
            f = self.files[label] = (self.directory / f"{name}.log").open("a", encoding="utf-8")
        f.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        f.flush()

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
        self.inner.finished(label, result)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
