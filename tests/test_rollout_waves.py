"""The rollout options together, in-process: --ask, --canary, --max-failures, --jobs and
--dry-activate in every combination end (never hang), one question per wave, and say of
each host what happened. Hosts are scripted jobs here; tests/test_rollout_pairs.py runs the
pairs on lab hosts."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.run import Run
from deploy_flake.destination import Destination
from deploy_flake.fleet.rollout import Rollout, wave_runs
from deploy_flake.models import DeployOptions, HostResult, Job, Outcome
from deploy_flake.nix import Flake
from deploy_flake.output.ask import Answers, Passage
from deploy_flake.output.display import QuietEvents
from deploy_flake.remote.ssh import SshSettings


@dataclass(frozen=True)
class Script:
    """How a scripted host's job goes: where it fails, if it does."""

    fails_before_gate: bool = False  # the build or a check: nothing changed (failed)
    fails_activation: bool = False  # rolled back (a plan cannot see this)


class ScriptedJob(HostJob):
    """A host's deploy or plan, as the rollout sees it; its passage of --ask's gate is the
    transaction's (deploy/transaction.py)."""

    def __init__(self, run: Run, name: str, index: int, script: Script, log: list[str]) -> None:
        super().__init__(run, Destination.parse(name), index)
        self.script = script
        self.log = log

    async def _steps(self) -> None:  # pragma: no cover: perform is the job's whole run here
        raise NotImplementedError

    async def perform(self) -> HostResult:
        self.log.append(f"start {self.dest.raw}")
        await asyncio.sleep(0)
        if self.script.fails_before_gate:
            self.result.outcome = Outcome.FAILED
            return self._end()
        if self.opts.job is Job.PLAN:
            self.result.outcome = Outcome.UNCHANGED
            return self._end()
        gate = self.run.gate
        if gate is not None:
            self.arrived_at_gate = True
            passage = await gate.wait(self.result, self.run.limit)
            if passage is Passage.DECLINED:
                self.result.outcome = Outcome.FAILED
                return self._end()
            if passage is Passage.HALTED:
                self.result.outcome, self.result.error = Outcome.SKIPPED, gate.halted
                return self._end()
        self.log.append(f"activate {self.dest.raw}")
        await asyncio.sleep(0)
        self.result.outcome = Outcome.ROLLED_BACK if self.script.fails_activation else Outcome.ACTIVATED
        return self._end()

    def _end(self) -> HostResult:
        self.finished = True
        return self.result


@pytest.fixture
def answers() -> Iterator[tuple[Answers, int]]:
    """--ask's answers: a pipe, whose write end the test fills (and closes: no more answers)."""
    r, w = os.pipe()
    stream = os.fdopen(r)
    yield Answers(stream), w
    stream.close()


def rollout(
    scripts: list[Script],
    answers: Answers | None = None,
    *,
    job: Job = Job.DEPLOY,
    out: io.StringIO | None = None,
    **options: object,
) -> tuple[list[HostResult], list[str]]:
    """The run's hosts (alpha, beta, ...), bounded in time: a hang fails the test."""
    log: list[str] = []

    async def go() -> list[HostResult]:
        opts = DeployOptions(flake_dir=Path("/flake"), job=job, **options)  # type: ignore[arg-type]
        run = Run(
            flake=Flake(url="", store_path=""),
            options=opts,
            ssh=SshSettings(control_dir=Path("/nonexistent")),
            events=QuietEvents(),
            run_id="t",
            holder="tester",
            limit=asyncio.Semaphore(opts.jobs or len(scripts)),
        )
        runs = wave_runs(run, len(scripts), answers)
        for r in runs:
            if r.gate is not None and out is not None:
                r.gate.out = out
        names = ["alpha", "beta", "gamma", "delta"]
        jobs: list[HostJob] = [ScriptedJob(runs[i], names[i], i, s, log) for i, s in enumerate(scripts)]
        roll = Rollout(run, jobs)
        return list(await asyncio.gather(*(roll.one(i, j) for i, j in enumerate(jobs))))

    async def bounded() -> list[HostResult]:
        return await asyncio.wait_for(go(), timeout=20)

    return asyncio.run(bounded()), log


OK, EARLY, LATE = Script(), Script(fails_before_gate=True), Script(fails_activation=True)


def outcomes(results: list[HostResult]) -> list[str]:
    return [str(r.outcome) for r in results]


def test_ask_with_canary_asks_once_per_wave(answers: tuple[Answers, int]) -> None:
    ans, w = answers
    os.write(w, b"y\ny\n")
    out = io.StringIO()
    results, log = rollout([OK, OK, OK], ans, ask=True, canary=1, out=out)
    assert outcomes(results) == ["activated"] * 3
    text = out.getvalue()
    assert "Activate on 1 canary host(s) (alpha)? [y/N] y" in text
    assert "Activate on 2 host(s) (beta, gamma)? [y/N] y" in text
    # the others start only once the canary was activated
    assert log.index("activate alpha") < log.index("start beta")


def test_ask_with_canary_no_to_the_second_wave(answers: tuple[Answers, int]) -> None:
    ans, w = answers
    os.write(w, b"y\nn\n")
    results, log = rollout([OK, OK], ans, ask=True, canary=1, out=io.StringIO())
    assert outcomes(results) == ["activated", "failed"]
    assert "activate beta" not in log


def test_ask_with_a_canary_rolled_back_asks_nothing_more(answers: tuple[Answers, int]) -> None:
    ans, w = answers
    os.write(w, b"y\n")
    os.close(w)
    out = io.StringIO()
    results, log = rollout([LATE, OK, OK], ans, ask=True, canary=1, out=out)
    assert outcomes(results) == ["rolled-back", "skipped", "skipped"]
    assert out.getvalue().count("Activate on") == 1 and "start beta" not in log


def test_ask_max_failures_jobs_a_host_failing_before_the_question(answers: tuple[Answers, int]) -> None:
    """The host skipped by --max-failures leaves the gate: no hang, and no question at all."""
    ans, _ = answers
    out = io.StringIO()
    results, log = rollout([EARLY, OK, OK], ans, ask=True, max_failures=1, jobs=1, out=out)
    assert outcomes(results) == ["failed", "skipped", "skipped"]
    assert "--max-failures 1" in str(results[1].error)
    assert out.getvalue() == "" and log == ["start alpha"]


def test_ask_max_failures_stops_activations_after_the_answer(answers: tuple[Answers, int]) -> None:
    """Every host was built before the question; with --jobs 1 they activate one by one, and
    none begins once --max-failures is reached."""
    ans, w = answers
    os.write(w, b"y\n")
    results, log = rollout([LATE, OK, OK], ans, ask=True, max_failures=1, jobs=1, out=io.StringIO())
    assert outcomes(results) == ["rolled-back", "skipped", "skipped"]
    assert [e for e in log if e.startswith("activate")] == ["activate alpha"]


def test_ask_max_failures_jobs_a_skipped_host_leaves_the_gate(answers: tuple[Answers, int]) -> None:
    """alpha waits at the gate (its --jobs slot given up), beta fails before it and reaches
    --max-failures, gamma is skipped: the gate hears of gamma, and alpha does not activate."""
    ans, _ = answers
    out = io.StringIO()
    results, log = rollout([OK, EARLY, OK], ans, ask=True, max_failures=1, jobs=1, out=out)
    assert outcomes(results) == ["skipped", "failed", "skipped"]
    assert "--max-failures 1" in str(results[0].error) and out.getvalue() == ""
    assert not [e for e in log if e.startswith("activate")]


def test_dry_activate_with_canary_plans_the_others_once_the_canary_was_planned() -> None:
    results, log = rollout([OK, OK], job=Job.PLAN, canary=1)
    assert outcomes(results) == ["unchanged", "unchanged"]
    assert log == ["start alpha", "start beta"]
    # a canary that a deploy would refuse: the others are skipped, as the deploy would skip them
    results, _ = rollout([EARLY, OK], job=Job.PLAN, canary=1)
    assert outcomes(results) == ["failed", "skipped"]


def test_dry_activate_max_failures_counts_refused_plans() -> None:
    results, _ = rollout([EARLY, OK, OK], job=Job.PLAN, max_failures=1, jobs=1)
    assert outcomes(results) == ["failed", "skipped", "skipped"]
    assert "did not end planned and accepted (--max-failures 1)" in str(results[1].error)


FLAGS = ("ask", "canary", "max_failures", "jobs", "dry")


def piped(answer: bytes) -> Answers:
    """Answers from a pipe holding answer, closed after it."""
    r, w = os.pipe()
    os.write(w, answer)
    os.close(w)
    return Answers(os.fdopen(r))


@pytest.mark.parametrize("at", [0, 1], ids=["first", "second"])
@pytest.mark.parametrize("first", [OK, EARLY, LATE], ids=["ok", "fails-early", "fails-activating"])
@pytest.mark.parametrize("answer", [b"y\ny\n", b"n\n", b""], ids=["yes", "no", "none"])
def test_every_combination_ends_and_accounts_for_every_host(first: Script, answer: bytes, at: int) -> None:
    """Every subset of the options, the first (or second) host going well or failing before or
    during its activation, any answer: the run ends, and each host's outcome is one a user
    can trust."""
    for n in range(len(FLAGS) + 1):
        for flags in itertools.combinations(FLAGS, n):
            options: dict[str, object] = {
                "ask": "ask" in flags,
                "canary": 1 if "canary" in flags else 0,
                "max_failures": 1 if "max_failures" in flags else 0,
                "jobs": 1 if "jobs" in flags else None,
            }
            job = Job.PLAN if "dry" in flags else Job.DEPLOY
            ans = piped(answer)
            try:
                scripts = [OK, OK, OK]
                scripts[at] = first
                results, _ = rollout(scripts, ans, job=job, out=io.StringIO(), **options)
            finally:
                ans.stream.close()
            got = outcomes(results)
            assert len(results) == 3, flags
            asked_yes = job is Job.PLAN or not options["ask"] or answer.startswith(b"y")
            if first is OK:
                if asked_yes:
                    assert got == ["unchanged" if job is Job.PLAN else "activated"] * 3, (flags, got)
                else:  # declined: a declined canary stops the others as a failed one would
                    assert got == ["failed", *["skipped" if "canary" in flags else "failed"] * 2], flags
            elif job is Job.PLAN and first is LATE:  # a plan cannot see an activation's failure
                assert got == ["unchanged"] * 3, (flags, got)
            else:
                assert got[at] in ("failed", "rolled-back", "skipped"), (flags, got)
                stopped = "canary" in flags or ("max_failures" in flags and "jobs" in flags)
                if at == 0 and stopped and (first is EARLY or asked_yes):
                    assert got[1:] == ["skipped", "skipped"], (flags, got)
            if "skipped" in got:  # skipped only because a host did not go well
                assert got[at] in ("failed", "rolled-back") or "canary" in flags, (flags, got)
