"""The agent's verbs that answer with lines of their own, outside a transaction: install,
boot-info (plan, status, the reboot's checks) and gc. client.Agent, one transaction, adds the
transaction's verbs."""

from __future__ import annotations

from deploy_flake.agent.protocol import Phase, Status, format_status, parse_boot_info, parse_gc
from deploy_flake.agent.script import script, script_path
from deploy_flake.errors import ConnectionLost, DeployError, ProcessTimeout
from deploy_flake.host_reports import BootInfo, GcReport
from deploy_flake.models import GcSettings
from deploy_flake.remote.ssh import Remote

GC_TIMEOUT_S = 3600  # gc on a host: removing generations, the boot entries, the store's garbage


class AgentCalls:
    """The agent's verbs that answer with lines of their own, outside a transaction."""

    def __init__(self, remote: Remote, deploy_id: str) -> None:
        self.remote = remote
        self.deploy_id = deploy_id

    def _argv(self, verb: str, *args: str) -> list[str]:
        # The agent and the transactions' records both live in /run: without the script
        # (the host rebooted), there is no such transaction either, and that is the answer.
        none = format_status(Status(Phase.NONE)).replace("\t", "\\t")
        run_or_none = f'[ -f "$0" ] && exec /bin/sh "$0" "$@"; printf "{none}\\n"'
        return ["/bin/sh", "-c", run_or_none, script_path(), verb, self.deploy_id, *args]

    async def install(self) -> None:
        """Puts the agent script on the host (a temporary file per deploy, then renamed)."""
        path = script_path()
        sh = 'umask 077 && mkdir -p "${1%/*}" && cat > "$1.$2.tmp" && mv -f "$1.$2.tmp" "$1"'
        try:
            done = await self.remote.run(
                ["sh", "-c", sh, "sh", path, self.deploy_id], root=True, stdin=script(), timeout=60
            )
        except ConnectionLost as e:
            done = e.completed
        except ProcessTimeout:
            raise DeployError("installing the deploy agent did not finish within 60s") from None
        if not done.ok:
            raise DeployError(
                f"cannot install the deploy agent on {self.remote.dest.host}: {done.last_lines(2)}"
            )

    async def answer(self, verb: str, *args: str, timeout: float = 120, fresh: bool = False) -> str | None:
        """A verb that answers with lines of its own (boot-info, trial-*), the agent installed
        first (a rebooted host has lost it): its whole output, or None when it did not come."""
        await self.install()
        try:
            done = await self.remote.run(self._argv(verb, *args), root=True, fresh=fresh, timeout=timeout)
        except (ConnectionLost, ProcessTimeout):
            return None
        return done.stdout if done.ok else None

    async def boot_info(
        self, toplevel: str = "", *, boot_once: bool = False, generation: int | None = None
    ) -> BootInfo | None:
        """What boots the host; with toplevel, how that system's boot would go (boot_once:
        --reboot's one-time boot; generation: a rollback's). None when the host did not say."""
        args = [toplevel, "1" if boot_once else "0", str(generation or "")] if toplevel else []
        try:
            text = await self.answer("boot-info", *args, timeout=60)
        except DeployError:
            return None
        return parse_boot_info(text) if text is not None else None

    async def gc(self, settings: GcSettings) -> GcReport | None:
        """deploy-flake gc on the host (sh/gc.sh); None when its answer did not come whole."""
        text = await self.answer(
            "gc",
            str(settings.keep),
            str(settings.older_than_s),
            "1" if settings.collect_garbage else "0",
            "1" if settings.dry_run else "0",
            timeout=GC_TIMEOUT_S,
        )
        return parse_gc(text) if text is not None else None
