"""How a deploy looks: a live view on a terminal, plain lines on a pipe, or JSON events."""

from __future__ import annotations

import json
import sys
import time
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deploy_flake.durations import format_duration
from deploy_flake.models import HostResult, Outcome, Stage

OUTCOME_STYLE = {
    Outcome.ACTIVATED: "green",
    Outcome.FAILED: "red",
    Outcome.ROLLED_BACK: "yellow",
    Outcome.UNKNOWN: "bold red",
}


class PlainEvents:
    """One line per event, each prefixed with its host: readable in logs and CI."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def _print(self, label: str, text: str) -> None:
        print(f"[{label}] {text}", file=self.out, flush=True)

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
    """One JSON object per line: {"event", "host", ...}."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def _emit(self, **fields: object) -> None:
        print(json.dumps({"time": round(time.time(), 3), **fields}), file=self.out, flush=True)

    def stage(self, label: str, stage: Stage) -> None:
        self._emit(event="stage", host=label, stage=str(stage))

    def line(self, label: str, text: str) -> None:
        self._emit(event="output", host=label, line=text)

    def note(self, label: str, text: str) -> None:
        self._emit(event="note", host=label, message=text)

    def finished(self, label: str, result: HostResult) -> None:
        self._emit(event="result", **result.as_json())


class LiveEvents:
    """A live table (host, stage, elapsed) under the hosts' prefixed output."""

    def __init__(self, labels: list[str], console: Console | None = None) -> None:
        self.console = console or Console(stderr=False)
        self.rows: dict[str, tuple[str, float, str]] = {
            lb: ("waiting", time.monotonic(), "") for lb in labels
        }
        self.live = Live(
            console=self.console, refresh_per_second=4, get_renderable=self._render, transient=True
        )

    def __enter__(self) -> LiveEvents:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def _render(self) -> Group:
        table = Table(box=None, show_header=False, padding=(0, 1))
        now = time.monotonic()
        for label, (stage, since, outcome) in self.rows.items():
            style = "bold" if not outcome else OUTCOME_STYLE.get(Outcome(outcome), "")
            shown = outcome or stage
            table.add_row(
                Text(label, style="cyan"),
                Text(shown, style=style),
                Text(format_duration(now - since) if not outcome else "", style="dim"),
            )
        return Group(Text("─" * 40, style="dim"), table)

    def stage(self, label: str, stage: Stage) -> None:
        _, since, _ = self.rows.get(label, ("", time.monotonic(), ""))
        self.rows[label] = (str(stage), since, "")

    def line(self, label: str, text: str) -> None:
        self.console.print(Text.assemble((f"[{label}] ", "cyan"), text))

    def note(self, label: str, text: str) -> None:
        self.console.print(Text.assemble((f"[{label}] ", "cyan"), ("deploy-flake: ", "bold"), text))

    def finished(self, label: str, result: HostResult) -> None:
        stage, since, _ = self.rows.get(label, ("", time.monotonic(), ""))
        self.rows[label] = (stage, since, str(result.outcome))


def summary_table(results: list[HostResult]) -> Table:
    table = Table(title="deploy-flake summary", show_lines=False)
    for col in ("host", "outcome", "stage", "configuration", "time", "details"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(
            r.destination,
            Text(str(r.outcome), style=OUTCOME_STYLE[r.outcome]),
            str(r.stage),
            r.config or "-",
            format_duration(r.duration_s),
            r.error or ("; ".join(r.notes[-1:]) or ""),
        )
    return table


def plain_summary(results: list[HostResult]) -> str:
    lines = ["deploy-flake summary:"]
    for r in results:
        detail = f" - {r.error}" if r.error else ""
        lines.append(
            f"  {r.destination}: {r.outcome} (stage {r.stage}, config {r.config or '-'}, "
            f"{format_duration(r.duration_s)}){detail}"
        )
    return "\n".join(lines)
