"""A socket-activated sshd (NixOS's services.openssh.startWhenNeeded) on lab hosts.

sshd.socket (Accept=yes) starts one sshd@.service instance per connection. When the template
changes, switch-to-configuration restarts every running instance (sshd.nix: stopIfChanged =
false), the deployer's own connections among them, in the middle of the activation
(nixops#460). The cut is no verdict: the deploy ends activated (or rolled back for a real
fault only), and the shared connection (ControlMaster) is opened again."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.lab import CONFIRM, Host, clean_deploy_works, deploy, fixture_flake_with, system_of

SOCKET = "nixos://alpha/sshd-socket"
SOCKET_V2 = "nixos://alpha/sshd-socket-v2"
RESTARTED = "restarting the following units: sshd@"
CUT = "was cut while it was activating"

# sshd by socket, with the -v2 template, and a unit that fails to start: a real fault
EXTRA_CONFIGS = r"""
        sshd-socket-fail = mkSystem {
          hostName = "sshd-socket";
          version = "3";
          sshdSocket = 2;
          extraUnits = [ units.failing ];
        };
"""


def _flake(tmp_path: Path) -> Path:
    return fixture_flake_with(tmp_path, EXTRA_CONFIGS)


def _on_socket(alpha: Host) -> str:
    """alpha runs sshd by socket: its system."""
    r = deploy(SOCKET)
    assert r.returncode == 0, r.output
    system = system_of(r.host(SOCKET))
    alpha.assert_clean_after(running=system, boot=system)
    assert alpha.out("systemctl is-active sshd.socket") == "active"
    return system


_EVENT = re.compile(
    r"^(\d+\.\d+) \S+ systemd\[1\]: "
    r"(?:(Started|Stopped) (sshd@\S+\.service)|(sshd@\S+\.service): Deactivated)"
)


def _connections(alpha: Host, since: float, until: float) -> tuple[int, list[tuple[float, float]]]:
    """From alpha's journal: how many sshd@ instances were stopped (restarted) between since
    and until, and the (start, end) of every instance started after the first such stop."""
    stops: list[float] = []
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for line in alpha.out("journalctl --no-pager -o short-unix _PID=1").splitlines():
        m = _EVENT.match(line)
        if not m or not since <= float(m[1]) <= until + 5:
            continue
        t = float(m[1])
        if m[2] == "Stopped" and t <= until:
            stops.append(t)
        elif m[2] == "Started" and t <= until:
            started.setdefault(m[3], t)
        elif m[4]:
            ended[m[4]] = t
    if not stops:
        return 0, []
    cut = stops[0]
    return len(stops), [(t, ended.get(u, float("inf"))) for u, t in started.items() if t > cut]


def test_restarted_sshd_instances_cut_the_deploy_which_ends_activated(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    _on_socket(alpha)
    since = time.time()  # nspawn hosts share this machine's clock
    r = deploy(SOCKET_V2)
    until = time.time()
    assert r.returncode == 0, r.output
    res = r.host(SOCKET_V2)
    assert res["outcome"] == "activated", res
    assert RESTARTED in r.output and CUT in r.output, r.output
    system = system_of(res)
    alpha.assert_clean_after(running=system, boot=system)
    assert alpha.out("systemctl is-active sshd.socket") == "active"
    # the switch restarted the deployer's connection, and afterwards a shared connection
    # (the ControlMaster opened again) stayed up while the fresh confirmation login came and
    # went; without it, every later command would have been a login of its own, one at a time
    stops, after = _connections(alpha, since, until)
    assert stops >= 1
    assert any(a < b < a_end for a, a_end in after for b, _ in after), after
    # and back to sshd as a service: the socket and every instance stopped mid-switch
    clean_deploy_works(alpha, "nixos://alpha/good")
    assert alpha.out("systemctl is-active sshd.service") == "active"


def test_a_real_fault_beside_the_cut_is_rolled_back(hosts: dict[str, Host], tmp_path: Path) -> None:
    alpha = hosts["alpha"]
    before = _on_socket(alpha)
    dest = "nixos://alpha/sshd-socket-fail"
    r = deploy(CONFIRM, dest, flake=_flake(tmp_path))
    assert r.returncode == 3, r.output
    res = r.host(dest)
    assert res["outcome"] == "rolled-back", res
    assert "switch-to-configuration test failed (exit 4)" in str(res["error"]), res
    assert RESTARTED in r.output, r.output
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.out("systemctl is-active sshd.socket") == "active"
