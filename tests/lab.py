"""The lab seen from the tests: hosts to reset, inspect and break, and the deployer to run."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB_CMD = REPO / "lab" / "lab"
FIXTURE_FLAKE = REPO / "lab" / "fixture-flake"
LAB_DIR = Path(os.environ.get("DEPLOY_FLAKE_LAB", "/var/tmp/deploy-flake-lab"))
# This process's pool of nspawn hosts (LAB_POOL, lab/lib/common.sh): each test worker has
# its own alpha..delta. Images, keys and VMs are the lab's.
LAB_POOL = os.environ.get("LAB_POOL", "")
POOL_DIR = LAB_DIR / "pools" / LAB_POOL if LAB_POOL else LAB_DIR
HOSTS_DIR = POOL_DIR / "hosts"
SSH_CONFIG = POOL_DIR / "ssh_config"
KNOWN_HOSTS = POOL_DIR / "known_hosts"
VM_SSH_CONFIG = LAB_DIR / "vm_ssh_config"
CLIENT_KEY = LAB_DIR / "keys" / "id_ed25519"


def lab(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(LAB_CMD), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:  # what the lab said, not only that it failed
        raise AssertionError(f"lab {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
    return done


@dataclass
class Deploy:
    """A finished deploy-flake run."""

    returncode: int
    output: str
    report: dict[str, object]

    @property
    def hosts(self) -> list[dict[str, object]]:
        hosts = self.report.get("hosts", [])
        assert isinstance(hosts, list)
        return [dict(h) for h in hosts]

    def host(self, destination: str) -> dict[str, object]:
        for h in self.hosts:
            if h["destination"] == destination:
                return dict(h)
        raise AssertionError(f"{destination} not in report: {self.report}")


def notes(result: dict[str, object]) -> list[str]:
    """The notes of a host's result in the report."""
    found = result.get("notes", [])
    assert isinstance(found, list)
    return [str(n) for n in found]


class Host:
    """A lab host as a test sees it: every look goes through a fresh SSH connection."""

    def __init__(self, name: str, ssh_config: Path = SSH_CONFIG) -> None:
        self.name = name
        self.ssh_config = ssh_config

    def ssh(
        self,
        command: str,
        *,
        user: str = "root",
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "ssh",
            "-F",
            str(self.ssh_config),
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            "ConnectTimeout=5",
            "-l",
            user,
            self.name,
            command,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: {command!r} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def out(self, command: str) -> str:
        return self.ssh(command).stdout.strip()

    def reachable(self) -> bool:
        return self.ssh("true", check=False, timeout=20).returncode == 0

    def current_system(self) -> str:
        return self.out("readlink -f /run/current-system")

    def boot_default(self) -> str:
        """The system of loader.conf's default entry (systemd-boot's layout, as NixOS writes it)."""
        return self.out(BOOT_DEFAULT)

    def profile(self) -> str:
        return self.out("readlink -f /nix/var/nix/profiles/system")

    def generations(self) -> int:
        return int(self.out("ls -d /nix/var/nix/profiles/system-*-link | wc -l"))

    def system_state(self) -> str:
        return self.ssh("systemctl is-system-running --wait", check=False, timeout=90).stdout.strip()

    def failed_units(self) -> list[str]:
        return self.out("systemctl list-units --failed --plain --no-legend | awk '{print $1}'").split()

    def deploy_units(self) -> list[str]:
        """deploy-flake transaction units still loaded (there should be none after a deploy)."""
        return self.out(
            "systemctl list-units --all --plain --no-legend 'deploy-flake-*' | awk '{print $1}'"
        ).split()

    def lock_free(self) -> bool:
        return (
            self.ssh(
                "flock -n /run/deploy-flake/lock true || ! test -e /run/deploy-flake/lock", check=False
            ).returncode
            == 0
        )

    def console(self, command: str) -> str:
        """A shell command inside the host without ssh (as on its console: works when a lockout
        stopped sshd); its output."""
        return lab("console", self.name, "--", "sh", "-c", command, timeout=60).stdout

    def wrap_tool(self, tool: str, body: str) -> None:
        """TOOL becomes a sh script running BODY ("$REAL": the real tool), for every fixture
        system of the host: the file is replaced in the package that every system's sw/bin
        links to (the store is writable by root in the lab; a reset undoes it)."""
        self.ssh(
            f'f=$(readlink -f /run/current-system/sw/bin/{tool}) && d=${{f%/*}} && chmod u+w "$d"'
            f' && mv "$f" "$d/.{tool}-real"'
            f' && printf "#!/bin/sh\\nREAL=%s\\n%s\\n" "$d/.{tool}-real" {shlex.quote(body)} > "$f"'
            ' && chmod 555 "$f" && chmod u-w "$d"'
        )

    def inject_fault(self, verb: str, system: str, count: int) -> None:
        """The fixture's switch-to-configuration VERB of SYSTEM fails COUNT more times."""
        self.ssh(f"mkdir -p /run/fixture-faults && echo '{system} {count}' > /run/fixture-faults/{verb}")

    def kill_transactions(self) -> None:
        """SIGKILL every process of the deploy's transaction unit (an OOM kill, an admin)."""
        self.ssh("systemctl kill --signal=SIGKILL 'deploy-flake-*.service'")

    def transaction_states(self) -> dict[str, str]:
        """deploy id -> the agent's recorded state, for every transaction on the host."""
        out = self.out(
            "for d in /run/deploy-flake/*/; do [ -f $d/state ] && echo ${d%/} $(cat $d/state); done; true"
        )
        return {
            line.split()[0].rsplit("/", 1)[1]: line.split()[1] for line in out.splitlines() if line.strip()
        }

    def assert_clean_after(self, *, running: str, boot: str) -> None:
        """The state every deploy must end in, whatever happened."""
        assert self.reachable(), f"{self.name} does not accept a new SSH login"
        assert self.current_system() == running
        assert self.boot_default() == boot
        assert self.system_state() == "running", self.failed_units()
        assert wait_for(lambda: not self.deploy_units(), 15), self.deploy_units()
        assert self.lock_free(), "the deploy lock is still held"
        assert self.out("ls -d /tmp/deploy-flake-* 2>/dev/null || true") == "", "a build result link was left"
        assert self.gc_roots() == [], "a GC root of the new system was left"

    def gc_roots(self) -> list[str]:
        """The GC roots deploy-flake made for systems it built or copied (root's, under /run)."""
        return self.out("ls -A /run/deploy-flake/gcroots 2>/dev/null || true").split()


def wait_for(predicate: object, timeout: float, interval: float = 0.5) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


COMMANDS = ("deploy", "status", "plan", "rollback", "gc")
# The lab's logins (lab/lib/image.sh, the fixture's sudoers): root; deploy, in wheel, whose
# sudo needs no password; SUDO_USER, whose sudo asks for SUDO_PASSWORD.
SUDO_USER = "sudopw"
SUDO_PASSWORD = "Pw-7f3a9c-never-shown"
# A confirmation window short enough for a test to wait out (the tests say "within 6s").
CONFIRM = "--confirm-timeout=6s"
# What a host answers anew after each boot.
BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# the toplevel of an entry: its options' init= minus /init (systemd-boot-builder.py's line)
ENTRY_SYSTEM = r"sed -n 's/^options .*init=\([^ ]*\)\/init.*/\1/p' /boot/loader/entries/"
BOOT_DEFAULT = "e=$(sed -n 's/^default[[:space:]]*//p' /boot/loader/loader.conf) && " + ENTRY_SYSTEM + '"$e"'


# deploy-flake run by this machine's Python and Nix; a deployer root's is another argv
# (tests.conftest's modern_deployer).
LOCAL_DEPLOYER = (sys.executable, "-m", "deploy_flake")


def deploy_argv(
    *args: str,
    ssh_config: Path | None = SSH_CONFIG,
    flake: Path = FIXTURE_FLAKE,
    deployer: Sequence[str] = LOCAL_DEPLOYER,
) -> list[str]:
    """deploy-flake's argv with the lab's flake and ssh config (after the subcommand, if any)."""
    command = [args[0]] if args and args[0] in COMMANDS else []
    args = args[len(command) :]
    argv = [*deployer, *command, "--flake", str(flake)]
    if ssh_config is not None:
        argv += ["--ssh-config", str(ssh_config)]
    return argv + list(args)


def deploy(
    *args: str,
    ssh_config: Path | None = SSH_CONFIG,
    flake: Path = FIXTURE_FLAKE,
    report: Path | None = None,
    timeout: float = 600,
    deployer: Sequence[str] = LOCAL_DEPLOYER,
    input: str | None = None,
    sudo_password: str | None = None,
) -> Deploy:
    """Runs deploy-flake as a user would (input: its stdin, e.g. --ask's answers), and reads
    its --report. sudo_password: given on a pipe (--sudo-password-fd), as for SUDO_USER."""
    report_path = report or Path(f"/tmp/deploy-flake-test-report-{os.getpid()}-{time.monotonic_ns()}.json")
    cmd = args[:1] if args and args[0] in COMMANDS else ()
    fds: tuple[int, ...] = ()
    password_args: tuple[str, ...] = ()
    if sudo_password is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, sudo_password.encode() + b"\n")
        os.close(write_end)
        fds, password_args = (read_end,), ("--sudo-password-fd", str(read_end))
    argv = deploy_argv(
        *cmd,
        "--report",
        str(report_path),
        *password_args,
        *args[len(cmd) :],
        ssh_config=ssh_config,
        flake=flake,
        deployer=deployer,
    )
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, input=input, pass_fds=fds
        )
    finally:
        for fd in fds:
            os.close(fd)
    data: dict[str, object] = {}
    if report_path.exists():
        data = json.loads(report_path.read_text())
        report_path.unlink()
    return Deploy(done.returncode, done.stdout + done.stderr, data)


def run_cli(
    *args: str,
    timeout: float = 300,
    input: str | None = None,
    ssh_config: Path | None = SSH_CONFIG,
    deployer: Sequence[str] = LOCAL_DEPLOYER,
) -> subprocess.CompletedProcess[str]:
    """deploy-flake as a user runs it (any subcommand), with the lab's flake and ssh config."""
    return subprocess.run(
        deploy_argv(*args, ssh_config=ssh_config, deployer=deployer),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
    )


def system_of(result: dict[str, object]) -> str:
    """The system a host's result in the report names."""
    system = result["system"]
    assert isinstance(system, str)
    return system


def clean_deploy_works(host: Host, dest: str) -> None:
    """A deploy to DEST succeeds, and leaves HOST clean on the new system."""
    r = deploy(dest)
    assert r.returncode == 0, r.output
    system = system_of(r.host(dest))
    host.assert_clean_after(running=system, boot=system)


class Background:
    """deploy-flake running in the background, to interrupt it at a chosen moment."""

    def __init__(self, *args: str, ssh_config: Path | None = SSH_CONFIG) -> None:
        self.report_path = Path(f"/tmp/deploy-flake-test-report-{os.getpid()}-{time.monotonic_ns()}.json")
        self.log_path = Path(f"/tmp/deploy-flake-test-log-{os.getpid()}-{time.monotonic_ns()}.txt")
        self.log = self.log_path.open("w")
        argv = deploy_argv("--report", str(self.report_path), *args, ssh_config=ssh_config)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_output(self, text: str, timeout: float = 60) -> None:
        if not wait_for(lambda: text in self.output() or self.proc.poll() is not None, timeout, 0.1):
            raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output()}")
        assert text in self.output(), f"exited before {text!r}:\n{self.output()}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 300) -> Deploy:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"deploy-flake still running after {timeout}s:\n{self.output()}") from None
        self.log.close()
        data: dict[str, object] = {}
        if self.report_path.exists():
            data = json.loads(self.report_path.read_text())
            self.report_path.unlink()
        return Deploy(rc, self.output(), data)


def fixture_lib_into(directory: Path) -> None:
    """What a flake of a test's own needs to `import ./lib.nix`: the library and every file it
    reads (its scripts, the lab's client key)."""
    shutil.copy(FIXTURE_FLAKE / "lib.nix", directory / "lib.nix")
    shutil.copy(FIXTURE_FLAKE / "lab-client-key.pub", directory / "lab-client-key.pub")
    shutil.copytree(FIXTURE_FLAKE / "scripts", directory / "scripts")


def fixture_flake_with(
    tmp_path: Path, extra_configs: str = "", *, replace: tuple[str, str] = ("", "")
) -> Path:
    """A copy of the fixture flake with more configurations and one text replaced (a test's
    own: a change to the lab's flake would rebuild the image every pool shares)."""
    flake = tmp_path / "flake"
    shutil.copytree(FIXTURE_FLAKE, flake)
    text = (flake / "flake.nix").read_text()
    anchor = "\n      };\n\n      # the lab hosts as an inventory"
    assert text.count(anchor) == 1
    text = text.replace(anchor, extra_configs + anchor)
    old, new = replace
    if old:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (flake / "flake.nix").write_text(text)
    return flake
