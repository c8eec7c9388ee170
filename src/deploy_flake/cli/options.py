"""The command line's options: click decorators, grouped as the commands share them.

Each group is one decorator; a command stacks the groups it takes, and the order of the
stack is the order of `--help`. A group hands its options to the command as one typed value
(command_options.CommonOptions, ...) under one keyword (common, build, ...); see
cli.params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from deploy_flake import __version__
from deploy_flake.cli import params
from deploy_flake.models import SANITY_CHECKS, Elevate, RebootPolicy, RollbackFailurePolicy

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def _timeout(name: str, default: str, help: str) -> Any:
    """A stage's time limit: whole seconds, at least 1 (help ends with that)."""
    return click.option(
        name, callback=params.timeout, default=default, show_default=True, metavar="DURATION", help=help
    )


def _settle(name: str, default: str, help: str) -> Any:
    """A wait: whole seconds, 0 for none."""
    return click.option(
        name, callback=params.settle, default=default, show_default=True, metavar="DURATION", help=help
    )


EPILOG = """\b
Exit codes:
  0  every host is running its new configuration (confirmed, boot entry written)
  1  a host failed before anything was changed on it
  2  bad usage or input; nothing was done on any host
  3  a host was rolled back to its previous configuration
  4  a host's state is unknown (see the message for what to check)
  130 interrupted twice: stopped at once (the report says what is known)
The worst outcome among the hosts decides.
"""


# every command's: `common`
COMMON = params.collected(
    "common",
    params.common_options,
    click.option(
        "--flake",
        "flake_dir",
        default=".",
        show_default=True,
        type=click.Path(path_type=Path),
        help="The flake's directory.",
    ),
    click.option(
        "--instrumentation",
        type=click.Choice(["tui", "json"]),
        default="tui",
        show_default=True,
        help="tui: live view on a terminal, plain lines otherwise. json: one JSON event per line.",
    ),
    click.option(
        "--jobs",
        "-j",
        type=click.IntRange(min=1),
        help="Hosts deployed at once.  [default: all, as far as the open-file limit allows]",
    ),
    click.option(
        "--ssh-config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="ssh config file for every ssh call (ssh -F), Nix's copying included.",
    ),
    click.option(
        "--ssh-option",
        "-o",
        "ssh_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="ssh option for every ssh call, Nix's copying included (repeatable).",
    ),
    click.option(
        "--sudo/--no-sudo",
        default=None,
        help="Run system commands through sudo (sudo -n; sudo -S where it needs the password "
        "given with --ask-sudo-password), or doas (--elevate).  [default: when the login user is not root]",
    ),
    click.option(
        "--elevate",
        type=click.Choice([e.value for e in Elevate]),
        callback=params.elevation,
        default=Elevate.SUDO.value,
        show_default=True,
        help="How system commands get root where the login user is not root: sudo (sudo-rs too) "
        "or doas (doas -n; where it needs the password given with --ask-sudo-password, doas in a "
        "terminal of its own on the host).",
    ),
    click.option(
        "--report",
        "report_path",
        type=click.Path(path_type=Path),
        help="Write a JSON report of every host to this file.",
    ),
    click.option(
        "--log-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where each run keeps every host's whole output, a directory per run.  "
        "[default: $XDG_STATE_HOME/deploy-flake/runs]",
    ),
    also=("destinations", "selectors"),
)

# root's password where sudo (doas) asks for it: the activation's and gc's
ASK_SUDO_PASSWORD = click.option(
    "--ask-sudo-password",
    is_flag=True,
    help="Ask once, on the terminal, for the password of sudo (or doas, --elevate) on hosts "
    "where it needs one; it reaches them only on sudo's stdin (doas's terminal).",
)
SUDO_PASSWORD_FD = click.option(
    "--sudo-password-fd",
    type=click.IntRange(min=0),
    metavar="FD",
    help="Read the sudo password from this open file descriptor (its first line), for automation.",
)

# deploy's, plan's and rollback's: `activation`
ACTIVATION = params.collected(
    "activation",
    params.activation_options,
    ASK_SUDO_PASSWORD,
    SUDO_PASSWORD_FD,
    click.option(
        "--preflight-check",
        "preflight",
        type=click.Choice(["run", "skip"]),
        callback=params.run_or_skip,
        default="run",
        show_default=True,
        help="Refuse hosts whose running system is not healthy (systemctl is-system-running).",
    ),
    click.option(
        "--pre-activate-script",
        callback=params.relative_path,
        metavar="RELATIVE_PATH",
        help="Program in the new system to run before activating it; non-zero stops the deploy. "
        "[default: pre-activate-safety-checks, when present]",
    ),
    _timeout(
        "--preflight-timeout",
        "5m",
        "How long the health check waits for a starting system; whole seconds, at least 1s.",
    ),
    _timeout(
        "--activation-timeout",
        "5m",
        "Longest switch-to-configuration test; longer is stopped and rolled back. "
        "Whole seconds, at least 1s.",
    ),
    _timeout(
        "--health-timeout",
        "60s",
        "Time for the system to finish starting after activating (is-system-running --wait); "
        "whole seconds, at least 1s.",
    ),
    _settle(
        "--settle-time",
        "5s",
        "How long the system must stay healthy after activating, before it is confirmed; "
        "whole seconds, 0 for none.",
    ),
    _timeout(
        "--confirm-timeout",
        "30s",
        "Time to confirm over a new SSH connection before the host rolls back by itself; "
        "whole seconds, at least 1s.",
    ),
    _timeout(
        "--boot-timeout",
        "5m",
        "Longest switch-to-configuration boot; whole seconds, at least 1s.",
    ),
    click.option(
        "--skip-check",
        "skip_checks",
        multiple=True,
        type=click.Choice(SANITY_CHECKS),
        help="Skip a sanity check of the new system (repeatable).",
    ),
    click.option(
        "--specialisation",
        callback=params.specialisation,
        metavar="NAME",
        help="Activate the new system's specialisation NAME ('' for the system itself); the boot entry "
        "is the system itself.  [default: the specialisation the host runs, if it runs one]",
    ),
    click.option(
        "--install-bootloader",
        is_flag=True,
        help="Install the boot loader again when writing the boot entry (NIXOS_INSTALL_BOOTLOADER=1), "
        "for hosts changing boot loader.",
    ),
)

# deploy's and plan's: `build`
BUILD = params.collected(
    "build",
    params.build_options,
    click.option(
        "--test",
        "test",
        type=click.Choice(["run", "skip"]),
        callback=params.run_or_skip,
        default="run",
        show_default=True,
        help="run: activate with switch-to-configuration test and confirm before writing the boot "
        "entry. skip: only add the profile generation and boot entry (applies at next boot).",
    ),
    click.option(
        "--build-on",
        default="target",
        show_default=True,
        metavar="target|local|HOST",
        help="Where systems are built. target: each host builds its own. local: this machine, "
        "HOST: one builder host ([user@]host); both build each configuration once and copy its "
        "closure to the hosts (nix copy; the login user must be trusted there).",
    ),
    click.option("--build-cmdline", metavar="ARGS", help="Extra arguments for nix build."),
    _timeout(
        "--copy-timeout",
        "10m",
        "Time for one attempt at copying the flake (3 attempts); whole seconds, at least 1s.",
    ),
    _timeout(
        "--build-timeout",
        "1h",
        "Longest build on the host; whole seconds, at least 1s.",
    ),
)


# deploy's and rollback's: `reboot`
REBOOT = params.collected(
    "reboot",
    params.reboot_options,
    click.option(
        "--reboot",
        type=click.Choice([str(p) for p in RebootPolicy]),
        callback=lambda ctx, param, value: RebootPolicy(value),
        default=str(RebootPolicy.NEVER),
        show_default=True,
        help="Reboot each host into its new system: if-needed when the new kernel, initrd or "
        "kernel modules need it (or with --test=skip), always, or never (a note says when one is "
        "needed). Verified: the new system is booted once (systemd-boot's one-shot entry) and "
        "made the default only when it came back healthy and a new login confirmed it; otherwise "
        "the host boots its old default again by itself.",
    ),
    click.option(
        "--reboot-unverified",
        is_flag=True,
        help="With --reboot on a host whose boot loader has no one-shot entry (GRUB, none): "
        "make the new system the default first, then reboot into it (a new system that does "
        "not boot leaves the host down until someone resets it).",
    ),
    _timeout(
        "--reboot-timeout",
        "10m",
        "Time for a rebooted host to come back, booted and healthy; whole seconds, at least 1s.",
    ),
    click.option(
        "--on-rollback-failure",
        type=click.Choice([str(p) for p in RollbackFailurePolicy]),
        callback=lambda ctx, param, value: RollbackFailurePolicy(value),
        default=str(RollbackFailurePolicy.REPORT),
        show_default=True,
        help="When re-activating the previous system failed twice: report (the host stays as it "
        "is, its state unknown), or reboot it into its boot entry, which still names the previous "
        "system, within --reboot-timeout, and report what it came back on.",
    ),
)


# every command's
DESTINATIONS = click.argument("destinations", nargs=-1, metavar="DESTINATION...")
ON = click.option(
    "--on",
    "selectors",
    multiple=True,
    metavar="SELECTOR",
    help="Hosts from the flake's inventory (deployFlake.hosts): a name, a glob, or @TAG "
    "(repeatable, union; --on '*' for all).",
)


VERSION = click.version_option(__version__, prog_name="deploy-flake")

# what deploy and plan both take, in this order: the hosts, and how each is built and activated
HOSTS_BUILT_AND_ACTIVATED = params.group(DESTINATIONS, ON, COMMON, BUILD, ACTIVATION)

# deploy's own
DRY_ACTIVATE = click.option(
    "--dry-activate",
    is_flag=True,
    help="Build and show what would change, like `deploy-flake plan`; change nothing.",
)
# deploy's: `rollout`
ROLLOUT = params.collected(
    "rollout",
    params.rollout_options,
    click.option(
        "--ask",
        is_flag=True,
        help="Show the hosts' plans, then ask (a line on stdin) before activating any: once, or "
        "with --canary once for the canaries and once for the others. Not with --dry-activate.",
    ),
    click.option(
        "--canary",
        type=click.IntRange(min=1),
        metavar="N",
        help="Deploy the first N hosts (in the order given) first; the rest only if all of them were "
        "activated.",
    ),
    click.option(
        "--max-failures",
        type=click.IntRange(min=1),
        metavar="K",
        help="Start no new host once K hosts did not end activated (the rest are skipped; with "
        "--ask, also those not yet activating).",
    ),
    click.option(
        "--all-or-nothing",
        is_flag=True,
        help="If any host is not activated, roll back the hosts this run activated "
        "(through the rollback transaction), so the fleet stays on one version.",
    ),
)

# rollback's own
TO = click.option(
    "--to",
    "rollback_to",
    type=click.IntRange(min=1),
    metavar="GENERATION",
    help="The system profile's generation to return to.  [default: the one before the current]",
)

# gc's own: `gc`
GC = params.collected(
    "gc",
    params.gc_options,
    click.option(
        "--keep",
        type=click.IntRange(min=1),
        metavar="N",
        help="Keep the newest N generations of the system profile (the current one counts).",
    ),
    click.option(
        "--older-than",
        callback=params.positive_duration,
        metavar="DURATION",
        help="Remove only generations older than this (like 30d or 12h).",
    ),
    click.option(
        "--collect-garbage",
        is_flag=True,
        help="Then collect the store's garbage (nix-store --gc) and say what it freed.",
    ),
    click.option("--dry-run", is_flag=True, help="Only list what would be removed; change nothing."),
    ASK_SUDO_PASSWORD,
    SUDO_PASSWORD_FD,
)

# status's own
JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
