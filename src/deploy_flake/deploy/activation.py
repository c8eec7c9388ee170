"""The host's transaction, driven through its agent: start it, follow it, confirm it over
a new SSH connection, and conclude what it did; a transaction the host lost, the login
check after a rollback, and Ctrl-C (ask the host to roll back)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from deploy_flake.agent.client import Agent
from deploy_flake.agent.protocol import Mode, Phase, Status
from deploy_flake.agent.settings import Settings
from deploy_flake.deploy.host import HostJob
from deploy_flake.errors import ConnectionLost, DeployError, ProcessTimeout, WrongHost
from deploy_flake.host import target
from deploy_flake.models import Outcome, Stage

# After a rollback, how long a new login may keep failing (sshd restarting) before the
# host's state is reported unknown.
VERIFY_LOGIN_S = 30


class Activation:
    """One host's transaction: asked for by activate(), and from then on the host's agent
    decides (it rolls back by itself without a confirmation)."""

    def __init__(self, job: HostJob) -> None:
        self.job = job
        self.result = job.result
        self.agent: Agent | None = None  # the host's transaction, once it was asked for
        self.activates = ""  # the specialisation's toplevel, when one is activated
        self.ended: Status | None = None  # how the host's transaction ended, once it did
        self.boot_once = False  # --reboot, verified: the commit stages a one-time boot

    @property
    def started(self) -> bool:
        """The host's transaction was asked for: the host may be acting on it."""
        return self.agent is not None and self.agent.started

    @property
    def rollback_failed(self) -> bool:
        """The transaction ended re-activating the previous system in vain, twice."""
        return self.ended is not None and self.ended.phase is Phase.ROLLBACK_FAILED

    def settings_for(self, toplevel: str, generation: int | None = None) -> Settings:
        t = self.job.t
        return Settings(
            new_system=toplevel,
            mode=Mode.TEST if self.job.opts.test else Mode.BOOT,
            activation_s=_whole(t.activation),
            health_s=_whole(t.health),
            settle_s=_whole(t.settle, minimum=0),
            confirm_s=_whole(t.confirm),
            boot_s=_whole(t.boot),
            holder=self.job.run.holder,
            gc_root=self.job.gc_root if generation is None else "",
            flake=self.job.run.flake.url if generation is None else f"rollback to generation {generation}",
            generation=generation,
            specialisation=self.job.specialisation,
            install_bootloader=self.job.opts.install_bootloader,
            # a rollback's target was chosen from the profile as it was then: it goes there only
            # from that generation, never over one someone committed since
            expect=self.job.profile_link if generation is not None else "",
            boot_once=self.boot_once,
        )

    async def activate(self, toplevel: str, generation: int | None = None, *, activates: str = "") -> None:
        """Asks the host for the transaction to toplevel (generation: a rollback's; activates:
        the toplevel of its specialisation that is activated, if one is), and follows it to
        its end: the result's outcome and error say how it ended."""
        self.activates = activates
        settings = self.settings_for(toplevel, generation)
        agent = Agent(self.job.remote, self.job.deploy_id, settings)
        self.agent = agent
        # Without a settle window, the fresh login starts as soon as the activation has
        # finished (checking): it is made after the activation either way, and its round
        # trips overlap the health check. The agent holds it until it asks for it.
        early = settings.mode is Mode.TEST and settings.settle_s == 0
        stop = Phase.CHECKING if early else None
        handoff = (Phase.CHECKING, Phase.AWAITING_CONFIRMATION) if early else (Phase.AWAITING_CONFIRMATION,)
        # installs the agent first when the host does not have it
        status = await agent.start(
            self.job.line, stop=stop, reconnect=self._reconnect, on_contact=self.job.note
        )
        self._saw(status)
        self._on_phase(status.phase)
        if not status.phase.final and status.phase is not Phase.NONE:
            # a transaction whose unit died (orphaned) is never confirmed: its guard rolls it back
            if status.phase not in handoff or status.orphaned:
                status = await self._follow(agent, until=lambda p: p in handoff, stop=stop)
            if status.phase in handoff and not status.orphaned:
                status = await self._confirm(agent)
        await self._conclude(agent, status)

    def _saw(self, status: Status) -> None:
        """The agent's record of the system it returns to is the truth (ours may be stale), and
        so is its record of the profile generation it replaced (and committed)."""
        if status.previous_system:
            self.result.previous_system = status.previous_system
        if status.replaced:
            self.job.replaced_link = status.replaced
        if status.committed:
            self.job.committed_link = status.committed

    def _on_phase(self, phase: Phase) -> None:
        if phase.stage is not None:
            self.job.stage(phase.stage)

    async def _follow(
        self,
        agent: Agent,
        *,
        until: Callable[[Phase], bool] = lambda p: p.final,
        stop: Phase | None = None,
    ) -> Status:
        status = await agent.follow(
            self.job.line,
            self._on_phase,
            until=until,
            stop=stop,
            reconnect=self._reconnect,
            on_contact=self.job.note,
        )
        self._saw(status)
        return status

    async def _confirm(self, agent: Agent) -> Status:
        """Confirms over a brand-new SSH connection, then follows the commit to its end."""
        self.job.stage(Stage.CONFIRM)
        status, login_error = await agent.confirm(self.job.line)  # shows the commit's log too
        if status is None:
            self.job.note(
                f"cannot log in to {self.job.dest.host} over a new SSH connection ({login_error}): "
                "the host rolls back to its previous system by itself"
            )
        else:
            self._on_phase(status.phase)
        confirmed = status is not None and status.phase in (Phase.COMMITTING, Phase.ACTIVATED)
        if status is None or not status.phase.final:
            status = await self._follow(agent)
        if confirmed and status.phase is Phase.ACTIVATED:
            self.job.note("confirmed over a new SSH connection")
        self._saw(status)
        return status

    async def _conclude(self, agent: Agent, status: Status) -> None:
        self.ended = status
        if status.phase is Phase.NONE:
            await self._transaction_vanished(agent)
            return
        outcome = status.phase.outcome or Outcome.UNKNOWN
        self.result.outcome = outcome
        if status.phase is Phase.STAGED:  # the reboot comes next
            return
        if outcome is Outcome.ACTIVATED:
            self.job.stage(Stage.DONE)
            return
        previous = status.previous_system or self.result.previous_system or "the previous system"
        if status.phase is Phase.ROLLBACK_FAILED:
            self.result.error = (
                f"{status.reason}. The host may be running a mix of both systems: log in and run "
                f"`{previous}/bin/switch-to-configuration test`, then `systemctl --failed`; "
                f"the log is /run/deploy-flake/{self.job.deploy_id}/log"
            )
        elif status.phase is Phase.RESTORE_FAILED:
            self.result.error = (
                f"{status.reason}. Check `readlink /nix/var/nix/profiles/system` "
                f"(it should name {self.job.profile_link or 'the generation from before the deploy'}) and "
                f"`readlink -f /run/current-system` (it should be {previous}); "
                f"the log is /run/deploy-flake/{self.job.deploy_id}/log"
            )
        elif outcome is Outcome.ROLLED_BACK:
            self.result.error = f"rolled back: {status.reason}"
            await self._verify_after_rollback()
        else:
            self.result.error = status.reason or "the activation failed"

    async def _transaction_vanished(self, agent: Agent) -> None:
        """The host has no record of the transaction: it rebooted (its /run is gone), or the
        unit never started. What the host runs now, seen over a new login, decides."""
        facts = await target.host_facts(self.job.remote, fresh=True)
        previous = self.result.previous_system or ""
        new = agent.settings.new_system
        if facts.current_system == previous and facts.profile_link == self.job.profile_link:
            self.result.outcome = Outcome.ROLLED_BACK
            self.result.error = (
                "rolled back: the host lost the record of the deploy (did it reboot?) and runs its "
                "previous system; the boot entry was not changed"
            )
        elif (
            facts.current_system in (new, self.activates or new)
            and facts.profile_link != self.job.profile_link
        ):
            self.result.outcome = Outcome.ACTIVATED
            self.job.note(
                "the host lost the record of the deploy (did it reboot?) but runs the new, committed system"
            )
            self.job.stage(Stage.DONE)
        else:
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                f"the host lost the record of the deploy (did it reboot?): it runs {facts.current_system}, "
                f"its system profile is {facts.profile_link}; check `readlink -f /run/current-system` "
                "and `systemctl --failed`"
            )

    async def _reconnect(self) -> None:
        """After a lost connection: open the shared connection again (one still open must
        prove it reaches this host: WrongHost goes through)."""
        try:
            await self.job.connect(self.job.t.connect)
        except WrongHost:
            raise
        except DeployError:
            pass

    async def _verify_after_rollback(self) -> None:
        """A new login must work and the previous system must be running again."""
        expected = self.result.previous_system
        deadline = time.monotonic() + VERIFY_LOGIN_S
        last_error = "no answer"
        while True:
            try:
                done = await self.job.remote.run(
                    ["readlink", "-f", "/run/current-system"], fresh=True, timeout=30
                )
            except ProcessTimeout:
                done = None
            except ConnectionLost as e:
                done, last_error = None, e.ssh_error
            if done is not None and not done.ok:
                last_error = done.last_error()
            if done is not None and done.ok:
                current = done.stdout.strip()
                if expected and current != expected:
                    self.result.outcome = Outcome.UNKNOWN
                    self.result.error = (
                        f"{self.result.error}; but the host now runs {current}, not {expected}"
                    )
                else:
                    self.job.note("verified over a new SSH connection: back on the previous system, healthy")
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        self.result.outcome = Outcome.UNKNOWN
        self.result.error = (
            f"{self.result.error}; but a new SSH login to {self.job.dest.host} still fails after "
            f"{VERIFY_LOGIN_S}s ({last_error}): check the host's console"
        )

    async def interrupted(self) -> None:
        """Ctrl-C or SIGTERM after the transaction was asked for: ask the host to roll back
        (or never to start), and follow it to its end."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        agent = self.agent
        assert agent is not None
        self.job.note("interrupted: asking the host to roll back")
        try:
            status = await agent.abort()
            if status is None or (not status.phase.final and status.phase is not Phase.NONE):
                status = await self._follow(agent)
            if status.phase is Phase.NONE:
                status = Status(Phase.FAILED, reason="interrupted before the transaction started")
            await self._conclude(agent, status)
            if self.result.outcome is Outcome.ACTIVATED:
                self.job.note("the host had already committed the new system when interrupted")
            elif self.result.outcome is Outcome.FAILED and "interrupted" not in status.reason:
                self.result.error = f"interrupted: {status.reason or 'nothing was changed'}"
        except (DeployError, OSError) as e:
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                f"interrupted, and then {e}; without confirmation {self.job.dest.host} returns to its "
                f"previous system by itself within {self.job.t.confirm:.0f}s of its activation"
            )


def _whole(seconds: float, *, minimum: int = 1) -> int:
    """The agent counts whole seconds; the command line refuses anything it cannot enforce."""
    return max(minimum, int(-(-seconds // 1)))
