"""When each host of a run starts, as --canary, --max-failures and --ask say.

The hosts come in waves: with --canary N, the first N hosts, then the others once all N
went well; else one wave. --ask asks one question per wave (its Gate), once every host of
the wave has its plan or has ended. --max-failures K: once K hosts did not go well, no new
host starts and no host at a gate goes on to activate; they are skipped, nothing changed.

A host "goes well" when it ends as its job means to: activated for a deploy (or a rollback),
planned and accepted by the checks for a plan (--dry-activate), so a plan rehearses the
deploy's waves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.run import Run
from deploy_flake.models import HostResult, Job, Outcome
from deploy_flake.output.ask import Answers, Gate


def went_well(job: Job, outcome: Outcome) -> bool:
    """The host ended as its job means to."""
    if job is Job.GC:
        return outcome in (Outcome.UNCHANGED, Outcome.CLEANED)
    return outcome is (Outcome.UNCHANGED if job in (Job.PLAN, Job.STATUS) else Outcome.ACTIVATED)


def wave_runs(run: Run, hosts: int, answers: Answers | None = None) -> list[Run]:
    """Each host's Run: with --ask (a deploy's), the gate of its wave."""
    options = run.options
    if not options.ask or options.job is not Job.DEPLOY:
        return [run] * hosts
    answers = answers or Answers()
    canaries = min(options.canary, hosts)
    first = replace(run, gate=Gate(canaries, answers, canaries=True)) if canaries else run
    rest = replace(run, gate=Gate(hosts - canaries, answers)) if hosts > canaries else run
    return [first if i < canaries else rest for i in range(hosts)]


class Rollout:
    """Starts each host of the run in its turn; `await rollout.one(i, job)` is host i's result."""

    def __init__(self, run: Run, deploys: Sequence[HostJob]) -> None:
        self.job = run.options.job
        self.max_failures = run.options.max_failures
        self.limit = run.limit
        self.deploys = deploys
        self.canaries = min(run.options.canary, len(deploys))
        self.canaries_left = self.canaries
        self.failures = 0
        self.stop: str | None = None  # why hosts not yet started are skipped
        self.canary_verdict: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        if not self.canaries:
            self.canary_verdict.set_result(None)

    async def one(self, i: int, deploy: HostJob) -> HostResult:
        """Host i's job, when its turn comes; skipped if it never comes. Never raises but on
        cancellation of a job under way."""
        try:
            return await self._in_turn(i, deploy)
        finally:
            # after the result was counted: a gate decides only once every host is accounted for
            gate = deploy.run.gate
            if gate is not None and not deploy.arrived_at_gate:
                gate.leave()

    async def _in_turn(self, i: int, deploy: HostJob) -> HostResult:
        try:
            if i >= self.canaries:
                verdict = await asyncio.shield(self.canary_verdict)
                self.stop = self.stop or verdict
            await self.limit.acquire()
        except asyncio.CancelledError:  # interrupted while waiting for its turn
            return deploy.skipped("interrupted before it started; nothing was changed")
        if self.stop is not None:
            self.limit.release()
            return deploy.skipped(self.stop, Outcome.SKIPPED)
        try:
            result = await deploy.perform()
        finally:
            self.limit.release()
        self._count(i, deploy, result)
        return result

    def _count(self, i: int, deploy: HostJob, result: HostResult) -> None:
        """A host's result, for --max-failures and the canaries' verdict."""
        well = went_well(self.job, result.outcome)
        if not well and result.outcome is not Outcome.SKIPPED:
            self.failures += 1
            if self.max_failures and self.failures >= self.max_failures and self.stop is None:
                ended = "activated" if self.job is Job.DEPLOY else "planned and accepted"
                self._halt(
                    f"skipped: {self.failures} host(s) did not end {ended} "
                    f"(--max-failures {self.max_failures})"
                )
        if i < self.canaries:
            self.canaries_left -= 1
            if not well and not self.canary_verdict.done():
                self.canary_verdict.set_result(f"skipped: canary {deploy.dest.raw} ended {result.outcome}")
            if self.canaries_left == 0 and not self.canary_verdict.done():
                self.canary_verdict.set_result(None)

    def interrupted(self) -> None:
        """The first Ctrl-C: no question is asked any more."""
        for gate in self._gates():
            gate.close()

    def _halt(self, why: str) -> None:
        self.stop = why
        for gate in self._gates():
            gate.halt(why)

    def _gates(self) -> list[Gate]:
        gates = {id(d.run.gate): d.run.gate for d in self.deploys}
        return [g for g in gates.values() if g is not None]
