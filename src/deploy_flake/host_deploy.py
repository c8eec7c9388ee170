"""The whole deploy of one host: connect, copy, build, check, activate, confirm."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from deploy_flake import nix, process, target
from deploy_flake.destination import Destination, check_config_name
from deploy_flake.errors import DeployError
from deploy_flake.events import Events
from deploy_flake.models import DeployOptions, HostResult, Outcome, Stage
from deploy_flake.nix import Flake
from deploy_flake.process import ProcessTimeout
from deploy_flake.ssh import Remote, SshSettings
from deploy_flake.target import AgentState

DEFAULT_PRE_ACTIVATE = "pre-activate-safety-checks"
FINAL_STATES = {"activated", "rolled-back", "rollback-failed", "failed"}
_STAGE_OF_STATE = {
    "activating": Stage.ACTIVATE,
    "checking": Stage.ACTIVATE,
    "awaiting-confirmation": Stage.CONFIRM,
    "committing": Stage.COMMIT,
}


@dataclass(frozen=True)
class Run:
    """What every host of one invocation shares."""

    flake: Flake
    options: DeployOptions
    ssh: SshSettings
    events: Events
    run_id: str
    holder: str


class AgentGone(DeployError):
    """The agent's state is not on the host: its unit never ran, or the host rebooted."""


class HostDeploy:
    def __init__(self, run: Run, dest: Destination, index: int) -> None:
        self.run = run
        self.opts = run.options
        self.t = run.options.timeouts
        self.dest = dest
        self.label = dest.label
        self.remote = Remote(dest, run.ssh)
        self.result = HostResult(destination=dest.raw, host=dest.host, config=dest.config)
        self.deploy_id = f"{run.run_id}-{index}"
        self.started = False  # the agent's transaction is running on the host
        self.gc_root = f"/tmp/deploy-flake-{self.deploy_id}.system"
        self.log_offset = 0  # bytes of the agent's log already shown

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
    async def deploy(self) -> HostResult:
        t0 = time.monotonic()
        connected = False
        try:
            self.stage(Stage.CONNECT)
            await target.open_connection(self.remote, self.t.connect)
            connected = True
            await self._deploy_connected()
        except DeployError as e:
            self.result.error = str(e)
            if self.started:  # the agent decides; we could not find out what it decided
                self.result.outcome = Outcome.UNKNOWN
        except asyncio.CancelledError:
            self.result.error = "interrupted"
            if self.started:
                await self._interrupted()
            else:
                self.result.error = "interrupted before anything was changed"
                self.result.outcome = Outcome.FAILED
        finally:
            self.result.duration_s = time.monotonic() - t0
            if connected:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._disconnect())
        self.run.events.finished(self.label, self.result)
        return self.result

    async def _disconnect(self) -> None:
        """Drops the build's GC root (the profile holds the system if it was committed) and the connection."""
        await process.run(self.remote.command(["rm", "-f", self.gc_root]), timeout=15)
        await target.close_connection(self.remote)

    async def _deploy_connected(self) -> None:
        facts = await target.host_facts(self.remote)
        sudo = facts.uid != 0 if self.opts.sudo is None else self.opts.sudo
        self.remote = self.remote.with_sudo(sudo)
        if sudo:
            await target.check_sudo(self.remote)
        config = self.dest.config or check_config_name(
            facts.hostname, f"the host name that {self.dest.host} reports,"
        )
        self.result.config = config
        self.result.previous_system = facts.current_system or None

        self.stage(Stage.COPY)
        await self._copy()

        self.stage(Stage.BUILD)
        toplevel = await nix.build_toplevel(
            self.remote,
            self.run.flake,
            config,
            extra_args=self.opts.build_args,
            gc_root=self.gc_root,
            timeout=self.t.build,
            on_line=self.line,
        )
        self.result.system = toplevel
        self.note(f"built {toplevel}")

        if self.opts.preflight:
            self.stage(Stage.PREFLIGHT)
            state, failed = await target.system_health(self.remote, self.t.preflight)
            if state != "running":
                units = ", ".join(failed) if failed else "none listed"
                raise DeployError(
                    f"System is not healthy. State: {state}; failed units: {units}. "
                    "Fix them or deploy with --preflight-check=skip."
                )

        self.stage(Stage.CHECK)
        await self._sanity_checks(toplevel, facts.system)
        for change in await target.closure_diff(self.remote, facts.current_system, toplevel):
            self.line(f"change: {change}")

        await self._pre_activate(toplevel)

        self.stage(Stage.ACTIVATE)
        await self._activate(toplevel)

    async def _copy(self) -> None:
        attempts = max(1, self.t.copy_attempts)
        for attempt in range(1, attempts + 1):
            try:
                await nix.flake_archive(
                    self.remote, self.opts.flake_dir, timeout=self.t.copy, on_line=self.line
                )
                return
            except (DeployError, ProcessTimeout) as e:
                reason = (
                    f"no progress within {self.t.copy:.0f}s (--copy-timeout)"
                    if isinstance(e, ProcessTimeout)
                    else str(e)
                )
                if attempt == attempts:
                    raise DeployError(
                        f"copying the flake failed after {attempts} attempts: {reason}"
                    ) from None
                delay = 2.0**attempt
                self.note(f"copy attempt {attempt} failed ({reason}); retrying in {delay:.0f}s")
                await asyncio.sleep(delay)

    async def _sanity_checks(self, toplevel: str, host_system: str) -> None:
        skip = self.opts.skip_checks
        c = await target.closure_facts(self.remote, toplevel)
        if "switch-to-configuration" not in skip and not c.has_switch_to_configuration:
            raise DeployError(
                f"{toplevel} has no bin/switch-to-configuration: it is not a NixOS system "
                "(skip this check with --skip-check=switch-to-configuration)"
            )
        if "system-type" not in skip and c.system and host_system and c.system != host_system:
            raise DeployError(
                f"the new system is built for {c.system} but the host runs {host_system} "
                "(skip this check with --skip-check=system-type)"
            )
        if "sshd" not in skip and not (c.sshd_units and c.sshd_wanted):
            what = "does not have sshd" if not c.sshd_units else "has sshd but does not start it at boot"
            raise DeployError(
                f"the new configuration {what}: activating it would lock you out of "
                f"{self.dest.host} (skip this check with --skip-check=sshd if that is intended)"
            )
        if c.reboot_reasons:
            self.note(f"reboot needed to use the new {', '.join(c.reboot_reasons)}")

    async def _pre_activate(self, toplevel: str) -> None:
        relpath = self.opts.pre_activate_script
        explicit = relpath is not None
        relpath = relpath or DEFAULT_PRE_ACTIVATE
        if not await target.pre_activate_exists(self.remote, toplevel, relpath):
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

    # ---------------------------------------------------------------- activation
    async def _activate(self, toplevel: str) -> None:
        t = self.t
        await target.install_agent(self.remote)
        mode = "test" if self.opts.test else "boot"
        await target.start_transaction(
            self.remote,
            self.deploy_id,
            toplevel,
            mode,
            activation_s=t.activation,
            health_s=t.health,
            settle_s=t.settle,
            confirm_s=t.confirm,
            boot_s=t.boot,
            holder=self.run.holder,
            gc_root=self.gc_root,
        )
        self.started = True
        final = await self._follow()
        self._conclude(final)
        if final.state == "rolled-back":
            await self._verify_after_rollback()

    def _budget(self) -> float:
        t = self.t
        # activation, health twice, confirmation, commit, and a rollback's own activation and health
        return 2 * t.activation + 3 * t.health + t.settle + t.confirm + t.boot + 120

    async def _follow(self) -> AgentState:
        """Streams the agent's log until it reaches a final state; confirms when asked."""
        deadline = time.monotonic() + self._budget()
        confirm_tried = False
        while True:
            try:
                state = await self._watch()
            except AgentGone:
                raise
            except DeployError as e:
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"lost contact with {self.dest.host} during the activation ({e}). Without the "
                        "confirmation the host returns to its previous system by itself; check with "
                        f"`systemctl status deploy-flake-{self.deploy_id}` and `readlink /run/current-system`"
                    ) from None
                await self._reconnect()
                continue
            if state.state in _STAGE_OF_STATE:
                self.stage(_STAGE_OF_STATE[state.state])
            if state.state in FINAL_STATES:
                return state
            if state.state == "awaiting-confirmation" and not confirm_tried:
                confirm_tried = True
                confirmed = await self._confirm()
                if confirmed is not None and confirmed.state in FINAL_STATES:
                    # stream what is left of the log, then report
                    with contextlib.suppress(DeployError):
                        await self._watch(max_s=1)
                    return confirmed
            if time.monotonic() > deadline:
                raise DeployError(
                    f"the activation on {self.dest.host} did not finish within "
                    f"{self._budget():.0f}s (state: {state.state})"
                )

    async def _reconnect(self) -> None:
        """After a lost connection: wait a little, then open the shared connection again."""
        await asyncio.sleep(2)
        with contextlib.suppress(DeployError):
            await target.open_connection(self.remote, self.t.connect)

    async def _watch(self, max_s: int = 30) -> AgentState:
        """Shows the agent's log from where the last watch stopped; returns the state it reached."""

        start = self.log_offset

        def show(text: str) -> None:
            if text.startswith(target.STATE_MARK):
                return
            # what was shown stays shown, even if this watch is cut off or cancelled
            self.log_offset += len(text.encode()) + 1
            if text:
                self.line(text)

        try:
            done = await process.run(
                target.agent_command(self.remote, "watch", self.deploy_id, str(self.log_offset), str(max_s)),
                timeout=max_s + 30,
                on_stdout=show,
            )
        except ProcessTimeout:
            raise DeployError("no answer from the host") from None
        marker = done.stdout.rfind("\n" + target.STATE_MARK)
        if done.returncode not in (0, 255) and marker < 0:
            raise AgentGone(
                f"the activation unit deploy-flake-{self.deploy_id} is gone: {done.last_lines(1)}"
            )
        if done.returncode != 0 or marker < 0:
            raise DeployError(done.last_lines(1) or f"ssh exited with {done.returncode}")
        tail = done.stdout[marker:]
        state = target.parse_state(tail.strip().splitlines()[0])
        assert state is not None
        self.log_offset = start + done.stdout_size - len(tail.encode())
        return state

    async def _confirm(self) -> AgentState | None:
        """Confirms over a brand-new SSH connection, retrying within the confirmation window."""
        self.stage(Stage.CONFIRM)
        window_end = time.monotonic() + self.t.confirm
        last_error = ""
        while time.monotonic() < window_end:
            try:
                done = await process.run(
                    target.agent_command(self.remote, "confirm", self.deploy_id, fresh=True),
                    timeout=self.t.boot + self.t.health + 60,
                )
            except ProcessTimeout:
                return None
            state = next((s for s in map(target.parse_state, done.stdout.splitlines()) if s), None)
            if state is not None:
                if state.state in FINAL_STATES:
                    self.note("confirmed over a new SSH connection")
                return state
            last_error = done.last_lines(1) or f"ssh exited with {done.returncode}"
            await asyncio.sleep(2)
        self.note(
            f"cannot log in to {self.dest.host} over a new SSH connection ({last_error}): "
            "the host rolls back to its previous system by itself"
        )
        return None

    def _conclude(self, final: AgentState) -> None:
        outcome = {
            "activated": Outcome.ACTIVATED,
            "rolled-back": Outcome.ROLLED_BACK,
            "failed": Outcome.FAILED,
        }.get(final.state, Outcome.UNKNOWN)
        self.result.outcome = outcome
        if outcome is Outcome.ACTIVATED:
            self.stage(Stage.DONE)
            return
        if final.state == "rollback-failed":
            self.result.error = (
                f"{final.reason}. The host may be running a mix of both systems: log in and run "
                f"`{self.result.previous_system}/bin/switch-to-configuration test`"
            )
        elif outcome is Outcome.ROLLED_BACK:
            self.result.error = f"rolled back: {final.reason}"
        else:
            self.result.error = final.reason or "the activation failed"

    async def _verify_after_rollback(self) -> None:
        """A new login must work and the previous system must be running again."""
        expected = self.result.previous_system
        for _ in range(10):
            done = await process.run(
                self.remote.command(["readlink", "-f", "/run/current-system"], fresh=True), timeout=30
            )
            if done.ok:
                current = done.stdout.strip()
                if expected and current != expected:
                    self.result.outcome = Outcome.UNKNOWN
                    self.result.error = (
                        f"{self.result.error}; but the host now runs {current}, not {expected}"
                    )
                else:
                    self.note("verified over a new SSH connection: back on the previous system, healthy")
                return
            await asyncio.sleep(1)
        self.result.outcome = Outcome.UNKNOWN
        self.result.error = (
            f"{self.result.error}; but a new SSH login to {self.dest.host} still fails: "
            "check the host's console"
        )

    async def _interrupted(self) -> None:
        """Ctrl-C or SIGTERM after the transaction started: ask the host to roll back, and wait for it."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        self.note("interrupted: asking the host to roll back")
        try:
            for fresh in (False, True):
                done = await process.run(
                    target.agent_command(self.remote, "abort", self.deploy_id, fresh=fresh), timeout=15
                )
                if done.returncode != 255:
                    break
            deadline = time.monotonic() + self.t.activation + self.t.health + 30
            while time.monotonic() < deadline:
                try:
                    state = await self._watch(max_s=10)
                except DeployError:
                    await self._reconnect()
                    continue
                if state.state in FINAL_STATES:
                    self._conclude(state)
                    if self.result.outcome is Outcome.ACTIVATED:
                        self.note("the host had already committed the new system when interrupted")
                    return
            raise DeployError("no answer")
        except (DeployError, ProcessTimeout, OSError):
            self.result.outcome = Outcome.UNKNOWN
            self.result.error = (
                f"interrupted; without confirmation {self.dest.host} returns to its previous "
                f"system within {self.t.confirm:.0f}s of its activation by itself"
            )
