"""--elevate=doas on lab hosts (the image's opendoas) and sudo-rs on a sid host: a deploy through
either ends activated; doas's password reaches only doas's terminal; a host without the chosen
tool fails at connect with nothing changed. (The logic, host-free: tests/test_elevate.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import suite_host
from tests.lab import SUDO_PASSWORD, SUDO_USER, Host, deploy, fixture_flake_with
from tests.test_sudo_password import run_with_password

PASSWORD = "Pw-doas-5e1b-never-shown"
# the deploy user has doas only: no sudo rule, and no sudo on its PATH
NO_SUDO = "rm -f /etc/sudoers.d/deploy && mv /usr/bin/sudo /usr/bin/sudo.off"


def with_doas(host: Host, rule: str) -> Host:
    host.ssh(f"printf '%s\\n' '{rule}' > /etc/doas.conf && chmod 400 /etc/doas.conf && {NO_SUDO}")
    return host


def test_doas_deploys_to_a_host_without_sudo(hosts: dict[str, Host]) -> None:
    alpha = with_doas(hosts["alpha"], "permit nopass deploy as root")
    before = alpha.current_system()
    dest = "nixos://deploy@alpha/good"
    r = deploy("--elevate=doas", "--settle-time=0", dest)
    assert r.returncode == 0, r.output
    res = r.host(dest)
    assert res["outcome"] == "activated", res
    assert alpha.current_system() == res["system"] == alpha.profile() != before
    assert alpha.boot_default() == res["system"]
    # sudo's way fails at connect, saying that the host has doas
    r = deploy("--settle-time=0", "nixos://deploy@alpha/base")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://deploy@alpha/base")["error"])
    assert "sudo is not installed for this user on alpha" in err and "--elevate=doas" in err, err
    assert alpha.current_system() == res["system"] and alpha.generations() == 2


def test_the_inventorys_elevate_doas_deploys_to_a_host_without_sudo(
    hosts: dict[str, Host], tmp_path: Path
) -> None:
    beta = with_doas(hosts["beta"], "permit nopass deploy as root")
    before = beta.current_system()
    entry = 'beta = { destination = "nixos://beta/beta"; tags = [ "web" "us" ]; };'
    doas = 'beta = { destination = "nixos://beta/good"; user = "deploy"; elevate = "doas"; };'
    flake = fixture_flake_with(tmp_path / "doas", replace=(entry, doas))
    r = deploy("--settle-time=0", "--on", "beta", flake=flake)
    assert r.returncode == 0, r.output
    res = r.host("nixos://deploy@beta/good")
    assert res["outcome"] == "activated", res
    assert beta.current_system() == res["system"] == beta.profile() != before
    # the same entry without elevate: sudo's way, refused at connect with nothing changed
    flake = fixture_flake_with(tmp_path / "sudo", replace=(entry, doas.replace(' elevate = "doas";', "")))
    r = deploy("--settle-time=0", "--on", "beta", flake=flake)
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://deploy@beta/good")["error"])
    assert "--elevate=doas" in err and r.host("nixos://deploy@beta/good")["stage"] == "connect", err
    assert beta.current_system() == res["system"] and beta.generations() == 2


def test_the_doas_password_is_used_and_never_shown(hosts: dict[str, Host], tmp_path: Path) -> None:
    delta = with_doas(hosts["delta"], "permit deploy as root")
    delta.ssh(f"echo 'deploy:{PASSWORD}' | chpasswd")
    before = delta.current_system()
    rc, out, report, processes = run_with_password(
        tmp_path, PASSWORD, "--elevate=doas", "--settle-time=0", "nixos://deploy@delta/good", watch=delta
    )
    assert rc == 0, out
    res = report["hosts"][0]  # type: ignore[index]
    assert res["outcome"] == "activated", res
    assert delta.current_system() == res["system"] == delta.profile() != before
    for where, text in (("output, events and logs", out), ("report", json.dumps(report)), ("ps", processes)):
        assert PASSWORD not in text, f"the password appears in the {where}"
    assert delta.out("ls /tmp | grep -c deploy-flake-doas || true") == "0", "FIFOs were left behind"


def test_no_or_a_wrong_doas_password_changes_nothing(hosts: dict[str, Host], tmp_path: Path) -> None:
    delta = with_doas(hosts["delta"], "permit deploy as root")
    delta.ssh(f"echo 'deploy:{PASSWORD}' | chpasswd")
    before = delta.current_system()
    r = deploy("--elevate=doas", "nixos://deploy@delta/good")
    assert r.returncode == 1, r.output
    err = str(r.host("nixos://deploy@delta/good")["error"])
    assert "doas does not work without a password" in err and "--ask-sudo-password" in err, err
    rc, out, report, _ = run_with_password(
        tmp_path, "not-the-password", "--elevate=doas", "nixos://deploy@delta/good"
    )
    assert rc == 1, out
    assert "doas on delta did not accept the password" in str(report["hosts"][0]["error"])  # type: ignore[index]
    assert "not-the-password" not in out
    delta.assert_clean_after(running=before, boot=before)


def test_a_host_without_the_chosen_elevation_fails_at_connect(hosts: dict[str, Host]) -> None:
    beta, gamma = hosts["beta"], hosts["gamma"]
    beta.ssh("mv /usr/bin/doas /usr/bin/doas.off")
    gamma.ssh(f"mv /usr/bin/doas /usr/bin/doas.off && {NO_SUDO}")
    before = {h.name: h.current_system() for h in (beta, gamma)}
    r = deploy("--elevate=doas", "nixos://deploy@beta/good", "nixos://deploy@gamma/good")
    assert r.returncode == 1, r.output
    beta_err = str(r.host("nixos://deploy@beta/good")["error"])
    assert beta_err == (
        "doas is not installed for this user on beta (not on the login's PATH): it has sudo: use "
        '--elevate=sudo (or the inventory\'s elevate = "sudo"); nothing was changed'
    )
    gamma_err = str(r.host("nixos://deploy@gamma/good")["error"])
    assert "it has neither sudo nor doas" in gamma_err, gamma_err
    for h in (beta, gamma):
        assert r.host(f"nixos://deploy@{h.name}/good")["stage"] == "connect"
        h.assert_clean_after(running=before[h.name], boot=before[h.name])


# ---- sudo-rs (NixOS's security.sudo-rs, installed as its `sudo`): Debian has it from trixie on
@pytest.fixture
def sid_rs() -> Host:
    """A clean sid host whose `sudo` is sudo-rs."""
    host = suite_host("sid")
    host.ssh("mv /usr/bin/sudo /usr/bin/sudo.orig && ln -s /usr/lib/cargo/bin/sudo /usr/bin/sudo")
    assert host.out("sudo -V | head -n 1").startswith("sudo-rs "), "sudo is not sudo-rs"
    return host


@pytest.mark.lab  # its host is started by its fixture, not a lab fixture
def test_sudo_rs_deploys_without_and_with_a_password(sid_rs: Host, tmp_path: Path) -> None:
    dest = f"nixos://deploy@{sid_rs.name}/good"
    before = sid_rs.current_system()
    r = deploy("--settle-time=0", dest)  # the image's NOPASSWD rule: sudo-rs -n
    assert r.returncode == 0, r.output
    good = r.host(dest)["system"]
    assert r.host(dest)["outcome"] == "activated" and sid_rs.current_system() == good != before
    # the configuration's rule with a password (SUDO_USER's, no NOPASSWD): sudo-rs -S -k -p,
    # the password only after its prompt
    rc, out, report, processes = run_with_password(
        tmp_path, SUDO_PASSWORD, "--settle-time=0", f"nixos://{SUDO_USER}@{sid_rs.name}/base", watch=sid_rs
    )
    assert rc == 0, out
    res = report["hosts"][0]  # type: ignore[index]
    assert res["outcome"] == "activated", res
    assert sid_rs.current_system() == res["system"] != good
    for where, text in (("output, events and logs", out), ("report", json.dumps(report)), ("ps", processes)):
        assert SUDO_PASSWORD not in text, f"the password appears in the {where}"
    rc, out, report, _ = run_with_password(
        tmp_path, "not-the-password", f"nixos://{SUDO_USER}@{sid_rs.name}/good"
    )
    assert rc == 1, out
    assert "did not accept the password" in str(report["hosts"][0]["error"])  # type: ignore[index]
    sid_rs.assert_clean_after(running=res["system"], boot=res["system"])
