"""How every ssh command, and Nix's copying, reaches a host: one set of options, and the
one runner (Remote.run) through which every command on a host goes.

Regular commands share one ControlMaster per host. The confirmation of a
deploy deliberately does not: it opens a brand-new connection, the proof
that new logins still work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy_flake import process
from deploy_flake.destination import Destination
from deploy_flake.errors import ConnectionLost, DeployError, ProcessTimeout, UsageError
from deploy_flake.models import Elevate
from deploy_flake.process import Completed, Dialogue, LineSink
from deploy_flake.remote.elevate import elevated, password_dialogue

SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=\S.*$")

# After the user's options, so that theirs win (ssh keeps the first value it reads).
DEFAULT_OPTIONS: tuple[str, ...] = (
    "BatchMode=yes",  # never wait for a password or a host-key prompt
    "ConnectTimeout=10",
    "ServerAliveInterval=5",
    "ServerAliveCountMax=4",  # a dead connection is noticed within about 20 s
)
FRESH_CONNECTION: tuple[str, ...] = ("ControlMaster=no", "ControlPath=none")


def check_ssh_option(text: str) -> str:
    if not SSH_OPTION.match(text):
        raise UsageError(f"invalid --ssh-option {text!r}: use KEY=VALUE, like ConnectTimeout=5")
    return text


@dataclass(frozen=True)
class SshSettings:
    """The user's ssh choices, shared by every host of a run."""

    control_dir: Path
    config_file: Path | None = None
    options: tuple[str, ...] = ()
    # --ask-sudo-password: only ever written to the stdin of `sudo -S` once it asked, never shown
    sudo_password: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for opt in self.options:
            check_ssh_option(opt)


@dataclass(frozen=True)
class Remote:
    """One host as ssh sees it."""

    dest: Destination
    settings: SshSettings
    sudo: bool = False  # root's commands are elevated (through `elevate`)
    sudo_with_password: bool = False  # sudo or doas asks this host's user for a password
    elevate: Elevate = Elevate.SUDO
    control_path: Path = field(init=False)

    def __post_init__(self) -> None:
        name = control_name(self.dest, self.settings)
        object.__setattr__(self, "control_path", self.settings.control_dir / name)

    def with_sudo(self, sudo: bool, *, password: bool = False) -> Remote:
        """password: sudo needs one here (and the run has it): commands as root go through
        `sudo -S`, which gets it on stdin when it asks for it (see sudo_dialogue)."""
        return Remote(self.dest, self.settings, sudo, sudo and password, self.elevate)

    # ------------------------------------------------------------ options
    def _options(self, *, first: Sequence[str] = (), multiplex: bool = True) -> list[str]:
        args: list[str] = []
        if self.settings.config_file is not None:
            args += ["-F", str(self.settings.config_file)]
        for opt in (*first, *self.settings.options, *DEFAULT_OPTIONS):
            args += ["-o", opt]
        if multiplex:
            args += ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control_path}"]
        if self.dest.port is not None:
            args += ["-p", str(self.dest.port)]
        if self.dest.user is not None:
            args += ["-l", self.dest.user]
        return args

    # ------------------------------------------------------------ commands
    def command(self, argv: Sequence[str], *, root: bool = False, fresh: bool = False) -> list[str]:
        """ssh argv that runs argv on the host (quoted for the remote shell).

        root: run through `sudo -n` or `doas -n` (elevate) when the login user is not root (never
        prompts), or `sudo -S` where sudo needs the password (see elevate.elevated).
        fresh: a brand-new connection, not the shared ControlMaster.
        """
        remote = list(argv)
        if root and self.sudo:
            remote = elevated(remote, self.elevate, password=self.sudo_with_password)
        opts = self._options(first=FRESH_CONNECTION, multiplex=False) if fresh else self._options()
        return ["ssh", *opts, "-T", "--", self.dest.host, shlex.join(remote)]

    def sudo_dialogue(self, data: bytes | None) -> Dialogue:
        """The stdin of a command built with command(argv, root=True) where sudo or doas may ask
        for the password: see elevate.password_dialogue."""
        password = self.settings.sudo_password
        assert password is not None
        return password_dialogue(self.elevate, password, data)

    def master_command(self, persist_s: int = 120) -> list[str]:
        """Opens the shared connection in the background (ssh -f), detached from our pipes."""
        return [
            "ssh",
            *self._options(
                first=(
                    "ControlMaster=yes",
                    f"ControlPath={self.control_path}",
                    f"ControlPersist={persist_s}",
                ),
                multiplex=False,
            ),
            "-f",
            "-N",
            "--",
            self.dest.host,
        ]

    def check_master_command(self) -> list[str]:
        return ["ssh", "-o", f"ControlPath={self.control_path}", "-O", "check", "--", self.dest.host]

    def exit_master_command(self) -> list[str]:
        return ["ssh", "-o", f"ControlPath={self.control_path}", "-O", "exit", "--", self.dest.host]

    # ------------------------------------------------------------ running
    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        root: bool = False,
        fresh: bool = False,
        stdin: bytes | None = None,
        on_stdout: LineSink | None = None,
        on_stderr: LineSink | None = None,
        what: str = "",
    ) -> Completed:
        """Runs argv on the host and returns what it printed, whatever its exit status.

        The one place that pairs a command with its stdin (the sudo password only where
        sudo asks for it: sudo_dialogue) and reads ssh's own failure: exit status 255 (no connection, or a
        lost one) raises ConnectionLost, saying `what` was being done. A command that runs
        past `timeout` is killed: ProcessTimeout.
        """
        asks = root and self.sudo_with_password
        done = await process.run(
            self.command(argv, root=root, fresh=fresh),
            stdin=None if asks else stdin,
            dialogue=self.sudo_dialogue(stdin) if asks else None,
            timeout=timeout,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )
        if done.returncode == 255:
            raise ConnectionLost(self.dest.host, done, what)
        return done

    async def run_nix(
        self, argv: Sequence[str], *, timeout: float, on_stderr: LineSink | None = None
    ) -> Completed:
        """A local Nix command that reaches this host itself (a copy to or from its store),
        with the same ssh options (NIX_SSHOPTS)."""
        return await process.run(
            argv, env={"NIX_SSHOPTS": self.nix_sshopts()}, timeout=timeout, on_stderr=on_stderr
        )

    async def connect(self, timeout: float) -> bool:
        """Opens the shared connection, unless it is open; fails here, early, when the host is
        unreachable. True when a live master was there already (reused): what it reaches is
        for the caller to prove (a reused master is not known to be this host's). A dead
        master's socket is removed first: with it in place, a new `ssh -f -N` would disable
        multiplexing and linger as a connection of its own."""
        if self.control_path.exists():
            check = await process.run(self.check_master_command(), timeout=10)
            if check.ok:
                return True
            self.control_path.unlink(missing_ok=True)
        try:
            done = await process.run_detached(self.master_command(), timeout=timeout)
        except ProcessTimeout:
            raise DeployError(
                f"cannot reach {self.dest.host}: no SSH connection within {timeout:.0f}s"
            ) from None
        if not done.ok:
            raise DeployError(f"cannot reach {self.dest.host} over SSH: {done.last_error()}")
        return False

    async def disconnect(self) -> None:
        """Closes the shared connection."""
        await process.run(self.exit_master_command(), timeout=10)

    # ------------------------------------------------------------ nix
    def nix_sshopts(self) -> str:
        """NIX_SSHOPTS carrying the same options: Nix splits it on white space."""
        opts = self._options()
        for opt in opts:
            if any(c.isspace() for c in opt):
                raise UsageError(
                    f"the ssh option {opt!r} contains white space, which Nix cannot pass on to ssh: "
                    "put it in an ssh config file and use --ssh-config"
                )
        return " ".join(opts)

    def nix_store_uri(self) -> str:
        """ssh-ng://[user@]host. The port travels in NIX_SSHOPTS (old Nix has no port in the URI).
        IPv6 goes in brackets: Nix 2.4+ strips them, and Nix 2.31+ needs them."""
        user = f"{self.dest.user}@" if self.dest.user else ""
        host = f"[{self.dest.host}]" if self.dest.is_ipv6 else self.dest.host
        return f"ssh-ng://{user}{host}"


def control_name(dest: Destination, settings: SshSettings) -> str:
    """The shared connection's socket name: a hash of everything that decides where ssh goes
    (user, host, port, the config file and every option, the host's own among them), so that
    two destinations never share a master. A name made of the destination's text did: `a_b@c`
    and `a@b_c` mapped to one name, and so did two long names cut to 60 characters. The whole
    SHA-256 in base32 is 52 characters: the path stays within the socket path limit (108
    bytes, less the 17 that ssh appends while it binds) under a temporary directory."""
    where = json.dumps(
        [
            dest.user,
            dest.host,
            dest.port,
            None if settings.config_file is None else str(settings.config_file),
            list(settings.options),
        ]
    )
    digest = hashlib.sha256(where.encode()).digest()
    return "cm-" + base64.b32encode(digest).decode().rstrip("=").lower()


def config_command(dest: Destination, *, config_file: Path | None, options: Sequence[str]) -> list[str]:
    """`ssh -G` argv: prints the configuration ssh would use for dest (host name, port, user,
    proxy), with the same -F, -o, -p and -l as every other command. It connects nowhere."""
    # No multiplexing options, so the control directory is never used.
    settings = SshSettings(control_dir=Path("/nonexistent"), config_file=config_file, options=tuple(options))
    return ["ssh", "-G", "-T", *Remote(dest, settings)._options(multiplex=False), "--", dest.host]
