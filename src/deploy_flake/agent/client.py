"""The deployer's client of the host agent: one transaction on one host, over ssh.

It starts the transaction (installing the agent first when the host lacks it),
follows it, confirms it over a new connection and aborts it; the host decides
everything else (see sh/header.sh).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from deploy_flake import process
from deploy_flake.agent.calls import AgentCalls
from deploy_flake.agent.log_cursor import LogCursor
from deploy_flake.agent.protocol import (
    Keeper,
    Phase,
    Status,
    TrialStatus,
    final_status,
    parse_trial,
)
from deploy_flake.agent.settings import CONFIRM_HOLD_MARGIN_S, CONFIRM_TAKEN_S, MARGIN_S, Settings
from deploy_flake.errors import ConnectionLost, DeployError, ProcessTimeout, WrongHost
from deploy_flake.process import LineSink
from deploy_flake.remote.ssh import Remote

STREAM_S = 30  # the longest one call shows the agent's log before the deployer asks again
RESCUES = 2  # how often the deployer starts a killed transaction's guard itself

# What a transaction does without the deployer, by the phase it was last seen in.
_ON_ITS_OWN = {
    Phase.ACTIVATING: "without a confirmation it returns to its previous system",
    Phase.COMMITTING: "it finishes the commit, or puts the previous system back if that fails",
    Phase.ROLLING_BACK: "it finishes its rollback",
}


class AgentLost(DeployError):
    """No answer from the agent within the time it may take: its final state is not known here."""


PhaseSink = Callable[[Phase], None]


class Agent(AgentCalls):
    """One transaction on one host, seen from the deployer."""

    def __init__(self, remote: Remote, deploy_id: str, settings: Settings) -> None:
        super().__init__(remote, deploy_id)
        self.settings = settings
        self.unit = f"deploy-flake-{deploy_id}"
        self.started = False  # from the moment start was asked: the host may be acting on it
        self.last: Status | None = None
        self.log = LogCursor()  # how much of the agent's log was shown, and what it said
        self._installed = False

    # ------------------------------------------------------------ commands
    async def _call(
        self,
        verb: str,
        *args: str,
        timeout: float,
        fresh: bool = False,
        stdin: bytes | None = None,
        on_line: LineSink | None = None,
    ) -> tuple[Status | None, process.Completed]:
        """Runs one agent verb; its status, or None when the answer did not come from the agent
        (ssh failed, sudo refused, the host is rebooting) or was cut before its end.

        Only the last line of a whole answer is the agent's status: the log it shows before
        may hold anything an activation printed, a line that looks like a status too, and a
        cut answer ends wherever the cut fell. Without one, the caller asks again (a watch, a
        status), and the agent answers from its state file."""
        try:
            done = await self.remote.run(
                self._argv(verb, *args),
                root=True,
                fresh=fresh,
                stdin=stdin,
                timeout=timeout,
                on_stdout=on_line,
            )
        except ConnectionLost as e:  # what it printed before (the log shown), and the last ssh line
            done = e.completed
            return None, done
        status = final_status(done.stdout) if done.returncode == 0 else None
        if status is not None:
            self.last = status
        return status, done

    async def start(
        self,
        on_line: LineSink,
        *,
        stop: Phase | None = None,
        reconnect: Callable[[], object] | None = None,
        on_contact: LineSink | None = None,
    ) -> Status:
        """Asks the host to start the transaction in its own unit, then shows its log (like
        watch, in the same round trip) until it needs the deployer, ends, or reaches `stop`.
        `reconnect`: opens the shared connection again after the stream was cut (by the
        activation itself: a restarted sshd takes its sessions along, the shared one too);
        `on_contact` is told so.

        `started` is set before the request leaves: from then on, only the agent's
        own answer can say that nothing was changed.
        """
        self.started = True
        try:
            status, done = await self._streamed(
                "start",
                str(STREAM_S),
                str(stop or ""),
                on_line=on_line,
                stdin=self.settings.encode(),
                timeout=120 + STREAM_S,
            )
        except ProcessTimeout:
            status, done = None, None
        if status is not None and status.phase is Phase.NONE:
            # The agent is not on the host (the first deploy since it booted, or a new
            # version of deploy-flake): nothing was started. Install it, and ask again.
            self.started = False
            self.last = None  # the agent's absence, not the transaction's phase
            if self._installed:
                raise DeployError(
                    f"the deploy agent is missing on {self.remote.dest.host} right after its install"
                )
            await self.install()
            self._installed = True
            return await self.start(on_line, stop=stop, reconnect=reconnect, on_contact=on_contact)
        if status is not None:
            return status
        if self.log.offset > 0:
            # its log was coming: the transaction runs, and the stream was cut (a restarted
            # sshd that takes its sessions along, the shared connection among them: opened
            # again here, or every later command would log in anew); following it takes over
            self.last = Status(self.log.phase or Phase.STARTING)
            if on_contact is not None:
                on_contact(
                    f"the connection to {self.remote.dest.host} was cut while it was {self.last.phase} "
                    "(a restarted sshd takes its sessions along): the transaction goes on by itself; "
                    "connecting again to follow it"
                )
            if reconnect is not None:
                await _quietly(reconnect)
            return self.last
        # the answer was lost: ask what the host did
        why = done.last_lines(1) if done is not None else f"no answer within {120 + STREAM_S}s"
        asked = await self.status_when_reachable(30)
        if asked is None:
            raise DeployError(f"starting the activation: {why}; the host's state is not known")
        return asked

    async def status(self, *, fresh: bool = False) -> Status | None:
        try:
            status, _ = await self._call("status", timeout=30, fresh=fresh)
        except ProcessTimeout:
            return None
        return status

    async def status_when_reachable(self, within_s: float) -> Status | None:
        deadline = time.monotonic() + within_s
        while True:
            for fresh in (False, True):
                status = await self.status(fresh=fresh)
                if status is not None:
                    return status
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(2)

    async def _streamed(
        self,
        verb: str,
        *args: str,
        on_line: LineSink,
        timeout: float,
        fresh: bool = False,
        stdin: bytes | None = None,
    ) -> tuple[Status | None, process.Completed]:
        """Runs a verb that ends like `watch`: the agent's log from where the last call
        stopped, then the status line (agent/log_cursor.py keeps track of what was shown)."""
        shown = self.log.showing(on_line)
        status, done = await self._call(verb, *args, timeout=timeout, fresh=fresh, stdin=stdin, on_line=shown)
        if status is not None:
            self.log.answered(done)
        return status, done

    async def watch(self, max_s: int, on_line: LineSink, *, stop: Phase | None = None) -> Status | None:
        """Shows the agent's log from where the last call stopped, until the transaction needs
        the deployer, ends or reaches `stop` (or max_s passed); its status, None when the host
        did not answer."""
        try:
            status, _ = await self._streamed(
                "watch",
                str(self.log.offset),
                str(max_s),
                str(stop or ""),
                on_line=on_line,
                timeout=max_s + 30,
            )
        except ProcessTimeout:
            return None
        return status

    async def rescue(self, on_line: LineSink) -> Status | None:
        """Starts the guard of a transaction that nothing carries on any more (its unit and
        its guard were killed), then watches it like `watch`; None when the host did not answer."""
        try:
            status, _ = await self._streamed(
                "rescue", str(self.log.offset), str(STREAM_S), on_line=on_line, timeout=STREAM_S + 30
            )
        except ProcessTimeout:
            return None
        return status

    async def follow(
        self,
        on_line: LineSink,
        on_phase: PhaseSink,
        *,
        until: Callable[[Phase], bool] = lambda p: p.final,
        stop: Phase | None = None,
        reconnect: Callable[[], object] | None = None,
        on_contact: LineSink | None = None,
    ) -> Status:
        """Follows the transaction until `until(phase)` holds (by default: a final phase);
        `stop`: a phase at which the agent's watch hands back even though it need not;
        `on_contact`: told when the host stops answering, and when it answers again.

        One deadline rule: after each new phase the agent gets Settings.remaining_s(phase)
        to make progress; without an answer by then, AgentLost.
        """
        phase = self.last.phase if self.last else Phase.PENDING
        deadline = time.monotonic() + self.settings.remaining_s(phase)
        last_problem = "no answer"
        lost_since: float | None = None
        orphaned_in: Phase | None = None  # the phase in which the transaction's unit was seen dead
        rescues = 0
        rescue = False
        # a transaction already seen without its unit (in start's or confirm's answer) is
        # handled as if this loop had seen it
        seen = self.last if self.last is not None and self.last.orphaned else None
        host = self.remote.dest.host
        while True:
            status: Status | None
            if seen is not None:
                status, seen = seen, None
            elif rescue:
                rescues += 1
                status = await self.rescue(on_line)
            else:
                status = await self.watch(STREAM_S, on_line, stop=stop)
            rescue = False
            window = self.settings.contact_window_s()
            if status is None and lost_since is None:
                lost_since = time.monotonic()
                if on_contact is not None:
                    on_contact(
                        f"no answer from {host} while it is {phase}: its transaction goes on by itself "
                        f"({_ON_ITS_OWN.get(phase, _ON_ITS_OWN[Phase.ACTIVATING])}); trying again for "
                        f"up to {window}s"
                    )
            elif status is None and lost_since is not None:
                lost_for = time.monotonic() - lost_since
                if lost_for > window:
                    raise AgentLost(f"no answer from {host} for {lost_for:.0f}s while it was {phase}")
            elif status is not None and lost_since is not None:
                if on_contact is not None:
                    away = time.monotonic() - lost_since
                    on_contact(f"{host} answers again, after {away:.0f}s without contact")
                lost_since = None
            if status is not None:
                if status.phase != phase:
                    phase = status.phase
                    deadline = time.monotonic() + self.settings.remaining_s(phase)
                    on_phase(phase)
                if phase.final or phase is Phase.NONE or (until(phase) and not status.orphaned):
                    return status
                if status.orphaned:  # its guard's recovery is all there is to follow now
                    first = orphaned_in is None
                    if first:
                        # the guard's recovery moves the phase on at once: where it found it
                        orphaned_in = status.killed_in or phase
                        # from here on, only the guard's recovery is waited for
                        deadline = time.monotonic() + self.settings.recovery_s() + MARGIN_S
                        if on_contact is not None:
                            on_contact(
                                f"the transaction's unit was killed on {host} while it was {orphaned_in}: "
                                + (
                                    "its guard recovers the host"
                                    if status.keeper is Keeper.GUARD
                                    else "asking the host to start its guard"
                                )
                            )
                    if status.keeper is Keeper.NONE:
                        if not first and on_contact is not None:
                            on_contact(
                                f"its guard was killed on {host} too: "
                                "asking the host to start its guard again"
                            )
                        if rescues >= RESCUES:
                            raise AgentLost(
                                f"the transaction's unit was killed on {host} while it was {orphaned_in}, "
                                f"and its guard could not recover the host ({rescues} tries); on the host: "
                                f"`systemctl status deploy-flake-{self.deploy_id}-guard`"
                            )
                        rescue = True
                        continue
            if time.monotonic() > deadline and orphaned_in is not None:
                raise AgentLost(
                    f"the transaction's unit was killed on {host} while it was {orphaned_in}, and its "
                    f"guard did not finish recovering the host within {self.settings.recovery_s()}s "
                    f"(it is {phase}); on the host: `systemctl status deploy-flake-{self.deploy_id}-guard`"
                )
            if time.monotonic() > deadline:
                raise AgentLost(
                    f"no word from the activation on {host} within "
                    f"{self.settings.remaining_s(phase)}s of it entering {phase} ({last_problem})"
                )
            if status is None:
                last_problem = "the host did not answer"
                await asyncio.sleep(2)
                if reconnect is not None:
                    await _quietly(reconnect)

    def _confirm_timeout(self) -> float:
        """How long a confirmation call may take: an early one waits for the health check
        (see the agent's confirm), then the log is shown until the commit ends (or STREAM_S)."""
        held = 2 * self.settings.health_s + self.settings.settle_s + CONFIRM_HOLD_MARGIN_S
        return held + CONFIRM_TAKEN_S + STREAM_S + 30

    async def confirm(self, on_line: LineSink) -> tuple[Status | None, str]:
        """Confirms over a brand-new SSH connection, retrying within the confirmation window,
        and shows the log in the same call until the commit ends.

        Returns the agent's status once it took the confirmation (committing or finished,
        or rolling back if its window had just closed), or None with the last login error
        when no new connection got through in time. Sent while the host still checks the
        new system (checking), the agent holds it until it may take it.
        """
        window_end = time.monotonic() + self.settings.confirm_s
        last_error = ""
        while time.monotonic() < window_end:
            try:
                status, done = await self._streamed(
                    "confirm",
                    str(self.log.offset),
                    str(STREAM_S),
                    on_line=on_line,
                    fresh=True,
                    timeout=self._confirm_timeout(),
                )
            except ProcessTimeout:
                return None, "the confirmation got no answer"
            if status is not None:
                if status.phase in (Phase.CHECKING, Phase.AWAITING_CONFIRMATION) and not status.orphaned:
                    # not taken (a health check that outlasted the agent's wait): again
                    await asyncio.sleep(0.2)
                    continue
                return status, ""
            last_error = done.last_error()
            await asyncio.sleep(min(2.0, max(0.0, window_end - time.monotonic())))
        return None, last_error

    async def abort(self) -> Status | None:
        """Asks the host to roll back now (or never to start); any connection that works."""
        for fresh in (False, True):
            try:
                status, _ = await self._call("abort", timeout=60, fresh=fresh)
            except ProcessTimeout:
                continue
            if status is not None:
                return status
        return None

    # ------------------------------------------------------------ the verified reboot's verbs
    async def trial(self, verb: str, *args: str, timeout: float = 120) -> TrialStatus | None:
        """trial-status, trial-commit, trial-reject: the trial's status after the verb."""
        text = await self.answer(verb, *args, timeout=timeout)
        return parse_trial(text) if text is not None else None


async def _quietly(action: Callable[[], object]) -> None:
    result = action()
    if asyncio.iscoroutine(result):
        try:
            await result
        except WrongHost:  # the connection reaches another machine: nothing more over it
            raise
        except DeployError:
            pass
