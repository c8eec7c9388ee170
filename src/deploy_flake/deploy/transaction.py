"""What a deploy and a rollback share once they know the system the host is to run: the
checks, the pre-activation check, --ask's one answer, the host's transaction, the reboot."""

from __future__ import annotations

import functools

from deploy_flake.agent.protocol import Phase
from deploy_flake.deploy.activation import Activation
from deploy_flake.deploy.boot_trial import reboot_trial
from deploy_flake.deploy.host import DEFAULT_PRE_ACTIVATE, HostJob
from deploy_flake.deploy.last_resort import reboot_to_previous
from deploy_flake.deploy.plan import show_plan
from deploy_flake.deploy.reboot import reboot_decision, reboot_into
from deploy_flake.errors import DeployError
from deploy_flake.host import inspection
from deploy_flake.host.target import HostFacts
from deploy_flake.models import Outcome, RollbackFailurePolicy, Stage
from deploy_flake.output.ask import Passage


class TransactionJob(HostJob):
    """A job that changes the host's system through the host's transaction."""

    @functools.cached_property
    def activation(self) -> Activation:
        """The host's transaction, once it was asked for (made at first use)."""
        return Activation(self)

    @property
    def started(self) -> bool:
        return self.activation.started

    async def _interrupted(self) -> None:
        if self.result.stage is Stage.REBOOT and self.activation.rollback_failed:
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                f"{self.result.error}; interrupted while the host rebooted into the previous "
                "system's boot entry (--on-rollback-failure=reboot); check "
                f"`deploy-flake status {self.dest.raw}`"
            )
        elif self.result.stage is Stage.REBOOT and self.activation.boot_once:
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                "interrupted during the verified reboot: the host boots the new system once, and "
                "returns to its old default by itself unless it is confirmed; check "
                f"`deploy-flake status {self.dest.raw}`"
            )
        elif self.result.stage is Stage.REBOOT:
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                "interrupted while the host rebooted into its new, committed system; "
                f"check `deploy-flake status {self.dest.raw}`"
            )
        elif self.started:
            await self.activation.interrupted()
        else:
            await super()._interrupted()

    async def _change_to(self, toplevel: str, facts: HostFacts, generation: int | None = None) -> None:
        """The host's system becomes toplevel (generation: a rollback's), as the checks,
        the pre-activation check and --ask let it; then the reboot --reboot asks for."""
        self.result.system = toplevel
        seen = await self._inspect(toplevel, facts, preflight=self.opts.preflight)
        gate = self.run.gate
        if gate is not None:  # --ask: the plan, then one answer for every host
            verdict = await show_plan(self, toplevel, facts, seen, final=False, generation=generation)
            if verdict != "ok":
                raise DeployError(verdict)
        else:
            self.sanity_checks(seen.closure, facts)
            for change in seen.changes:
                self.line(f"change: {change}")

        # --reboot: decided before anything changes, so that a host that cannot boot the new
        # system once (verified) fails now, and its transaction stages that boot at commit
        reasons = seen.closure.reboot_reasons
        wants_reboot, verified = reboot_decision(self, toplevel, facts, reasons)
        expected = seen.closure.activates or toplevel  # what the one-time boot starts
        # the host checks, before it changes anything, that its boot loader can boot the new
        # system once, that a rollback's generation has an entry, that /boot has room
        self.activation.boot_once = verified

        await self._pre_activate(toplevel, seen.pre_activate)
        if gate is not None:
            self.arrived_at_gate = True
            passage = await gate.wait(self.result, self.run.limit)
            if passage is Passage.DECLINED:
                raise DeployError("not confirmed at the --ask prompt: nothing was changed")
            if passage is Passage.HALTED:  # --max-failures, reached while it waited
                self.result.outcome = Outcome.SKIPPED
                self.result.error = gate.halted
                return

        self.stage(Stage.ACTIVATE)
        await self.activation.activate(toplevel, generation, activates=seen.closure.activates)
        ended = self.activation.ended
        if (
            ended is not None
            and self.activation.rollback_failed
            and self.opts.on_rollback_failure is RollbackFailurePolicy.REBOOT
        ):
            await reboot_to_previous(self, ended.reason)
            return
        if self.result.outcome is not Outcome.ACTIVATED or not wants_reboot:
            return
        agent = self.activation.agent
        if verified and agent is not None and ended is not None and ended.phase is Phase.STAGED:
            await reboot_trial(self, agent, expected, reasons)
        elif not verified:
            await reboot_into(self, toplevel, reasons)

    async def _pre_activate(self, toplevel: str, exists: bool) -> None:
        """The new system's own pre-activation check (--pre-activate-script), when it has one."""
        relpath = self.opts.pre_activate_script
        explicit = relpath is not None
        relpath = relpath or DEFAULT_PRE_ACTIVATE
        if not exists:
            if explicit:
                raise DeployError(f"the new system has no executable {relpath} (--pre-activate-script)")
            return
        self.stage(Stage.PRE_ACTIVATE)
        done = await inspection.run_pre_activate(
            self.remote, toplevel, relpath, timeout=self.t.pre_activate, on_line=self.line
        )
        for ln in done.stdout.splitlines():
            self.line(ln)
        if not done.ok:
            raise DeployError(
                f"the pre-activation check {relpath} failed (exit {done.returncode}): nothing was changed"
            )
