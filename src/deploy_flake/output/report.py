"""The --report file: one JSON document describing every host."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from deploy_flake.errors import DeployError, UsageError
from deploy_flake.models import HostResult


class ReportError(DeployError):
    """The report file could not be written."""


def check_report_path(path: Path) -> None:
    """Refuses, before any host is touched, a report path the report could not be written to.

    Really creates (and deletes) a file next to it: as root, os.access says yes even on a
    read-only mount.
    """
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"--report {path}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"--report {path}: {parent} is not a directory")
    if path.is_dir():
        raise UsageError(f"--report {path}: it is a directory, give a file name")
    if path.exists() and not path.is_file():
        raise UsageError(f"--report {path}: it exists and is not a regular file")
    try:
        fd, tmp = _create_tmp(path)
        os.close(fd)
        tmp.unlink()
    except OSError as e:
        raise UsageError(f"--report {path}: cannot create a file in {parent}: {e.strerror or e}") from None


def write_report(path: Path, results: list[HostResult]) -> None:
    """Writes the report atomically (a temporary file next to it, then a rename).

    Raises ReportError, with a one-line message, when that fails.
    """
    text = json.dumps({"hosts": [r.as_json() for r in results]}, indent=2) + "\n"
    try:
        fd, tmp = _create_tmp(path)
    except OSError as e:
        raise ReportError(f"cannot write the report {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise ReportError(f"cannot write the report {path}: {e.strerror or e}") from None
        raise


def write_report_or_say(path: Path | None, results: list[HostResult]) -> str | None:
    """Writes --report, if given; what went wrong, if it could not be written."""
    if path is None:
        return None
    try:
        write_report(path, results)
    except ReportError as e:
        return str(e)
    return None


def _create_tmp(path: Path) -> tuple[int, Path]:
    """A new, uniquely named file in path's directory, only its owner may read (0600): the
    report names the hosts, their systems and what went wrong on them."""
    tmp = path.parent / f".{path.name[:64]}.{secrets.token_hex(6)}.tmp"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
