"""The ssh command lines deploy-flake runs, and the same options handed to Nix's ssh-ng.

Every argument quoted, the user's options before the defaults, a fresh connection never
multiplexed, IPv6 in brackets in a store URI, and options Nix cannot carry refused; the
sudo password written only where sudo asks for it."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from deploy_flake import process
from deploy_flake.destination import Destination
from deploy_flake.errors import DeployError, UsageError
from deploy_flake.host import elevation
from deploy_flake.remote.elevate import SUDO_PROMPT, SUDO_STARTED
from deploy_flake.remote.ssh import Remote, SshSettings
from tests.fake_remote import FakeHost, FakeRemote, Reply


def _remote(arg: str, **kw: object) -> Remote:
    settings = SshSettings(
        control_dir=Path("/tmp/cm"), config_file=Path("/etc/lab.cfg"), options=("IdentityFile=/k",)
    )
    return Remote(Destination.parse(arg), settings, **kw)  # type: ignore[arg-type]


def test_ssh_command_quotes_every_argument() -> None:
    argv = _remote("nixos://deploy@[::1]:2222/web", sudo=True).command(["echo", "a b", "$(x)"], root=True)
    assert argv[:3] == ["ssh", "-F", "/etc/lab.cfg"]
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "deploy"
    assert argv[-2] == "::1"
    assert shlex.split(argv[-1]) == ["sudo", "-n", "--", "echo", "a b", "$(x)"]
    # the user's options come before the defaults, so they win
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert opts.index("IdentityFile=/k") < opts.index("BatchMode=yes")
    assert "ControlMaster=no" in opts and any(o.startswith("ControlPath=/tmp/cm/") for o in opts)


def test_fresh_connection_never_multiplexes() -> None:
    argv = _remote("web1").command(["true"], fresh=True)
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert opts[:2] == ["ControlMaster=no", "ControlPath=none"]
    assert not any(o.startswith("ControlPath=/tmp") for o in opts)


def test_nix_gets_the_same_ssh_options() -> None:
    r = _remote("nixos://deploy@web1:2222/x")
    assert r.nix_store_uri() == "ssh-ng://deploy@web1"
    sshopts = r.nix_sshopts().split()
    assert sshopts == r.command(["x"])[1:-4]  # everything but "-T -- host cmd"


def test_nix_store_uri_brackets_ipv6() -> None:
    assert _remote("nixos://root@[::1]:2222/x").nix_store_uri() == "ssh-ng://root@[::1]"
    assert _remote("[2001:db8::5]").nix_store_uri() == "ssh-ng://[2001:db8::5]"


def test_nix_sshopts_refuse_white_space() -> None:
    settings = SshSettings(control_dir=Path("/tmp/cm"), options=("ProxyCommand=nc %h 22",))
    with pytest.raises(UsageError):
        Remote(Destination.parse("web1"), settings).nix_sshopts()


def test_a_command_through_sudo_with_a_password_waits_for_sudo() -> None:
    argv = _remote("deploy@web1", sudo=True, sudo_with_password=True).command(["cat", "a b"], root=True)
    words = shlex.split(argv[-1])
    assert words[:6] == ["sudo", "-S", "-k", "-p", f"{SUDO_PROMPT}\n", "--"]
    # the command is started by a shell that first says so, as root
    assert words[6:8] == ["/bin/sh", "-c"] and SUDO_STARTED in words[8]
    assert words[9:] == ["sh", "cat", "a b"]


# Plays `sudo -S -p PROMPT -- /bin/sh -c 'echo STARTED >&2 && exec "$@"' sh cat`: $1 says
# whether sudo asks for the password (a rule without NOPASSWD) or not (NOPASSWD for it).
_FAKE_SUDO = f"""
if [ "$1" = ask ]; then
  tries=0
  while :; do
    echo '{SUDO_PROMPT}' >&2
    IFS= read -r pw || {{ echo 'sudo: no password was provided' >&2; exit 1; }}
    [ "$pw" = secret ] && break
    tries=$((tries + 1)); echo 'Sorry, try again.' >&2
    [ "$tries" -lt 3 ] || exit 1
  done
fi
echo '{SUDO_STARTED}' >&2
echo 'the command runs' >&2
exec cat
"""


def _through_fake_sudo(asks: str, password: bytes, data: bytes | None) -> process.Completed:
    settings = SshSettings(control_dir=Path("/tmp/cm"), sudo_password=password)
    remote = Remote(Destination.parse("web1"), settings, sudo=True, sudo_with_password=True)
    shown: list[str] = []
    done = asyncio.run(
        process.run(
            ["sh", "-c", _FAKE_SUDO, "sh", asks],
            dialogue=remote.sudo_dialogue(data),
            timeout=20,
            on_stderr=shown.append,
        )
    )
    assert "\n".join(shown) + "\n" == done.stderr
    assert SUDO_PROMPT not in done.stderr and SUDO_STARTED not in done.stderr
    return done


def test_the_sudo_password_goes_only_to_sudo_when_it_asks() -> None:
    done = _through_fake_sudo("ask", b"secret", b"the agent script\n")
    assert done.ok and done.stdout == "the agent script\n"
    assert done.stderr == "the command runs\n"
    # nothing to send but the password
    done = _through_fake_sudo("ask", b"secret", None)
    assert done.ok and done.stdout == ""


def test_the_sudo_password_is_never_written_where_sudo_does_not_ask() -> None:
    done = _through_fake_sudo("no", b"secret", b"the agent script\n")
    assert done.ok and done.stdout == "the agent script\n", "the password reached the command"
    done = _through_fake_sudo("no", b"secret", None)
    assert done.ok and done.stdout == ""


def test_a_wrong_sudo_password_is_given_once_and_never_hangs() -> None:
    done = _through_fake_sudo("ask", b"wrong", b"the agent script\n")
    assert done.returncode == 1
    assert done.stderr == "Sorry, try again.\nsudo: no password was provided\n"
    assert done.stdout == ""


def test_a_sudo_that_asks_with_a_prompt_of_its_own_is_named_not_waited_on_forever() -> None:
    """PAM's own prompt (not 'Password:') is not replaced by -p: no password is sent, the
    check runs out of time and says why."""
    fake = FakeHost(
        [("true", Reply(returncode=1, stderr="sudo: a password is required")), ("true", Reply(hangs=True))]
    )
    settings = SshSettings(control_dir=Path("/tmp/cm"), sudo_password=b"secret")
    remote = FakeRemote(Destination.parse("deploy@web1"), settings, host=fake)
    with pytest.raises(DeployError, match="replaces only PAM's usual 'Password:' prompt"):
        asyncio.run(elevation.sudo_needs_password(remote))
    assert fake.left == []


def test_sudo_rs_frames_the_prompt_and_still_gets_the_password_once() -> None:
    """sudo-rs shows -p's prompt as `[sudo: PROMPT] Password: `: the password follows the
    prompt, and the end of the frame is not shown."""
    fake = f"""
printf '[sudo: {SUDO_PROMPT}\\n] Password: ' >&2
IFS= read -r pw || exit 1
printf '\\n' >&2
[ "$pw" = secret ] || {{ echo 'sudo: Authentication failed' >&2; exit 1; }}
echo '{SUDO_STARTED}' >&2
exec cat
"""
    settings = SshSettings(control_dir=Path("/tmp/cm"), sudo_password=b"secret")
    remote = Remote(Destination.parse("web1"), settings, sudo=True, sudo_with_password=True)
    done = asyncio.run(
        process.run(["sh", "-c", fake], dialogue=remote.sudo_dialogue(b"the agent script\n"), timeout=20)
    )
    assert done.ok and done.stdout == "the agent script\n", done
    assert done.stderr == "", done.stderr
