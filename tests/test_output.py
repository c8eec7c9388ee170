"""The deployer's output, without a host: what it prints and logs can never end a host's
deploy (a reader gone, a full disk, a display's bug), its files are the owner's alone, and a
process's streams are kept in memory only as far as needed."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from pathlib import Path

import pytest

from deploy_flake import process
from deploy_flake.destination import Destination
from deploy_flake.models import HostResult, Outcome, Stage
from deploy_flake.output.display import JsonEvents, PlainEvents
from deploy_flake.output.events import Steady
from deploy_flake.output.report import write_report
from deploy_flake.output.run_log import RunLog, new_run_dir
from tests.fake_remote import Reply
from tests.test_flows import BEFORE, _cancelled, run_job, status


class BrokenPipe(io.StringIO):
    """stdout whose reader is gone (`| head`)."""

    writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")


class Exploding:
    """A display with a bug: every event raises."""

    def stage(self, label: str, stage: Stage) -> None:
        raise RuntimeError("a bug in the display")

    line = note = stage

    def finished(self, label: str, result: HostResult) -> None:
        raise RuntimeError("a bug in the display")


def test_a_stdout_nobody_reads_stops_the_printing_and_raises_nothing() -> None:
    for events in (PlainEvents(BrokenPipe()), JsonEvents(BrokenPipe())):
        events.stage("web", Stage.BUILD)
        events.line("web", "building")
        events.note("web", "a note")
        events.finished("web", HostResult(destination="web", host="web"))
        assert events.out.lost is not None and "Broken pipe" in events.out.lost
        assert events.out.out.writes == 1  # type: ignore[attr-defined]  # not tried again


def test_a_bug_in_the_display_never_reaches_the_host_and_is_remembered() -> None:
    events = Steady(Exploding())  # type: ignore[arg-type]
    events.stage("web", Stage.BUILD)
    events.note("web", "a note")
    result = HostResult(destination="nixos://web/web", host="web", outcome=Outcome.ACTIVATED)
    events.finished("web/web", result)
    assert events.failure == "RuntimeError: a bug in the display"
    assert events.results == {"nixos://web/web": result}


def test_a_run_that_ends_early_knows_every_host_as_far_as_it_was_told() -> None:
    events = Steady(Exploding())  # type: ignore[arg-type]
    done = HostResult(destination="a", host="a", outcome=Outcome.ACTIVATED)
    events.finished("a", done)
    events.stage("b", Stage.ACTIVATE)
    dests = [Destination.parse(d) for d in ("a", "b", "c")]
    a, b, c = events.as_far_as_known(dests, "the deployer stopped: internal error: X")
    assert a is done
    assert b.outcome is Outcome.UNKNOWN and "while this host was at work" in str(b.error)
    assert c.outcome is Outcome.FAILED and c.error == "the deployer stopped: internal error: X"


def test_a_log_that_cannot_be_written_is_a_note_and_the_deploy_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Ctrl-C after the transaction started, while stdout is gone and the run log's disk is
    full (the log is /dev/full): the host is still asked to roll back, and its result says
    that its log is incomplete."""
    log = RunLog(tmp_path, PlainEvents(BrokenPipe()))
    monkeypatch.setattr(log, "path", lambda label: Path("/dev/full"))
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", _cancelled(status("activating"))),
            ("agent abort", status("rolling-back")),
            ("agent watch", status("rolled-back", "the deploy was interrupted before it was confirmed")),
            ("readlink", Reply("/nix/store/0000000000000000000000000000000a-nixos-system-web-1\n")),
            ("disconnect", Reply()),
        ],
        shown=Steady(log),
    )
    assert "agent abort" in fake.sent
    assert result.outcome is Outcome.ROLLED_BACK, result
    (incomplete,) = [n for n in result.notes if "run log" in n]
    assert "is incomplete" in incomplete and "No space left on device" in incomplete
    assert log.files == {}  # closed when the host finished


def test_a_hosts_log_is_the_owners_alone_and_closed_when_it_finishes(tmp_path: Path) -> None:
    run_dir = new_run_dir(tmp_path / "runs")
    log = RunLog(run_dir, PlainEvents(io.StringIO()))
    log.stage("web/web", Stage.BUILD)
    assert set(log.files) == {"web/web"}
    log.finished("web/web", HostResult(destination="nixos://web/web", host="web"))
    assert log.files == {}, "a finished host holds no descriptor"
    path = run_dir / "web_web.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    log.note("web/web", "again (--all-or-nothing's rollback)")  # appended, not truncated
    log.close()
    assert path.read_text().splitlines()[0].endswith("== build")
    assert len(path.read_text().splitlines()) == 3


def test_the_report_is_the_owners_alone(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_report(tmp_path / "report.json", [HostResult(destination="web", host="web")])
    finally:
        os.umask(old)
    path = tmp_path / "report.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["hosts"][0]["destination"] == "web"


def test_a_streamed_output_keeps_only_its_tail_in_memory() -> None:
    """10 MB of build log to a sink: every line reaches the sink, every byte is counted, and
    only the tail stays in memory; a stream without a sink is kept (up to 4 MiB)."""
    seen: list[int] = []
    done = asyncio.run(
        process.run(
            ["sh", "-c", "yes 'a line of a build log' | head -c 10000000; echo done"],
            on_stdout=lambda text: seen.append(len(text)),
        )
    )
    assert sum(n + 1 for n in seen) == 10_000_005 and done.stdout_size == 10_000_005
    assert len(done.stdout) <= process.TAIL_BYTES and done.stdout.endswith("done\n")
    kept = asyncio.run(process.run(["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo"]))
    assert len(kept.stdout) == 1_000_001


def test_a_sink_that_raises_never_leaves_its_process_stuck(tmp_path: Path) -> None:
    """The stream is still read to its end (no process blocks on a full pipe), and the
    error comes once the process has ended."""

    def sink(text: str) -> None:
        raise RuntimeError("a bug in a sink")

    marker = tmp_path / "ended"
    with pytest.raises(RuntimeError, match="a bug in a sink"):
        asyncio.run(
            process.run(
                ["sh", "-c", f"yes | head -c 2000000; touch {marker}"],
                on_stdout=sink,
            )
        )
    assert marker.exists(), "the process was not read to its end"
    assert not process._LIVE, "a process was left behind"


def test_a_run_that_ends_in_an_internal_error_still_writes_the_report_and_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bug in the fleet after one host finished and while another was at work: the report
    and the summary give every host as far as known, the exit code is the worst of them."""
    from click.testing import CliRunner

    from deploy_flake import app
    from deploy_flake.cli import deploy_flake

    async def deploy_all(targets: object, options: object, *, events: Steady, **_: object) -> None:
        events.stage("a", Stage.CONNECT)
        events.finished("a", HostResult(destination="a", host="a", outcome=Outcome.ACTIVATED))
        events.stage("b", Stage.ACTIVATE)
        raise RuntimeError("a bug in the fleet")

    monkeypatch.setattr(app, "deploy_all", deploy_all)
    (tmp_path / "flake.nix").write_text("{}")
    report = tmp_path / "report.json"
    args = ["--flake", str(tmp_path), "--report", str(report), "--log-dir", str(tmp_path / "logs")]
    result = CliRunner().invoke(deploy_flake, [*args, "a", "b", "c"])
    assert result.exit_code == 4, result.output
    assert "internal error: RuntimeError: a bug in the fleet" in result.output
    assert "deploy-flake summary:" in result.output and "Traceback" not in result.output
    outcomes = {h["destination"]: h["outcome"] for h in json.loads(report.read_text())["hosts"]}
    assert outcomes == {"a": "activated", "b": "unknown", "c": "failed"}
