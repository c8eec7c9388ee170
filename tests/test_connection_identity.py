"""One shared SSH connection per place ssh goes, and a reused one proves which host it reaches:
the socket's name, and the flows of a host whose connection was open already (in-process)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from deploy_flake.destination import Destination
from deploy_flake.host.target import HostIdentity, parse_facts
from deploy_flake.models import Outcome
from deploy_flake.remote.ssh import Remote, SshSettings, control_name
from tests.fake_remote import Answer, Reply
from tests.test_flows import BEFORE, instant, run_job, status

__all__ = ["instant"]  # the flow tests' virtual clock, a fixture here too

SETTINGS = SshSettings(control_dir=Path("/tmp/deploy-flake-abcdefgh"))
LONG = "a-rather-long-host-name-that-only-differs-at-its-very-end-from-the-other-one"


def name(dest: str, settings: SshSettings = SETTINGS) -> str:
    return control_name(Destination.parse(dest), settings)


# ---- the socket's name
@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("a_b@c", "a@b_c"),  # the same once every other character was '_'
        (f"{LONG}-alpha.example.org", f"{LONG}-beta.example.org"),  # the same first 60 characters
        (f"nixos://{LONG}:2222/web", f"nixos://{LONG}:2223/web"),  # one long name, two ports
        ("nixos://web:22/web", "nixos://web/web"),  # port 22 by name or by ssh's default: two sockets
        ("root@web", "web"),
    ],
)
def test_two_destinations_never_share_a_socket(one: str, other: str) -> None:
    assert name(one) != name(other)


def test_the_socket_depends_on_the_ssh_options_and_config_file_but_not_on_the_configuration() -> None:
    jump = SshSettings(control_dir=SETTINGS.control_dir, options=("ProxyJump=bastion",))
    other_jump = SshSettings(control_dir=SETTINGS.control_dir, options=("ProxyJump=other",))
    config = SshSettings(control_dir=SETTINGS.control_dir, config_file=Path("/etc/ssh/fleet"))
    names = {name("web", s) for s in (SETTINGS, jump, other_jump, config)}
    assert len(names) == 4
    # the configuration does not change where ssh goes: one socket (as with sudo)
    assert name("nixos://web/a") == name("nixos://web/b")
    remote = Remote(Destination.parse("web"), SETTINGS)
    assert remote.with_sudo(True).control_path == remote.control_path


def test_the_socket_path_stays_within_the_unix_socket_limit() -> None:
    longest = "x" * 250
    path = Remote(Destination.parse(f"nixos://{'u' * 32}@{longest}:65535/web"), SETTINGS).control_path
    assert path.parent == SETTINGS.control_dir
    assert path.name.startswith("cm-") and len(path.name) == 55
    # ssh binds a temporary name (17 more characters) first; sun_path holds 107
    assert len(str(path)) + 17 <= 107


# ---- the host's identity, read with its facts
def test_the_facts_name_the_machine() -> None:
    facts = parse_facts("uid=0\nhostname=web1\nmachine_id=0123abcd\nmachine=x86_64\n")
    assert facts.identity == HostIdentity("0123abcd", "web1")
    assert str(facts.identity) == "web1 (machine id 0123abcd)"


# ---- a shared connection that was open already (flows)
def identity(machine_id: str, hostname: str) -> Reply:
    return Reply(f"machine_id={machine_id}\nhostname={hostname}\n")


def test_a_connection_open_before_the_first_contact_that_reaches_another_machine_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            ("connect", Reply("reused")),
            ("identity", identity("m-db", "db")),  # over the shared connection
            ("identity", identity("m-web", "web")),  # over a new login: where web really is
        ],
    )
    assert result.outcome is Outcome.FAILED, result
    assert "the shared SSH connection for web" in str(result.error)
    assert "reaches db (machine id m-db), not web (machine id m-web)" in str(result.error)
    assert "nothing was run on web over it" in str(result.error)
    # no facts, no copy, no build over it, and the other host's connection is not closed
    assert fake.sent == ["connect", "identity", "identity"]


def test_a_connection_open_before_the_first_contact_that_reaches_the_host_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, _, _ = run_job(
        monkeypatch,
        [
            ("connect", Reply("reused")),
            ("identity", identity("m-web", "web")),
            ("identity", identity("m-web", "web")),
            *BEFORE[1:],
            ("agent start", status("checking")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED, result


def test_a_reconnection_that_reaches_another_machine_stops_talking_to_it(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    """Mid-transaction, the connection found open reaches another machine than the first
    contact: nothing more is sent over it, and the host's own transaction decides."""

    def gone(argv: Sequence[str], stdin: bytes | None) -> Reply:
        return Reply(stderr="Connection reset", lost=True)

    table: list[tuple[str, Answer]] = [
        *BEFORE,  # the facts say: hostname web, no machine id
        ("agent start", status("activating")),
        ("agent watch", gone),
        ("connect", Reply("reused")),
        ("identity", identity("m-db", "db")),
    ]
    result, fake, _ = run_job(monkeypatch, table)
    assert result.outcome is Outcome.UNKNOWN, result
    error = str(result.error)
    assert "reaches db (machine id m-db), not web (machine id unknown)" in error, error
    assert "Without a confirmation the host returns to its previous system by itself" in error
    assert fake.sent[-2:] == ["connect", "identity"]  # not closed: it is another host's


def test_a_reconnection_that_reaches_the_host_goes_on(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    def gone(argv: Sequence[str], stdin: bytes | None) -> Reply:
        return Reply(stderr="Connection reset", lost=True)

    result, _, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("activating")),
            ("agent watch", gone),
            ("connect", Reply("reused")),
            ("identity", identity("", "web")),
            ("agent watch", status("checking")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED, result
