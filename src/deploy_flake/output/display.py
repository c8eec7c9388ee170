"""How a deploy looks on a pipe: plain lines or JSON events (display_live.py: a terminal)."""

from __future__ import annotations

import json
import time
from typing import IO

from deploy_flake.durations import format_duration
from deploy_flake.models import HostResult, Stage
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
STATUS_KEYS = (
    "reachable",
    "state",
    "failed_units",
    "current_system",
    "booted_system",
    "profile_system",
    "generation",
    "reboot_needed",
    "reboot_reasons",
    "last_deploy",
)


def status_document(results: list[HostResult]) -> dict[str, object]:
    """`status --json`: one document, a record per host with the same keys, reachable or not."""
    hosts = []
    for r in results:
        row: dict[str, object] = {"destination": r.destination, "host": r.host}
        row.update({k: r.details.get(k) for k in STATUS_KEYS})
        row["reachable"] = bool(r.details.get("reachable"))
        row["failed_units"] = r.details.get("failed_units") or []
        row["reboot_needed"] = bool(r.details.get("reboot_needed"))
        row["error"] = r.error
        hosts.append(row)
    return {"hosts": hosts}


def _short(path: object) -> str:
    """/nix/store/<hash>-nixos-system-web-1 -> nixos-system-web-1"""
    if not isinstance(path, str) or not path:
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


def _last_deploy(value: object) -> str:
    if not isinstance(value, dict) or not value:
        return "-"
    return f"{value.get('time', '?')} by {value.get('by', '?')}: {_short_flake(str(value.get('flake', '')))}"


def status_fields(r: HostResult) -> list[str]:
    d = r.details
    if not d.get("reachable"):
        return ["unreachable", "-", "-", "-", "-", "-", r.error or ""]
    failed = d.get("failed_units") or []
    state = str(d.get("state"))
    if isinstance(failed, list) and failed:
        state += f" ({', '.join(map(str, failed))})"
    current, booted, profile = d.get("current_system"), d.get("booted_system"), d.get("profile_system")
    reasons = d.get("reboot_reasons")
    reasons = reasons if isinstance(reasons, list) else []
    return [
        state,
        _short(current),
        str(d.get("generation") or "-") + ("" if profile == current else f" ({_short(profile)})"),
        "same" if booted == current else _short(booted),
        ("yes: " + ", ".join(map(str, reasons))) if d.get("reboot_needed") else "no",
        _last_deploy(d.get("last_deploy")),
        "",
    ]


STATUS_COLUMNS = ("state", "current system", "generation", "booted", "reboot", "last deploy", "error")


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
        plan = r.details.get("plan")
        if not isinstance(plan, dict):
            lines.append(f"  {r.destination}: no plan ({r.error or r.outcome})")
            continue
        units = plan.get("units") or {}
        actions = ""
        if isinstance(units, dict):
            actions = "; ".join(f"{a} {', '.join(n)}" for a, n in units.items())
        changes = plan.get("closure_changes") or []
        lines.append(
            f"  {r.destination}: {len(changes) if isinstance(changes, list) else 0} package changes; "
            f"units: {actions or 'none'}; reboot: {'yes' if plan.get('reboot_needed') else 'no'}; "
            f"checks: {plan.get('checks')}"
        )
    return "\n".join(lines)
