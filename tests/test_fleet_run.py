"""A run over many hosts, summed up and paced: its exit code, how many hosts at a time.

The exit code is the worst host's outcome; the number of hosts run at once follows the
open-file limit, raised first where it can be."""

from __future__ import annotations

import pytest

from deploy_flake.models import Outcome, exit_code


def test_exit_code_is_the_worst_outcome() -> None:
    assert exit_code([Outcome.ACTIVATED, Outcome.ACTIVATED]) == 0
    assert exit_code([Outcome.ACTIVATED, Outcome.FAILED]) == 1
    assert exit_code([Outcome.FAILED, Outcome.ROLLED_BACK]) == 3
    assert exit_code([Outcome.ROLLED_BACK, Outcome.UNKNOWN, Outcome.ACTIVATED]) == 4


def test_default_jobs_follows_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from deploy_flake.fleet import run as fleet

    limits = {"soft": 1024, "hard": 1024}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    assert fleet.default_jobs(4) == 4
    assert fleet.default_jobs(500) == (1024 - 64) // 9  # 106 at a time: 8 fds each, and its log
    limits["hard"] = 65536  # the soft limit is raised first
    assert fleet.default_jobs(500) == 500
    assert limits["soft"] == 65536
