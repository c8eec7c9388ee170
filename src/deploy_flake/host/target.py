"""One function per look at a host's running system: facts, identity, health, the boot
entry, a reboot. The new system's inspection is host/inspection.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from deploy_flake.agent.protocol import (
    AGENT_DIR,
    BOOT_ENTRY_MARK,
    LAST_DEPLOY_FILE,  # written by the agent at each commit
)
from deploy_flake.errors import ConnectionLost, DeployError, ProcessTimeout, WrongHost
from deploy_flake.process import Completed, LineSink
from deploy_flake.remote.ssh import Remote

# Facts about a host, read in one round trip: the one list of what status, plan
# and the deploy's checks know about a host. A fixed script: nothing from the
# command line is ever put into it.
_FACTS_SCRIPT = (
    r"""
echo "uid=$(id -u)"
echo "hostname=$(hostname)"
echo "machine_id=$(cat /etc/machine-id 2>/dev/null)"
echo "machine=$(uname -m)"
cur=$(readlink -f /run/current-system 2>/dev/null)
echo "current=$cur"
echo "booted=$(readlink -f /run/booted-system 2>/dev/null)"
echo "profile=$(readlink /nix/var/nix/profiles/system 2>/dev/null)"
echo "profile_system=$(readlink -f /nix/var/nix/profiles/system 2>/dev/null)"
echo "state=$(systemctl is-system-running 2>/dev/null)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
systemctl list-units --failed --plain --no-legend --no-pager 2>/dev/null | awk '{print "failed=" $1}'
for f in kernel initrd kernel-modules; do
  b=$(readlink -f "/run/booted-system/$f" 2>/dev/null)
  [ -n "$b" ] && [ "$b" != "$(readlink -f "/run/current-system/$f" 2>/dev/null)" ] && echo "reboot=$f"
done
# a specialisation of the committed (or booted) system that the host runs (NixOS links a
# system's specialisation NAME as <toplevel>/specialisation/NAME)
for s in /nix/var/nix/profiles/system/specialisation/* /run/booted-system/specialisation/*; do
  [ -e "$s" ] && [ "$(readlink -f "$s")" = "$cur" ] && echo "specialisation=${s##*/}" && break
done
# one process for all generations (nix-env links each to its system's store path)
find /nix/var/nix/profiles -maxdepth 1 -name 'system-*-link' -type l -printf '%f %l\n' 2>/dev/null |
  sed -n 's/^system-\([0-9]*\)-link /generation=\1 /p'
"""
    + f"[ -r {LAST_DEPLOY_FILE} ] && sed 's/^/last_/' {LAST_DEPLOY_FILE}\ntrue\n"
)


@dataclass(frozen=True)
class HostIdentity:
    """Which machine a connection reaches: its machine id (systemd's /etc/machine-id) and host
    name, as the first contact saw them."""

    machine_id: str
    hostname: str

    def __str__(self) -> str:
        return f"{self.hostname or 'a host without a name'} (machine id {self.machine_id or 'unknown'})"


@dataclass(frozen=True)
class HostFacts:
    uid: int
    hostname: str
    system: str  # the platform, like x86_64-linux (the kernel's machine, uname -m, and "-linux")
    current_system: str
    booted_system: str
    profile_link: str  # the generation the system profile points at (system-N-link)
    profile_system: str = ""  # the system that generation is
    state: str = ""  # systemctl is-system-running, without waiting
    failed_units: tuple[str, ...] = ()
    reboot_reasons: tuple[str, ...] = ()  # what of the running system differs from the booted one
    generations: tuple[tuple[int, str], ...] = ()  # (number, system), oldest first
    last_deploy: Mapping[str, str] = field(default_factory=dict)  # recorded by the agent at each commit
    boot_id: str = ""  # the kernel's id of this boot: a reboot changes it
    machine: str = ""  # uname -m, like x86_64 or armv7l
    specialisation: str = ""  # the committed system's specialisation the host runs, if it runs one
    machine_id: str = ""

    @property
    def identity(self) -> HostIdentity:
        return HostIdentity(self.machine_id, self.hostname)

    @property
    def generation(self) -> int | None:
        """The system profile's current generation number."""
        m = re.fullmatch(r"system-(\d+)-link", self.profile_link)
        return int(m.group(1)) if m else None


async def run_checked(
    remote: Remote,
    argv: list[str],
    what: str,
    *,
    root: bool = False,
    fresh: bool = False,
    timeout: float = 120,
    on_line: LineSink | None = None,
) -> Completed:
    try:
        return await remote.run(argv, root=root, fresh=fresh, timeout=timeout, on_stderr=on_line, what=what)
    except ProcessTimeout:
        raise DeployError(f"{what} did not finish within {timeout:.0f}s") from None


async def host_facts(remote: Remote, *, fresh: bool = False, timeout: float = 60) -> HostFacts:
    """fresh: over a new connection, not the shared one (which may have died with a reboot)."""
    done = await run_checked(
        remote, ["sh", "-c", _FACTS_SCRIPT], "reading the host's facts", fresh=fresh, timeout=timeout
    )
    if not done.ok:
        raise DeployError(f"cannot read facts of {remote.dest.host}: {done.last_lines(2)}")
    return parse_facts(done.stdout)


def parse_facts(text: str) -> HostFacts:
    """Reads the facts script's output (KEY=VALUE lines; some keys repeat)."""
    pairs = [line.split("=", 1) for line in text.splitlines() if "=" in line]
    kv = {k: v for k, v in pairs}
    machine = kv.get("machine", "")
    generations = []
    for k, v in pairs:
        number, _, system = v.partition(" ")
        if k == "generation" and number.isdigit():
            generations.append((int(number), system))
    return HostFacts(
        uid=int(kv.get("uid", "-1") or -1),
        hostname=kv.get("hostname", ""),
        system=f"{machine}-linux" if machine else "",
        current_system=kv.get("current", ""),
        booted_system=kv.get("booted", ""),
        profile_link=kv.get("profile", ""),
        profile_system=kv.get("profile_system", ""),
        state=kv.get("state", ""),
        failed_units=tuple(v for k, v in pairs if k == "failed"),
        reboot_reasons=tuple(v for k, v in pairs if k == "reboot"),
        generations=tuple(sorted(generations)),
        last_deploy={k[len("last_") :]: v for k, v in pairs if k.startswith("last_")},
        boot_id=kv.get("boot_id", ""),
        machine=machine,
        specialisation=kv.get("specialisation", ""),
        machine_id=kv.get("machine_id", ""),
    )


# Which machine a connection reaches, in one short round trip. A fixed script.
_IDENTITY_SCRIPT = 'echo "machine_id=$(cat /etc/machine-id 2>/dev/null)"; echo "hostname=$(hostname)"'


async def host_identity(remote: Remote, *, fresh: bool = False) -> HostIdentity:
    """fresh: over a new login, which goes where the destination goes; else over the shared
    connection, which goes where it went when it was opened."""
    what = "reading which host a new login reaches" if fresh else "reading which host the connection reaches"
    done = await run_checked(remote, ["sh", "-c", _IDENTITY_SCRIPT], what, fresh=fresh, timeout=60)
    if not done.ok:
        raise DeployError(f"cannot read which host {remote.dest.host} is: {done.last_lines(2)}")
    kv = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return HostIdentity(kv.get("machine_id", ""), kv.get("hostname", ""))


async def check_reused_connection(remote: Remote, expected: HostIdentity | None) -> HostIdentity:
    """A shared connection that was open already must prove that it reaches this host: the
    machine it reaches must be `expected` (what the first contact saw) or, before any contact,
    the one a new login to the destination reaches. Otherwise WrongHost: nothing may run over it."""
    if expected is None:
        seen, expected = await asyncio.gather(host_identity(remote), host_identity(remote, fresh=True))
    else:
        seen = await host_identity(remote)
    if seen != expected:
        raise WrongHost(
            f"the shared SSH connection for {remote.dest.host} ({remote.control_path}) reaches "
            f"{seen}, not {expected}: it is another destination's; nothing was run on "
            f"{remote.dest.host} over it"
        )
    return seen


async def boot_entry_problem(remote: Remote, deploy_id: str, profile_link: str) -> str | None:
    """Why the host's boot entry may not be the one the transaction deploy_id found (None:
    it is): the system profile is not profile_link any more, or the transaction wrote the
    new system's boot entry and did not write the old one again."""
    script = 'readlink /nix/var/nix/profiles/system; if [ -e "$1" ]; then echo changed; fi'
    mark = f"{AGENT_DIR}/{deploy_id}/{BOOT_ENTRY_MARK}"
    done = await run_checked(
        remote, ["sh", "-c", script, "sh", mark], "checking the boot entry", root=True, timeout=30
    )
    if not done.ok:
        return f"it could not be checked ({done.last_lines(1)})"
    lines = done.stdout.split()
    if "changed" in lines:
        return "the transaction wrote the new system's boot entry and could not write the old one again"
    if not lines or lines[0] != profile_link:
        return (
            f"the system profile is {lines[0] if lines else 'gone'}, not {profile_link or 'the one'} "
            "the deploy found"
        )
    return None


async def system_health(remote: Remote, timeout: float) -> tuple[str, list[str]]:
    """The system state after waiting for boot to finish, and the failed units."""
    done = await run_checked(
        remote,
        ["timeout", str(int(timeout)), "systemctl", "is-system-running", "--wait"],
        "the health check",
        timeout=timeout + 30,
    )
    state = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "unknown"
    if state == "running":
        return state, []
    units = await run_checked(
        remote,
        ["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"],
        "listing failed units",
        timeout=60,
    )
    return state, [ln.split()[0] for ln in units.stdout.splitlines() if ln.strip()]


# The boot id first, in the same call: the boot that our reboot ends (the host may have
# rebooted since deploy-flake connected, during a long build, say).
_REBOOT_SCRIPT = "cat /proc/sys/kernel/random/boot_id && exec systemctl reboot"


async def request_reboot(remote: Remote) -> str:
    """Asks systemd to reboot the host; the boot id it had just before, or "" when the answer
    was lost before it said. The connection may die before the answer comes back: that is
    no error; whether the host rebooted is told by its boot id (wait_for_new_boot)."""
    try:
        done = await remote.run(["sh", "-c", _REBOOT_SCRIPT], root=True, timeout=60)
    except ConnectionLost as e:  # it went down before it answered
        return _boot_id(e.completed.stdout)
    if not done.ok:
        raise DeployError(f"systemctl reboot failed on {remote.dest.host}: {done.last_lines(2)}")
    return _boot_id(done.stdout)


def _boot_id(stdout: str) -> str:
    lines = stdout.split("\n")  # only a whole line: a cut one is no boot id
    return lines[0].strip() if len(lines) > 1 else ""


REBOOT_POLL_S = 2.0


async def wait_for_new_boot(remote: Remote, old_boot_id: str, deadline: float) -> HostFacts | None:
    """Logs in over new connections until the host answers with another boot id; its facts
    then, or None when the (monotonic) deadline passed first."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            facts = await host_facts(remote, fresh=True, timeout=min(left, 30))
        except DeployError:
            facts = None
        if facts is not None and facts.boot_id and facts.boot_id != old_boot_id:
            return facts
        await asyncio.sleep(min(REBOOT_POLL_S, max(0.0, deadline - time.monotonic())))
    return None
