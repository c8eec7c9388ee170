"""How a deploy looks on a terminal: a live table of the hosts, and rich tables at the end.
Imported only when the output is a terminal (rich takes a while to import)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deploy_flake.durations import format_duration
from deploy_flake.models import HostResult, Outcome, Stage
from deploy_flake.output.display import STATUS_COLUMNS, status_fields
from deploy_flake.output.stream import STDOUT

OUTCOME_STYLE = {
    Outcome.ACTIVATED: "green",
    Outcome.UNCHANGED: "green",
    Outcome.CLEANED: "green",
    Outcome.SKIPPED: "dim",
    Outcome.FAILED: "red",
    Outcome.ROLLED_BACK: "yellow",
    Outcome.UNKNOWN: "bold red",
}


class LiveEvents:
    """A live table (host, stage, elapsed) under the hosts' prefixed output. A terminal that
    cannot be written any more ends the printing, never a host (output/stream.py)."""

    def __init__(self, labels: list[str], console: Console | None = None) -> None:
        self.console = console or Console(stderr=False)
        self.rows: dict[str, tuple[str, float, str]] = {
            lb: ("waiting", time.monotonic(), "") for lb in labels
        }
        self.live = Live(
            console=self.console, refresh_per_second=4, get_renderable=self._render, transient=True
        )

    def __enter__(self) -> LiveEvents:
        self._guarded(self.live.start)
        return self

    def __exit__(self, *exc: object) -> None:
        self._guarded(self.live.stop)

    def _print(self, text: Text) -> None:
        self._guarded(lambda: self.console.print(text))

    @staticmethod
    def _guarded(write: Callable[[], None]) -> None:
        if STDOUT.lost is not None:
            return
        try:
            write()
        except (OSError, ValueError) as e:
            STDOUT.stop(e)

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
        self._print(Text.assemble((f"[{label}] ", "cyan"), text))

    def note(self, label: str, text: str) -> None:
        self._print(Text.assemble((f"[{label}] ", "cyan"), ("deploy-flake: ", "bold"), text))

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


def status_table(results: list[HostResult]) -> Table:
    table = Table(title="deploy-flake status")
    for col in ("host", *STATUS_COLUMNS):
        table.add_column(col, overflow="fold")
    for r in results:
        fields = status_fields(r)
        style = "red" if fields[0] == "unreachable" or not fields[0].startswith("running") else "green"
        table.add_row(r.destination, Text(fields[0], style=style), *fields[1:])
    return table


def print_table(table: Table) -> None:
    LiveEvents._guarded(lambda: Console().print(table))
