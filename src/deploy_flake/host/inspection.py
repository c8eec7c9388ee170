"""The new system on a host, before it is activated: one inspection (health, layout, the
pre-activation check, the closure's changes), the pre-activation check's run, and what
switch-to-configuration dry-activate says it would do."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy_flake.errors import DeployError
from deploy_flake.host.target import run_checked
from deploy_flake.process import Completed, LineSink
from deploy_flake.remote.ssh import Remote

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------ the new system, inspected
# Everything the deploy checks before it activates, in one round trip: the running system's
# health (preflight), the new system's layout (sanity checks, reboot), its pre-activation
# check, and what changes. Read-only; the deploy decides in this order. A fixed script: the
# arguments are store paths, a checked relative path and a number.
_INSPECT_SCRIPT = r"""
top=$1 cur=$2 rel=$3 wait_s=$4 spec=$5
shift 5  # the rest: the diff's argv (closure_diff_argv) but the new system, which comes last
for s in "$top"/specialisation/*; do [ -e "$s" ] && echo "specialisation=${s##*/}"; done
# the system to activate: the specialisation SPEC of the new one, when asked and present
if [ -n "$spec" ] && [ -e "$top/specialisation/$spec" ]; then
  top=$(readlink -f "$top/specialisation/$spec")
  echo "activates=$top"
fi
diff=""  # the diff (a nix process) runs while the rest is looked at
if [ -n "$cur" ] && [ "$cur" != "$top" ] && diff=$(mktemp 2>/dev/null); then
  timeout 120 "$@" "$top" > "$diff" 2>/dev/null &
fi
if [ "$wait_s" -gt 0 ]; then
  echo "health=$(timeout "$wait_s" systemctl is-system-running --wait 2>/dev/null | tail -n 1)"
  systemctl list-units --failed --plain --no-legend --no-pager 2>/dev/null | awk '{print "failed=" $1}'
fi
[ -x "$top/bin/switch-to-configuration" ] && echo stc=yes
echo "system=$(cat "$top/system" 2>/dev/null)"
# switch-to-configuration refuses a new init whose interface differs (only a boot starts it)
[ -r "$top/init-interface-version" ] && echo "init=$(cat "$top/init-interface-version")"
echo "running_init=$(cat /run/current-system/init-interface-version 2>/dev/null)"
u=$top/etc/systemd/system
for f in sshd.service sshd.socket; do [ -e "$u/$f" ] && echo "unit=$f"; done
for w in multi-user.target.wants/sshd.service sockets.target.wants/sshd.socket; do
  [ -e "$u/$w" ] && echo "wanted=$w"
done
for f in kernel initrd kernel-modules; do
  echo "boot:$f=$(readlink -f "$top/$f" 2>/dev/null)"
  echo "booted:$f=$(readlink -f "/run/booted-system/$f" 2>/dev/null)"
done
[ -n "$rel" ] && [ -x "$top/$rel" ] && echo pre_activate=yes
if [ -n "$diff" ]; then
  wait
  sed 's/^/change=/' "$diff"
  rm -f "$diff"
fi
true
"""


def closure_diff_argv(current: str, new: str) -> list[str]:
    features = ["--extra-experimental-features", "nix-command flakes"]
    return ["nix", *features, "store", "diff-closures", current, new]


DIFF_ALLOWANCE_S = 120  # nix store diff-closures of two large systems (the script's `timeout 120`)


@dataclass(frozen=True)
class ClosureFacts:
    """The new system as the host sees it: the one activated (a specialisation of it, when
    one was asked for and it has it)."""

    has_switch_to_configuration: bool
    system: str
    sshd_units: frozenset[str]
    sshd_wanted: frozenset[str]
    reboot_reasons: tuple[str, ...]
    init_interface: str | None = None  # <toplevel>/init-interface-version; None: it has none
    running_init_interface: str = ""  # the running system's ("" when it has none, as ng reads it)
    specialisations: tuple[str, ...] = ()  # the new system's (not the activated one's)
    activates: str = ""  # the specialisation's own toplevel, when one was asked for and found

    @property
    def init_differs(self) -> bool:
        """switch-to-configuration test would refuse it (exit 100): only a boot starts it."""
        return self.init_interface is not None and self.init_interface != self.running_init_interface


@dataclass(frozen=True)
class Inspection:
    closure: ClosureFacts
    health: str | None = None  # systemctl is-system-running --wait; None when not asked
    failed_units: tuple[str, ...] = ()
    pre_activate: bool = False  # the new system has an executable pre-activation check
    changes: tuple[str, ...] = ()  # nix store diff-closures, package by package


async def inspect(
    remote: Remote,
    toplevel: str,
    current: str,
    *,
    pre_activate: str = "",
    preflight_s: float = 0,
    specialisation: str = "",
) -> Inspection:
    """preflight_s: wait that long for the running system to finish starting (0: no health check).
    specialisation: inspect toplevel's specialisation of that name instead, when it has one."""
    wait_s = int(preflight_s)
    done = await run_checked(
        remote,
        [
            "sh",
            "-c",
            _INSPECT_SCRIPT,
            "sh",
            toplevel,
            current,
            pre_activate,
            str(wait_s),
            specialisation,
            *closure_diff_argv(current, toplevel)[:-1],  # the script adds the system it inspects
        ],
        "inspecting the host and the new system",
        timeout=wait_s + DIFF_ALLOWANCE_S + 30,
    )
    return parse_inspection(done.stdout, health_asked=wait_s > 0)


def parse_inspection(text: str, *, health_asked: bool) -> Inspection:
    lines = text.splitlines()
    kv = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("change="))
    reboot = tuple(
        f
        for f in ("kernel", "initrd", "kernel-modules")
        if kv.get(f"booted:{f}") and kv.get(f"boot:{f}") != kv.get(f"booted:{f}")
    )
    closure = ClosureFacts(
        has_switch_to_configuration=kv.get("stc") == "yes",
        system=kv.get("system", "").strip(),
        sshd_units=frozenset(ln[5:] for ln in lines if ln.startswith("unit=")),
        sshd_wanted=frozenset(ln[7:] for ln in lines if ln.startswith("wanted=")),
        reboot_reasons=reboot,
        init_interface=kv.get("init"),
        running_init_interface=kv.get("running_init", ""),
        specialisations=tuple(ln[15:] for ln in lines if ln.startswith("specialisation=")),
        activates=kv.get("activates", ""),
    )
    changes = tuple(c for ln in lines if ln.startswith("change=") and (c := _ANSI.sub("", ln[7:]).strip()))
    return Inspection(
        closure=closure,
        health=(kv.get("health") or "unknown") if health_asked else None,
        failed_units=tuple(ln[7:] for ln in lines if ln.startswith("failed=")),
        pre_activate=kv.get("pre_activate") == "yes",
        changes=changes,
    )


async def run_pre_activate(
    remote: Remote, toplevel: str, relpath: str, *, timeout: float, on_line: LineSink
) -> Completed:
    return await run_checked(
        remote,
        [f"{toplevel}/{relpath}"],
        "the pre-activation check",
        root=True,
        timeout=timeout,
        on_line=on_line,
    )


_WOULD = re.compile(r"^would (.+?) the following (?:changed )?units: (.*)$")


async def dry_activate(remote: Remote, toplevel: str, *, timeout: float) -> dict[str, list[str]]:
    """What activating toplevel would do to units (switch-to-configuration dry-activate):
    action (stop, restart, reload, start, ...) -> unit names. Changes nothing."""
    done = await run_checked(
        remote,
        [f"{toplevel}/bin/switch-to-configuration", "dry-activate"],
        "switch-to-configuration dry-activate",
        root=True,
        timeout=timeout,
    )
    if not done.ok:
        raise DeployError(f"switch-to-configuration dry-activate failed: {done.last_lines(2)}")
    return parse_dry_activate(done.stderr + "\n" + done.stdout)


def parse_dry_activate(text: str) -> dict[str, list[str]]:
    actions: dict[str, list[str]] = {}
    for line in _ANSI.sub("", text).splitlines():
        m = _WOULD.match(line.strip())
        if m:
            names = [u.strip() for u in m.group(2).split(",") if u.strip()]
            actions.setdefault(m.group(1), []).extend(names)
    return actions
