"""What every job on one host shares: its stages, notes and lines, the connection, the
host's facts, the result, and the run of the job that never raises."""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod

from deploy_flake.agent.protocol import gc_root
from deploy_flake.deploy import checks
from deploy_flake.deploy.run import Run
from deploy_flake.destination import Destination
from deploy_flake.errors import DeployError, WrongHost
from deploy_flake.host import elevation, inspection, target
from deploy_flake.host.target import HostFacts, HostIdentity
from deploy_flake.models import DeployOptions, HostResult, Job, Outcome, RebootPolicy, Stage
from deploy_flake.remote.ssh import Remote, SshSettings

DEFAULT_PRE_ACTIVATE = "pre-activate-safety-checks"


class HostJob(ABC):
    """One host's job (a deploy, plan, rollback or status: the subclasses, see jobs.py).

    options and ssh: this host's own (an inventory's per-host overrides), else the run's.
    """

    builds = False  # the job builds the system (deploy, plan): its GC root is dropped at the end

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
        self.t = self.opts.timeouts
        self.dest = dest
        self.label = dest.label
        self.remote = Remote(dest, ssh or run.ssh, elevate=self.opts.elevate)
        self.result = HostResult(destination=dest.raw, host=dest.host, config=dest.config)
        self.deploy_id = f"{run.run_id}-{index}"
        self.gc_root = gc_root(self.deploy_id)  # made by root once the system is on the host
        self.profile_link = ""  # the system profile's generation when we connected
        # what the host's transaction said: the generation it replaced, and the one it committed
        self.replaced_link = ""
        self.committed_link = ""
        self.boot_id = ""  # the host's boot when we connected
        self.identity: HostIdentity | None = None  # the machine the first contact reached
        self.foreign_connection = False  # the open connection is another host's: never closed here
        self.finished = False
        self.arrived_at_gate = False
        self.specialisation = ""  # the new system's specialisation to activate ("": the system itself)

    # ---------------------------------------------------------------- what the job shows
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

    # ---------------------------------------------------------------- the job, never raising
    @property
    def started(self) -> bool:
        """The host's transaction was asked for: the host may be acting on it."""
        return False  # only a job that changes the system starts one

    async def perform(self) -> HostResult:
        """The whole job; never raises: whatever happens ends this host only."""
        t0 = time.monotonic()
        connected = False
        try:
            self.stage(Stage.CONNECT)
            await self.connect(self.t.connect)
            connected = True
            await self._steps()
        except DeployError as e:
            self._ended_by(str(e))
        except asyncio.CancelledError:
            await self._interrupted()
        except Exception as e:  # a bug or the deployer's own trouble (OSError): this host only
            self._ended_by(f"internal error: {type(e).__name__}: {e}")
        finally:
            self.result.duration_s = time.monotonic() - t0
            if connected and not self.foreign_connection:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._disconnect())
        self.finished = True
        self.run.events.finished(self.label, self.result)
        return self.result

    @abstractmethod
    async def _steps(self) -> None:
        """The job's own steps, on the connected host."""

    async def _interrupted(self) -> None:
        """Ctrl-C or SIGTERM."""
        self.result.error = "interrupted before anything was changed"
        self.result.outcome = Outcome.FAILED

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
        if not self.started and self.builds:
            await self.remote.run(["rm", "-f", self.gc_root], root=True, timeout=15)
        await self.remote.disconnect()

    # ---------------------------------------------------------------- steps the jobs share
    async def connect(self, timeout: float) -> None:
        """Opens the shared connection, or reuses the one that is open. A reused one must
        prove that it reaches this host: the machine the first contact saw (before any
        contact: the one a new login reaches), else WrongHost and nothing runs over it."""
        if await self.remote.connect(timeout):
            try:
                self.identity = await target.check_reused_connection(self.remote, self.identity)
            except WrongHost:
                self.foreign_connection = True
                raise

    async def _facts(self) -> HostFacts:
        """What the host runs and how it is, when we connected."""
        facts = await target.host_facts(self.remote)
        self.result.previous_system = facts.current_system or None
        self.profile_link = facts.profile_link
        self.boot_id = facts.boot_id
        self.identity = facts.identity
        return facts

    async def _use_sudo(self, facts: HostFacts) -> None:
        """--sudo, or by default when the login user is not root: root's commands through sudo
        (or doas, --elevate)."""
        sudo = facts.uid != 0 if self.opts.sudo is None else self.opts.sudo
        if sudo:
            password = await elevation.sudo_needs_password(self.remote)
            self.remote = self.remote.with_sudo(True, password=password)

    async def _inspect(self, toplevel: str, facts: HostFacts, *, preflight: bool) -> inspection.Inspection:
        """What the host says of the new system toplevel (its closure, what changes, its
        pre-activation check) and, with preflight, whether the running system is healthy."""
        self.stage(Stage.PREFLIGHT if preflight else Stage.CHECK)
        self.specialisation = checks.wanted_specialisation(
            self.opts.specialisation, facts.specialisation, activate_now=self.opts.test
        )
        seen = await inspection.inspect(
            self.remote,
            toplevel,
            facts.current_system,
            pre_activate=self.opts.pre_activate_script or DEFAULT_PRE_ACTIVATE,
            preflight_s=self.t.preflight if preflight else 0,
            specialisation=self.specialisation,
        )
        earlier = checks.preflight_verdict(seen.health, seen.failed_units)
        if earlier is not None:  # only an earlier, killed transaction's units failed
            self.note(earlier)
        self.stage(Stage.CHECK)
        return seen

    def sanity_checks(self, c: inspection.ClosureFacts, facts: HostFacts) -> None:
        """The new system (result.system, or its specialisation to activate) is fit for the
        host, else a DeployError."""
        generation = (self.result.config or "N").split()[-1]  # a rollback's: "generation N"
        checks.check_system(
            c,
            toplevel=self.result.system,
            host_machine=facts.machine,
            host=self.dest.host,
            skip=self.opts.skip_checks,
            activate_now=self.opts.test,
            boot_only=(
                "a rollback to it can only take effect at a boot: on the host, `nix-env -p "
                f"/nix/var/nix/profiles/system --switch-generation {generation}`, "
                "`/nix/var/nix/profiles/system/bin/switch-to-configuration boot`, then reboot"
                if self.opts.job is Job.ROLLBACK
                else "deploy it with --test=skip --reboot=if-needed"
            ),
        )
        running = facts.specialisation
        note = checks.check_specialisation(
            c,
            wanted=self.specialisation,
            asked=self.opts.specialisation,
            running=running,
            host=self.dest.host,
        )
        if note is not None:
            self.note(note)
        elif running and not self.opts.test:
            self.note(
                f"{self.dest.host} runs the specialisation {running} of its system; the boot entry is the "
                "new system itself, which it runs after a reboot"
            )
        if c.reboot_reasons and self.opts.reboot is RebootPolicy.NEVER:
            self.note(f"reboot needed to use the new {', '.join(c.reboot_reasons)}")
