"""How a deploy looks on a pipe: plain lines or JSON events (display_live.py: a terminal)."""

from __future__ import annotations

import json
import time
from typing import IO

from deploy_flake.durations import format_duration
from deploy_flake.models import HostResult, HostStatus, Stage
from deploy_flake.output.stream import STDOUT, Stream


class QuietEvents:
    """Nothing while the hosts answer (status prints its table at the end)."""

    def stage(self, label: str, stage: Stage) -> None:
        pass

    def line(self, label: str, text: str) -> None:
        pass

    def note(self, label: str, text: str) -> None:
        pass

    def finished(self, label: str, result: HostResult) -> None:
        pass


class PlainEvents:
    """One line per event, each prefixed with its host: readable in logs and CI. Once stdout
    cannot be written (its reader is gone), nothing more is printed and nothing raised."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = STDOUT if out is None else Stream("stdout", out)

    def _print(self, label: str, text: str) -> None:
        self.out.print(f"[{label}] {text}")

    def stage(self, label: str, stage: Stage) -> None:
        self._print(label, f"== {stage}")

    def line(self, label: str, text: str) -> None:
        self._print(label, text)

    def note(self, label: str, text: str) -> None:
        self._print(label, f"deploy-flake: {text}")

    def finished(self, label: str, result: HostResult) -> None:
        msg = f"== {result.outcome} (stage {result.stage}, {format_duration(result.duration_s)})"
        self._print(result.destination, msg + (f": {result.error}" if result.error else ""))


class JsonEvents:
    """One JSON object per line: {"event", "host", ...}; like PlainEvents, never raises."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = STDOUT if out is None else Stream("stdout", out)

    def _emit(self, **fields: object) -> None:
        self.out.print(json.dumps({"time": round(time.time(), 3), **fields}))

    def stage(self, label: str, stage: Stage) -> None:
        self._emit(event="stage", host=label, stage=str(stage))

    def line(self, label: str, text: str) -> None:
        self._emit(event="output", host=label, line=text)

    def note(self, label: str, text: str) -> None:
        self._emit(event="note", host=label, message=text)

    def finished(self, label: str, result: HostResult) -> None:
        self._emit(event="result", **result.as_json())


def plain_summary(results: list[HostResult]) -> str:
    lines = ["deploy-flake summary:"]
    for r in results:
        detail = f" - {r.error}" if r.error else ""
        lines.append(
            f"  {r.destination}: {r.outcome} (stage {r.stage}, config {r.config or '-'}, "
            f"{format_duration(r.duration_s)}){detail}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- status
def status_document(results: list[HostResult]) -> dict[str, object]:
    """`status --json`: one document, a record per host with the same keys, reachable or not."""
    unreachable: dict[str, object] = {k: None for k in HostStatus(state="").as_json()} | {
        "reachable": False,
        "failed_units": [],
        "reboot_needed": False,
        "reboot_reasons": None,
    }
    hosts = []
    for r in results:
        row: dict[str, object] = {"destination": r.destination, "host": r.host}
        row.update(r.status.as_json() if r.status is not None else unreachable)
        row["error"] = r.error
        hosts.append(row)
    return {"hosts": hosts}


def _short(path: str | None) -> str:
    """/nix/store/<hash>-nixos-system-web-1 -> nixos-system-web-1"""
    if not path:
        return "-"
    name = path.rsplit("/", 1)[-1]
    return name.split("-", 1)[1] if "-" in name else name


def _short_flake(flake: str) -> str:
    """path:/x?lastModified=..&narHash=sha256-abc.. -> path:/x (sha256-abcdefgh); a git rev to 12."""
    base, _, query = flake.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    if params.get("rev"):
        return f"{base} (rev {params['rev'][:12]})"
    if params.get("narHash"):
        return f"{base} ({params['narHash'][:15]})"
    return flake or "-"


def _last_deploy(value: dict[str, str] | None) -> str:
    if not value:
        return "-"
    return f"{value.get('time', '?')} by {value.get('by', '?')}: {_short_flake(str(value.get('flake', '')))}"


def _boot(d: HostStatus) -> str:
    """What boots the host, and what its default system does after a panic or hang."""
    if d.boot is None:
        return "not known"
    text = d.boot.summary()
    if d.boot.resets is not None:
        after = "resets itself" if d.boot.resets else "stays down (no panic=, no watchdog)"
        text += f"; after a panic: {after}"
    return text


def status_fields(r: HostResult) -> list[str]:
    d = r.status
    if d is None:
        return ["unreachable", "-", "-", "-", "-", "-", "-", r.error or ""]
    state = d.state
    if d.failed_units:
        state += f" ({', '.join(d.failed_units)})"
    current = _short(d.current_system) + (f" (specialisation {d.specialisation})" if d.specialisation else "")
    return [
        state,
        current,
        str(d.generation or "-")
        + ("" if d.profile_system == d.current_system else f" ({_short(d.profile_system)})"),
        "same" if d.booted_system == d.current_system else _short(d.booted_system),
        ("yes: " + ", ".join(d.reboot_reasons)) if d.reboot_needed else "no",
        _boot(d),
        _last_deploy(d.last_deploy),
        "",
    ]


STATUS_COLUMNS = (
    "state",
    "current system",
    "generation",
    "booted",
    "reboot",
    "boot",
    "last deploy",
    "error",
)


def plain_status(results: list[HostResult]) -> str:
    lines = []
    for r in results:
        pairs = zip(STATUS_COLUMNS, status_fields(r), strict=True)
        lines.append(f"{r.destination}: " + "; ".join(f"{k} {v}" for k, v in pairs if v))
    return "\n".join(lines)


# ---------------------------------------------------------------- plan
def plain_plan(results: list[HostResult]) -> str:
    lines = ["deploy-flake plan:"]
    for r in results:
        plan = r.plan
        if plan is None:
            lines.append(f"  {r.destination}: no plan ({r.error or r.outcome})")
            continue
        actions = "; ".join(f"{a} {', '.join(n)}" for a, n in plan.units.items())
        lines.append(
            f"  {r.destination}: {len(plan.closure_changes)} package changes; "
            f"units: {actions or 'none'}; reboot: {'yes' if plan.reboot_needed else 'no'}; "
            f"checks: {plan.checks}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- gc
def plain_gc(results: list[HostResult], dry_run: bool) -> str:
    lines = ["deploy-flake gc (dry run: nothing was removed):" if dry_run else "deploy-flake gc:"]
    for r in results:
        if r.gc is None:
            lines.append(f"  {r.destination}: {r.error or r.outcome}")
            continue
        problem = f" - {r.gc.problem}" if r.gc.problem else ""
        lines.append(f"  {r.destination}: {r.gc.summary(dry_run)}{problem}")
    return "\n".join(lines)
