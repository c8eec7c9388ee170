"""The rollout options in pairs on lab hosts: --ask, --canary, --max-failures,
--all-or-nothing, --jobs, --dry-activate and plan, each pair either working or refused up
front (exit 2), never hanging: every run is bounded in time, and a run past it fails."""

from __future__ import annotations

import itertools

import pytest

from tests.lab import CONFIRM, Host, deploy, system_of

OPTIONS: dict[str, tuple[str, ...]] = {
    "ask": ("--ask",),
    "canary": ("--canary", "1"),
    "max-failures": ("--max-failures", "1"),
    "all-or-nothing": ("--all-or-nothing",),
    "jobs": ("--jobs", "1"),
    "dry-activate": ("--dry-activate",),
    "plan": (),  # the command
}
PAIRS = list(itertools.combinations(OPTIONS, 2))
# A run of two hosts takes 10-30 s here; a hang is cut off at this and fails the test.
BOUND = 240
ALPHA, BETA = "nixos://alpha/fail-activation", "nixos://beta/good"


def _refused(pair: tuple[str, ...]) -> bool:
    """plan takes no rollout option (click refuses it); --ask with --dry-activate would never ask."""
    if "plan" in pair:
        return pair != ("jobs", "plan")
    return set(pair) == {"ask", "dry-activate"}


def _untouched(host: Host, base: str) -> None:
    assert host.current_system() == base and host.boot_default() == base and host.profile() == base
    assert host.generations() == 1 and not host.transaction_states()


@pytest.mark.parametrize("pair", PAIRS, ids="+".join)
def test_every_pair_of_rollout_options(hosts: dict[str, Host], pair: tuple[str, str]) -> None:
    """alpha's activation fails (it is rolled back), beta's would succeed; alpha is first, so it
    is the canary. Each pair does what its options say, to the hosts and in the report."""
    alpha, beta = hosts["alpha"], hosts["beta"]
    base = alpha.current_system()
    argv = ["plan"] if "plan" in pair else []
    for name in pair:
        argv += OPTIONS[name]
    r = deploy(*argv, "--settle-time=0", CONFIRM, ALPHA, BETA, input="y\ny\n", timeout=BOUND)
    if _refused(pair):
        assert r.returncode == 2, r.output
        assert "Traceback" not in r.output and not r.report
        _untouched(alpha, base)
        _untouched(beta, base)
        return
    if "dry-activate" in pair or "plan" in pair:  # a plan cannot foresee alpha's failure
        assert r.returncode == 0, r.output
        assert [h["outcome"] for h in r.hosts] == ["unchanged", "unchanged"], r.output
        _untouched(alpha, base)
        _untouched(beta, base)
        return
    assert r.returncode == 3, r.output
    assert r.host(ALPHA)["outcome"] == "rolled-back"
    alpha.assert_clean_after(running=base, boot=base)
    assert alpha.profile() == base
    b = r.host(BETA)
    if "canary" in pair or set(pair) == {"max-failures", "jobs"}:
        assert b["outcome"] == "skipped", r.output
        _untouched(beta, base)
    elif "all-or-nothing" in pair:
        assert b["outcome"] == "rolled-back" and "--all-or-nothing" in str(b["error"]), r.output
        beta.assert_clean_after(running=base, boot=base)
        assert beta.profile() == base
    else:
        assert b["outcome"] == "activated", r.output
        beta.assert_clean_after(running=system_of(b), boot=system_of(b))
        assert beta.profile() == system_of(b)
    if "ask" in pair:  # one question: the canary's wave, or the whole run
        which = "1 canary host(s)" if "canary" in pair else "2 host(s)"
        assert r.output.count("Activate on") == 1 and f"Activate on {which}" in r.output, r.output


def test_ask_with_canaries_asks_once_per_wave(hosts: dict[str, Host]) -> None:
    """The canary's question, its activation, then the others' question: both answered yes."""
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    r = deploy("--ask", "--canary", "1", "alpha", "beta", "gamma", input="y\ny\n", timeout=BOUND)
    assert r.returncode == 0, r.output
    assert [h["outcome"] for h in r.hosts] == ["activated"] * 3
    first = r.output.index("Activate on 1 canary host(s) (alpha)? [y/N] y")
    second = r.output.index("Activate on 2 host(s) (beta, gamma)? [y/N] y")
    assert first < second
    for host, dest in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")):
        system = system_of(r.host(dest))
        host.assert_clean_after(running=system, boot=system)
    # no to the second wave: the canary keeps its new system, the others are untouched
    r = deploy("--ask", "--canary", "1", "nixos://alpha/good", "beta", input="y\nn\n", timeout=BOUND)
    assert r.returncode == 1, r.output
    assert r.host("beta")["outcome"] == "failed" and "not confirmed" in str(r.host("beta")["error"])
    assert beta.generations() == 2  # its first deploy's only


def test_ask_max_failures_jobs_a_skipped_host_does_not_hold_the_question(hosts: dict[str, Host]) -> None:
    """--jobs 1: alpha waits at the question, beta fails its pre-activation check and reaches
    --max-failures, gamma is skipped; alpha is skipped too, the question is never asked."""
    alpha, beta, gamma = hosts["alpha"], hosts["beta"], hosts["gamma"]
    base = alpha.current_system()
    r = deploy(
        "--ask",
        "--jobs",
        "1",
        "--max-failures",
        "1",
        "alpha",
        "nixos://beta/precheck-fail",
        "gamma",
        input="y\n",
        timeout=BOUND,
    )
    assert r.returncode == 1, r.output
    assert [h["outcome"] for h in r.hosts] == ["skipped", "failed", "skipped"], r.output
    assert "--max-failures 1" in str(r.host("alpha")["error"]) and "Activate on" not in r.output
    for host in (alpha, beta, gamma):
        _untouched(host, base)
        assert host.lock_free() and not host.deploy_units()
