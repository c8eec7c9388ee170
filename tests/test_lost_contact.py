"""The host out of reach mid-deploy (network cut, powered off, rebooted): it decides alone.

Unconfirmed, it goes back to its previous system by itself; the deployer reports what it
knows (rolled back, or unknown once the contact window is over) without waiting out the budget."""

from __future__ import annotations

import re
import time

import pytest

from tests.lab import CONFIRM, Background, Host, clean_deploy_works, lab, system_of


def test_network_cut_during_activation(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    lab("net", "alpha", "down")
    try:
        time.sleep(6 + 6 + 5)  # the activation, the confirmation window, and a margin
    finally:
        lab("net", "alpha", "up")
    r = bg.finish()
    assert r.returncode == 3, r.output
    assert "no confirmation" in str(r.host("nixos://alpha/slow-activation")["error"])
    alpha.assert_clean_after(running=before, boot=before)
    clean_deploy_works(alpha, "nixos://alpha/good")


@pytest.mark.parametrize("outage_s", [7.0, 9.5])
def test_confirmation_at_the_edge_of_its_window(hosts: dict[str, Host], outage_s: float) -> None:
    """The network comes back around the moment the confirmation window closes: whichever
    side of the edge the confirmation lands on, the report says what the host did."""
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "--settle-time=2s", "nixos://alpha/good")
    bg.wait_output("state: checking")
    lab("net", "alpha", "down")
    try:
        time.sleep(outage_s)  # settle 2 s, then the 6 s window
    finally:
        lab("net", "alpha", "up")
    r = bg.finish()
    res = r.host("nixos://alpha/good")
    assert res["outcome"] in ("activated", "rolled-back"), r.output
    if res["outcome"] == "activated":
        assert r.returncode == 0
        system = system_of(res)
        alpha.assert_clean_after(running=system, boot=system)
    else:
        assert r.returncode == 3 and "no confirmation" in str(res["error"])
        alpha.assert_clean_after(running=before, boot=before)


def test_host_powered_off_mid_activation_is_reported_unknown_within_the_contact_window(
    hosts: dict[str, Host],
) -> None:
    """A host that stops answering for good is not waited for the transaction's whole
    worst-case budget (an hour): the deployer says at once that it lost contact, keeps
    trying for the contact window (60 s here), then reports it unknown."""
    bg = Background(CONFIRM, "nixos://alpha/slow-activation")
    bg.wait_output("state: activating")
    lab("stop", "alpha")
    r = bg.finish(timeout=240)
    assert r.returncode == 4, r.output
    assert "no answer from alpha while it is activating: its transaction goes on by itself" in r.output
    err = str(r.host("nixos://alpha/slow-activation")["error"])
    assert re.search(r"no answer from alpha for \d+s while it was activating", err), err
    assert "returns to its previous system by itself" in err, err


def test_host_rebooted_mid_transaction(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    before = alpha.current_system()
    bg = Background(CONFIRM, "--settle-time=10s", "nixos://alpha/good")
    bg.wait_output("state: checking")
    lab("reboot", "alpha", timeout=120)
    r = bg.finish()
    assert r.returncode == 3, r.output
    res = r.host("nixos://alpha/good")
    assert res["outcome"] == "rolled-back" and "lost the record of the deploy" in str(res["error"]), res
    alpha.assert_clean_after(running=before, boot=before)
    assert alpha.generations() == 1
