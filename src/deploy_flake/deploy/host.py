"""The whole deploy of one host: connect, copy, build, check, activate, confirm."""

from __future__ import annotations

import asyncio
import contextlib
import time

from deploy_flake.deploy import checks
from deploy_flake.deploy.activation import Activation
from deploy_flake.deploy.build import build_system, copying_flake
from deploy_flake.deploy.plan import show_plan
from deploy_flake.deploy.reboot import reboot_into, reboot_wanted
from deploy_flake.deploy.rollback_target import rollback_target
from deploy_flake.deploy.run import Run
from deploy_flake.deploy.status import show_status
from deploy_flake.errors import DeployError
from deploy_flake.host import target
from deploy_flake.host.target import HostFacts
from deploy_flake.models import DeployOptions, HostResult, Job, Outcome, RebootPolicy, Stage
from deploy_flake.remote.destination import Destination
from deploy_flake.remote.ssh import Remote, SshSettings

DEFAULT_PRE_ACTIVATE = "pre-activate-safety-checks"


class HostDeploy:
    """One host's run: deploy, plan, rollback or status, as run.options.job says.

    options and ssh: this host's own (an inventory's per-host overrides), else the run's.
    """

    def __init__(
        self,
        run: Run,
        dest: Destination,
        index: int,
        *,
        options: DeployOptions | None = None,
        ssh: SshSettings | None = None,
    ) -> None:
        self.run = run
        self.opts = options or run.options
        self.job = self.opts.job
        self.t = self.opts.timeouts
        self.dest = dest
        self.label = dest.label
        self.remote = Remote(dest, ssh or run.ssh)
        self.result = HostResult(destination=dest.raw, host=dest.host, config=dest.config)
        self.deploy_id = f"{run.run_id}-{index}"
        self.activation = Activation(self)  # the host's transaction, once it was asked for
        self.gc_root = f"/tmp/deploy-flake-{self.deploy_id}.system"
        self.profile_link = ""  # the system profile's generation when we connected
        self.boot_id = ""  # the host's boot when we connected
        self.reboot_reasons: tuple[str, ...] = ()  # what of the new system takes a reboot to use
        self.finished = False
        self.arrived_at_gate = False

    # ---------------------------------------------------------------- helpers
    def stage(self, stage: Stage) -> None:
        if stage == self.result.stage and stage is not Stage.CONNECT:
            return
        self.result.stage = stage
        self.run.events.stage(self.label, stage)

    def note(self, text: str) -> None:
        self.result.notes.append(text)
        self.run.events.note(self.label, text)

    def line(self, text: str) -> None:
        self.run.events.line(self.label, text)

    # ---------------------------------------------------------------- pipeline
    @property
    def started(self) -> bool:
        """The host's transaction was asked for: the host may be acting on it."""
        return self.activation.started

    async def deploy(self) -> HostResult:
        """The whole pipeline; never raises: whatever happens ends this host only."""
        t0 = time.monotonic()
        connected = False
        try:
            self.stage(Stage.CONNECT)
            await self.remote.connect(self.t.connect)
            connected = True
            await self._deploy_connected()
        except DeployError as e:
            self._ended_by(str(e))
        except asyncio.CancelledError:
            if self.result.stage is Stage.REBOOT:
                self.result.outcome = Outcome.UNKNOWN
                self.result.error = (
                    "interrupted while the host rebooted into its new, committed system; "
                    f"check `deploy-flake status {self.dest.raw}`"
                )
            elif self.started:
                await self.activation.interrupted()
            else:
                self.result.error = "interrupted before anything was changed"
                self.result.outcome = Outcome.FAILED
        except Exception as e:  # a bug or the deployer's own trouble (OSError): this host only
            self._ended_by(f"internal error: {type(e).__name__}: {e}")
        finally:
            self.result.duration_s = time.monotonic() - t0
            if connected:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._disconnect())
        self.finished = True
        self.run.events.finished(self.label, self.result)
        return self.result

    def skipped(self, why: str, outcome: Outcome = Outcome.FAILED) -> HostResult:
        """Never started: nothing was done on the host."""
        self.result.outcome = outcome
        self.result.error = why
        self.finished = True
        self.run.events.finished(self.label, self.result)
        return self.result

    def abandoned(self) -> HostResult:
        """The result as far as it is known, when the deployer stops at once (interrupted twice)."""
        if self.finished:
            return self.result
        if self.started:
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                "interrupted twice before the host answered. Without a confirmation it returns to "
                f"its previous system by itself within {self.t.confirm:.0f}s of its activation; check "
                f"with `systemctl status deploy-flake-{self.deploy_id}` and `readlink /run/current-system`"
            )
        else:
            self.result.outcome = Outcome.FAILED
            self.result.error = "interrupted twice before anything was changed"
        return self.result

    def _ended_by(self, error: str) -> None:
        self.result.error = error
        if self.started:  # the agent decides; we could not find out what it decided
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                f"{error}. Without a confirmation the host returns to its previous system by "
                f"itself; check with `systemctl status deploy-flake-{self.deploy_id}`, "
                f"`cat /run/deploy-flake/{self.deploy_id}/log` and `readlink /run/current-system`"
            )
        else:
            self.result.outcome = Outcome.FAILED

    async def _disconnect(self) -> None:
        """Drops the build's GC root unless the agent holds it now, and the connection."""
        if not self.started and self.job in (Job.DEPLOY, Job.PLAN):
            await self.remote.run(["rm", "-f", self.gc_root], timeout=15)
        await self.remote.disconnect()

    async def _deploy_connected(self) -> None:
        if self.job in (Job.DEPLOY, Job.PLAN):
            async with copying_flake(self) as copy:
                await self._deploy_with(copy)
        else:
            await self._deploy_with(None)

    async def _deploy_with(self, copy: asyncio.Task[None] | None) -> None:
        facts = await target.host_facts(self.remote)
        self.result.previous_system = facts.current_system or None
        self.profile_link = facts.profile_link
        self.boot_id = facts.boot_id
        if self.job is Job.STATUS:
            show_status(self, facts)
            return
        sudo = facts.uid != 0 if self.opts.sudo is None else self.opts.sudo
        if sudo:
            password = await target.sudo_needs_password(self.remote)
            self.remote = self.remote.with_sudo(True, password=password)

        if self.job is Job.ROLLBACK:
            toplevel, generation = self._rollback_target(facts)
        else:
            toplevel, generation = await build_system(self, facts, copy), None
        self.result.system = toplevel

        preflight = self.opts.preflight and self.job is not Job.PLAN
        self.stage(Stage.PREFLIGHT if preflight else Stage.CHECK)
        seen = await target.inspect(
            self.remote,
            toplevel,
            facts.current_system,
            pre_activate=self.opts.pre_activate_script or DEFAULT_PRE_ACTIVATE,
            preflight_s=self.t.preflight if preflight else 0,
        )
        earlier = checks.preflight_verdict(seen.health, seen.failed_units)
        if earlier is not None:  # only an earlier, killed transaction's units failed
            self.note(earlier)

        self.stage(Stage.CHECK)
        if self.job is Job.PLAN:
            await show_plan(self, toplevel, facts, seen)
            return
        gate = self.run.gate
        if gate is not None:  # --ask: the plan, then one answer for every host
            verdict = await show_plan(self, toplevel, facts, seen, final=False)
            if verdict != "ok":
                raise DeployError(verdict)
        else:
            self.sanity_checks(seen.closure, facts.system)
            for change in seen.changes:
                self.line(f"change: {change}")

        await self._pre_activate(toplevel, seen.pre_activate)
        if gate is not None:
            self.arrived_at_gate = True
            # hosts waiting for the answer give their --jobs slot to those still building
            self.run.limit.release()
            try:
                go_on = await gate.arrive(self.result)
            finally:
                await self.run.limit.acquire()
            if not go_on:
                raise DeployError("not confirmed at the --ask prompt: nothing was changed")

        self.stage(Stage.ACTIVATE)
        await self.activation.activate(toplevel, generation)
        if self.result.outcome is Outcome.ACTIVATED and reboot_wanted(
            self.opts.reboot,
            test=self.opts.test,
            reboot_reasons=self.reboot_reasons,
            toplevel=toplevel,
            current_system=facts.current_system,
        ):
            await reboot_into(self, toplevel)

    def _rollback_target(self, facts: HostFacts) -> tuple[str, int]:
        """The generation to roll back to: --to N, or the one before the profile's current one."""
        system, wanted = rollback_target(facts, self.opts.rollback_to, self.dest.host)
        self.result.config = f"generation {wanted}"
        self.note(f"rolling back to generation {wanted}: {system}")
        return system, wanted

    def sanity_checks(self, c: target.ClosureFacts, host_system: str) -> None:
        checks.check_system(
            c,
            toplevel=self.result.system,
            host_system=host_system,
            host=self.dest.host,
            skip=self.opts.skip_checks,
        )
        self.reboot_reasons = c.reboot_reasons
        if c.reboot_reasons and self.opts.reboot is RebootPolicy.NEVER:
            self.note(f"reboot needed to use the new {', '.join(c.reboot_reasons)}")

    async def _pre_activate(self, toplevel: str, exists: bool) -> None:
        relpath = self.opts.pre_activate_script
        explicit = relpath is not None
        relpath = relpath or DEFAULT_PRE_ACTIVATE
        if not exists:
            if explicit:
                raise DeployError(f"the new system has no executable {relpath} (--pre-activate-script)")
            return
        self.stage(Stage.PRE_ACTIVATE)
        done = await target.run_pre_activate(
            self.remote, toplevel, relpath, timeout=self.t.pre_activate, on_line=self.line
        )
        for ln in done.stdout.splitlines():
            self.line(ln)
        if not done.ok:
            raise DeployError(
                f"the pre-activation check {relpath} failed (exit {done.returncode}): nothing was changed"
            )
