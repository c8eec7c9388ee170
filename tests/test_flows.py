"""Whole flows of one host, in-process: a scripted host (tests/fake_remote.py) answers every
command of a deploy, rollback, plan or status, and each test asserts the exact commands sent,
in order, and the host's result. They cover the outcome policy's branches in milliseconds;
the lab tests show the same on real hosts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from deploy_flake.agent.protocol import STATUS_TAG
from deploy_flake.deploy import host as host_module
from deploy_flake.deploy.host import HostJob
from deploy_flake.deploy.jobs import host_job
from deploy_flake.deploy.run import Run
from deploy_flake.destination import Destination
from deploy_flake.models import (
    DeployOptions,
    GcSettings,
    HostResult,
    Job,
    Outcome,
    RebootPolicy,
    RollbackFailurePolicy,
    Stage,
    Timeouts,
)
from deploy_flake.nix import Flake
from deploy_flake.output.events import Events
from deploy_flake.remote.ssh import SshSettings
from tests.fake_remote import Answer, FakeHost, FakeRemote, Reply

OLD = "/nix/store/0000000000000000000000000000000a-nixos-system-web-1"
NEW = "/nix/store/1111111111111111111111111111111b-nixos-system-web-2"
OLDER = "/nix/store/2222222222222222222222222222222c-nixos-system-web-0"


class Recorded:
    """The run's events: what a user would have seen."""

    def __init__(self, then: Events | None = None) -> None:
        self.stages: list[Stage] = []
        self.notes: list[str] = []
        self.lines: list[str] = []
        self.then = then

    def stage(self, label: str, stage: Stage) -> None:
        self.stages.append(stage)
        if self.then is not None:
            self.then.stage(label, stage)

    def line(self, label: str, text: str) -> None:
        self.lines.append(text)
        if self.then is not None:
            self.then.line(label, text)

    def note(self, label: str, text: str) -> None:
        self.notes.append(text)
        if self.then is not None:
            self.then.note(label, text)

    def finished(self, label: str, result: HostResult) -> None:
        if self.then is not None:
            self.then.finished(label, result)


def facts(
    *,
    current: str = OLD,
    uid: int = 0,
    generations: Sequence[tuple[int, str]] = ((1, OLD),),
    boot_id: str = "b00t",
    extra: str = "",
) -> Reply:
    gens = "".join(f"generation={n} {s}\n" for n, s in generations)
    profile = max(n for n, _ in generations)
    return Reply(
        f"uid={uid}\nhostname=web\nmachine=x86_64\ncurrent={current}\nbooted={current}\n"
        f"profile=system-{profile}-link\nprofile_system={current}\nstate=running\n"
        f"boot_id={boot_id}\n{gens}{extra}"
    )


def inspection(
    *, health: str = "running", failed: Sequence[str] = (), sshd: bool = True, extra: Sequence[str] = ()
) -> Reply:
    lines = [f"health={health}", *(f"failed={u}" for u in failed), "stc=yes", "system=x86_64-linux", *extra]
    if sshd:
        lines += ["unit=sshd.service", "wanted=multi-user.target.wants/sshd.service"]
    for f in ("kernel", "initrd", "kernel-modules"):
        lines += [f"boot:{f}=/nix/store/k-{f}", f"booted:{f}=/nix/store/k-{f}"]
    return Reply("\n".join(lines) + "\n")


def status(
    phase: str,
    reason: str = "",
    keeper: str = "unit",
    log: str = "",
    killed_in: str = "",
    replaced: str = "system-1-link",
    committed: str = "",
) -> Reply:
    if phase == "activated" and not committed:
        committed = "system-2-link"
    fields = (phase, OLD, NEW, keeper, killed_in, replaced, committed, reason)
    return Reply(f"{log}{STATUS_TAG}\t" + "\t".join(fields) + "\n")


# Short limits: the deploy's own waits (a confirmation window, a retry) stay short.
FAST = Timeouts(settle=0, confirm=5, health=5, activation=5, boot=5, copy=5, copy_attempts=1)
BUILT = Reply(f'[{{"drvPath":"/nix/store/x.drv","outputs":{{"out":"{NEW}"}}}}]\n')


@pytest.fixture
def instant(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The clock and asyncio's sleeps made virtual for the test (time.monotonic and
    asyncio.sleep, which the agent client's waits use): a confirmation window or a contact
    window passes at once. The list holds the clock; a reply may move it on."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += max(seconds, 0.01)

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(asyncio, "sleep", sleep)
    return clock


def run_job(
    monkeypatch: pytest.MonkeyPatch,
    table: Sequence[tuple[str, Answer]],
    *,
    job: Job = Job.DEPLOY,
    dest: str = "nixos://web/web",
    shown: Events | None = None,
    **options: object,
) -> tuple[HostResult, FakeHost, Recorded]:
    """One host's job against a scripted host; its result, the host (what was sent), the events.
    shown: where the events go as well (a display, a run log), after they are recorded."""
    fake = FakeHost(table)
    monkeypatch.setattr(host_module, "Remote", lambda d, s, **kw: FakeRemote(d, s, **kw, host=fake))
    events = Recorded(shown)
    options.setdefault("timeouts", FAST)
    opts = DeployOptions(flake_dir=Path("/flake"), job=job, **options)  # type: ignore[arg-type]
    run = Run(
        flake=Flake(url="path:/flake", store_path="/nix/store/f-source"),
        options=opts,
        ssh=SshSettings(control_dir=Path("/nonexistent")),
        events=events,
        run_id="t",
        holder="tester",
        limit=asyncio.Semaphore(1),
    )
    result = asyncio.run(host_job(run, Destination.parse(dest), 0).perform())
    assert not fake.mismatch, fake.mismatch
    assert fake.left == [], f"the deploy ended before sending {fake.left}; sent {fake.sent}"
    return result, fake, events


# What every deploy that builds on the host sends before its transaction: the connection,
# the facts with the flake's copy beside them, the build, the one inspection round trip.
BEFORE = [
    ("connect", Reply()),
    ("facts", facts()),
    ("nix flake archive", Reply()),
    ("nix build", BUILT),
    ("gc root", Reply()),
    ("inspect", inspection()),
]


def boot_info(*lines: str) -> list[tuple[str, Reply]]:
    """The agent's boot-info answer (plan and status ask for it), after its install."""
    text = "loader=systemd-boot\ndefault=nixos-generation-1.conf\noneshot=\ntrial=none\n"
    text += "entry=nixos-generation-1.conf\n" + "".join(f"{line}\n" for line in lines)
    return [("agent install", Reply()), ("agent boot-info", Reply(stdout=text))]


ROOMY = ("boot_free_kib=30000", "boot_needs_kib=9000", "resets=yes", "panic=5", "watchdog=", "problem=")


def test_a_deploy_that_is_confirmed_is_activated(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("checking", log="[deploy-flake] state: checking\n")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED and result.error is None, result
    assert result.system == NEW and result.previous_system == OLD
    assert fake.sent == [name for name, _ in BEFORE] + ["agent start", "agent confirm", "disconnect"]
    assert "confirmed over a new SSH connection" in events.notes
    assert events.stages[-1] is Stage.DONE


def test_the_agent_is_installed_when_the_host_does_not_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("none")),
            ("agent install", Reply()),
            ("agent start", status("checking")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED, result
    assert fake.sent.count("agent start") == 2


def test_an_unhealthy_host_is_refused_before_anything_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    table = [*BEFORE[:-1], ("inspect", inspection(health="degraded", failed=["nginx.service"]))]
    result, fake, _ = run_job(monkeypatch, [*table, ("rm", Reply()), ("disconnect", Reply())])
    assert result.outcome is Outcome.FAILED and result.stage is Stage.PREFLIGHT
    assert result.error == (
        "System is not healthy. State: degraded; failed units: nginx.service. "
        "Fix them or deploy with --preflight-check=skip."
    )
    assert not any(name.startswith("agent") for name in fake.sent)  # nothing was changed
    assert fake.sent[-2:] == ["rm", "disconnect"]  # the build's GC root goes


def test_only_an_earlier_deploys_failed_units_do_not_refuse_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = "deploy-flake-20261207T080000-abcdef-0.service"
    table = [*BEFORE[:-1], ("inspect", inspection(health="degraded", failed=[ours]))]
    result, _, events = run_job(
        monkeypatch,
        [
            *table,
            ("agent start", status("checking")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED, result
    assert any(ours in n and "finished first" in n for n in events.notes), events.notes


def test_a_system_without_sshd_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    table = [*BEFORE[:-1], ("inspect", inspection(sshd=False))]
    result, fake, _ = run_job(monkeypatch, [*table, ("rm", Reply()), ("disconnect", Reply())])
    assert result.outcome is Outcome.FAILED and "sshd" in str(result.error), result
    assert not any(name.startswith("agent") for name in fake.sent)


def test_a_failed_activation_is_rolled_back_and_checked_over_a_new_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("rolled-back", "switch-to-configuration test failed (exit 4)")),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.error == "rolled back: switch-to-configuration test failed (exit 4)"
    assert "verified over a new SSH connection: back on the previous system, healthy" in events.notes
    assert fake.sent[-2:] == ["readlink", "disconnect"]


def test_a_rollback_that_leaves_another_system_running_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    result, _, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("rolled-back", "no confirmation")),
            ("readlink", Reply(f"{OLDER}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.UNKNOWN
    assert result.error == f"rolled back: no confirmation; but the host now runs {OLDER}, not {OLD}"


def test_a_lockout_confirms_nothing_and_the_host_rolls_back(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    lost = Reply(stderr="kex_exchange_identification: Connection closed by remote host", lost=True)
    table: list[tuple[str, Answer]] = [*BEFORE, ("agent start", status("checking"))]
    table += [("agent confirm", lost)] * 3  # a fresh login, tried until the window closes
    result, fake, events = run_job(
        monkeypatch,
        [
            *table,
            ("agent watch", status("rolled-back", "no confirmation over a new SSH connection within 5s")),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert any("cannot log in to web over a new SSH connection" in n for n in events.notes), events.notes
    assert fake.sent.count("agent confirm") == 3


def test_a_transaction_that_vanished_with_a_reboot_is_judged_by_what_the_host_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("checking")),
            ("agent confirm", status("none")),
            ("agent watch", status("none")),
            ("facts", facts()),  # a new login: the previous system, the profile unchanged
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK
    assert "the host lost the record of the deploy (did it reboot?)" in str(result.error)
    assert fake.sent[-2:] == ["facts", "disconnect"]


def test_a_killed_unit_and_its_guard_are_rescued_by_the_deployer(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("activating", keeper="none")),
            ("agent rescue", status("rolling-back", keeper="guard")),
            ("agent watch", status("rolled-back", "the activation unit was stopped", keeper="none")),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert (
        "the transaction's unit was killed on web while it was activating: asking the host to start its guard"
        in events.notes
    ), events.notes
    assert fake.sent.count("agent rescue") == 1


def test_a_killed_unit_whose_guard_cannot_be_started_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = status("checking", keeper="none")
    result, _, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", nobody),
            ("agent rescue", nobody),
            ("agent rescue", nobody),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.UNKNOWN, result
    assert "its guard could not recover the host (2 tries)" in str(result.error), result


def test_a_host_that_stops_answering_is_unknown_after_the_contact_window(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    def gone(argv: Sequence[str], stdin: bytes | None) -> Reply:
        instant[0] += 30  # a watch that got no answer for its whole stream window
        return Reply(stderr="Connection timed out", lost=True)

    table: list[tuple[str, Answer]] = [*BEFORE, ("agent start", status("activating"))]
    lost_twice: list[tuple[str, Answer]] = [("agent watch", gone), ("connect", Reply())] * 2
    table += [*lost_twice, ("agent watch", gone)]
    result, _, events = run_job(monkeypatch, [*table, ("disconnect", Reply())])
    assert result.outcome is Outcome.UNKNOWN, result
    assert "no answer from web for" in str(result.error) and "while it was activating" in str(result.error)
    assert any("no answer from web while it is activating" in n for n in events.notes), events.notes


def test_a_rollback_goes_to_the_generation_before_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, events = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", facts(current=NEW, generations=[(1, OLD), (2, NEW)])),
            ("inspect", inspection()),
            ("agent start", status("checking")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
        job=Job.ROLLBACK,
    )
    assert result.outcome is Outcome.ACTIVATED, result
    assert result.config == "generation 1" and result.system == OLD
    assert f"rolling back to generation 1: {OLD}" in events.notes
    settings = fake.stdin["agent start"] or b""
    assert b"GENERATION=1\n" in settings and f"NEW={OLD}\n".encode() in settings


def test_a_rollback_from_the_oldest_generation_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [("connect", Reply()), ("facts", facts()), ("disconnect", Reply())],
        job=Job.ROLLBACK,
    )
    assert result.outcome is Outcome.FAILED
    assert "generation 1 is the oldest" in str(result.error)
    assert fake.sent == ["connect", "facts", "disconnect"]


def test_status_reads_the_facts_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [("connect", Reply()), ("facts", facts()), *boot_info("resets=no"), ("disconnect", Reply())],
        job=Job.STATUS,
    )
    assert result.outcome is Outcome.UNCHANGED and result.system == OLD
    assert result.status is not None and result.status.generation == 1 and result.status.state == "running"
    assert fake.sent == ["connect", "facts", "agent install", "agent boot-info", "disconnect"]
    boot = result.status.boot
    assert boot is not None and boot.default == "nixos-generation-1.conf" and boot.resets is False, boot
    assert result.status.as_json()["boot"] == boot.as_json()


def test_an_unreachable_host_fails_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(monkeypatch, [("connect", Reply(stderr="No route to host", lost=True))])
    assert result.outcome is Outcome.FAILED and result.stage is Stage.CONNECT
    assert result.error == "cannot reach web over SSH: No route to host"
    assert fake.sent == ["connect"]


def test_a_plan_builds_inspects_and_dry_activates_without_changing_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dry = Reply(stderr="would restart the following units: nginx.service\n")
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            *boot_info(*ROOMY),
            ("switch-to-configuration dry-activate", dry),
            ("rm", Reply()),
            ("disconnect", Reply()),
        ],
        job=Job.PLAN,
    )
    assert result.outcome is Outcome.UNCHANGED, result
    assert not any(
        name.startswith("agent") for name in fake.sent if name not in ("agent install", "agent boot-info")
    )
    plan = result.plan
    assert plan is not None and plan.checks == "ok" and not plan.reboot_needed, plan
    assert "boot loader: systemd-boot, default nixos-generation-1.conf, 1 entries" in events.lines
    assert "/boot: 29.3 MiB free; the new kernel and initrd need 8.8 MiB" in events.lines
    assert "after a kernel panic or hang, the new system resets itself (panic=5)" in events.lines


def test_a_plan_says_what_the_hosts_boot_check_would_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's own verdict on the boot (boot-info's problem, the check a deploy's
    transaction makes before it changes anything) is the plan's checks verdict."""
    full = "no space on /boot: 3 MiB free, and the new system's kernel and initrd need 9 MiB there"
    dry = Reply(stderr="")
    result, _, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            *boot_info("boot_free_kib=3000", "boot_needs_kib=9000", "resets=no", f"problem={full}"),
            ("switch-to-configuration dry-activate", dry),
            ("rm", Reply()),
            ("disconnect", Reply()),
        ],
        job=Job.PLAN,
    )
    assert result.outcome is Outcome.FAILED and result.error == f"a deploy would refuse this system: {full}"
    assert result.plan is not None and result.plan.checks == full
    assert any(
        line.startswith("after a kernel panic or hang, the new system stays down") for line in events.lines
    )


def _cancelled(answer: Reply) -> Answer:
    """The answer, with Ctrl-C arriving while it is on its way (the host's task is cancelled)."""

    def reply(argv: Sequence[str], stdin: bytes | None) -> Reply:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return answer

    return reply


def test_ctrl_c_after_the_start_asks_the_host_to_roll_back(monkeypatch: pytest.MonkeyPatch) -> None:
    result, _, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", _cancelled(status("activating"))),
            ("agent abort", status("rolling-back")),
            ("agent watch", status("rolled-back", "the deploy was interrupted before it was confirmed")),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert "interrupted: asking the host to roll back" in events.notes
    assert result.error == "rolled back: the deploy was interrupted before it was confirmed"


def test_ctrl_c_before_the_start_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [*BEFORE[:-1], ("inspect", _cancelled(inspection())), ("rm", Reply()), ("disconnect", Reply())],
    )
    assert result.outcome is Outcome.FAILED
    assert result.error == "interrupted before anything was changed"
    assert not any(name.startswith("agent") for name in fake.sent)


def test_reboot_always_reboots_into_the_committed_system_and_checks_it(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    after = facts(current=NEW, generations=[(1, OLD), (2, NEW)], boot_id="n3w")
    result, _, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("checking")),
            ("agent confirm", status("activated")),
            ("reboot", Reply("b00t\n", stderr="Connection to web closed by remote host.", lost=True)),
            ("disconnect", Reply()),
            ("facts", facts(boot_id="b00t")),  # not down yet: the same boot
            ("facts", after),
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("running\n")),  # failed units only if not
            ("disconnect", Reply()),
        ],
        reboot=RebootPolicy.ALWAYS,
        reboot_unverified=True,
    )
    assert result.outcome is Outcome.ACTIVATED and result.stage is Stage.DONE, result
    assert any(n.startswith("rebooted into the new system in") for n in events.notes), events.notes


def test_interrupted_twice_after_the_start_is_unknown_and_says_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second Ctrl-C: the fleet takes each host's result as far as it is known (abandoned)."""
    jobs: list[HostJob] = []

    def abandon(argv: Sequence[str], stdin: bytes | None) -> Reply:
        jobs[0].abandoned()  # while the start is on its way: the transaction may run
        return status("checking")

    fake = FakeHost([*BEFORE, ("agent start", abandon)])
    monkeypatch.setattr(host_module, "Remote", lambda d, s, **kw: FakeRemote(d, s, **kw, host=fake))
    run = Run(
        flake=Flake(url="path:/flake", store_path="/nix/store/f-source"),
        options=DeployOptions(flake_dir=Path("/flake"), timeouts=FAST),
        ssh=SshSettings(control_dir=Path("/nonexistent")),
        events=Recorded(),
        run_id="t",
        holder="tester",
        limit=asyncio.Semaphore(1),
    )
    job = host_job(run, Destination.parse("web"), 0)
    jobs.append(job)

    async def until_abandoned() -> None:
        task = asyncio.ensure_future(job.perform())
        while fake.table:
            await asyncio.sleep(0)
        task.cancel()  # the deployer stops at once
        with contextlib.suppress(asyncio.CancelledError, AssertionError):
            await task

    asyncio.run(until_abandoned())
    result = job.result
    assert result.outcome is Outcome.UNKNOWN, result
    assert str(result.error).startswith("interrupted twice before the host answered."), result
    assert "systemctl status deploy-flake-t-0" in str(result.error)


def test_a_unit_killed_in_checking_is_said_so_though_its_guard_moved_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard starts at once (OnFailure=) and is rolling back before the deployer looks:
    the note names the phase the unit was killed in, which the guard recorded."""
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("rolling-back", keeper="guard", killed_in="checking")),
            ("agent watch", status("rolled-back", "the activation unit was stopped", killed_in="checking")),
            ("readlink", Reply(f"{OLD}\n")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert "the transaction's unit was killed on web while it was checking: its guard recovers the host" in (
        events.notes
    ), events.notes
    assert "agent rescue" not in fake.sent and "agent confirm" not in fake.sent


NEW_INIT = ["init=systemd 3", "running_init=systemd 2"]


def test_a_new_init_fails_the_host_before_its_transaction_and_the_plan_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = [*BEFORE[:-1], ("inspect", inspection(extra=NEW_INIT))]
    result, fake, _ = run_job(monkeypatch, [*before, ("rm", Reply()), ("disconnect", Reply())])
    assert result.outcome is Outcome.FAILED, result
    assert "deploy it with --test=skip --reboot=if-needed" in str(result.error)
    assert not any(name.startswith("agent") for name in fake.sent)
    # the plan: no dry-activate (switch-to-configuration refuses that too), the checks' verdict
    result, fake, events = run_job(
        monkeypatch, [*before, *boot_info(*ROOMY), ("rm", Reply()), ("disconnect", Reply())], job=Job.PLAN
    )
    assert result.outcome is Outcome.FAILED and "switch-to-configuration test would refuse it" in str(
        result.error
    )
    assert "units: not known: the new system's init starts only at a boot into it" in events.lines


def test_a_host_on_a_specialisation_gets_the_same_specialisation_of_the_new_system(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = "/nix/store/3333333333333333333333333333333d-nixos-system-web-2"
    result, fake, events = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", facts(extra="specialisation=foo\n")),
            *BEFORE[2:-1],
            ("inspect", inspection(extra=["specialisation=bar", "specialisation=foo", f"activates={child}"])),
            ("agent start", status("checking", log="[deploy-flake] state: checking\n")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.ACTIVATED and result.system == NEW, result
    settings = (fake.stdin["agent start"] or b"").decode()
    assert f"NEW={NEW}\n" in settings and "SPECIALISATION=foo\n" in settings, settings
    assert any(
        n.startswith("web runs the specialisation foo of its system: activating") for n in events.notes
    )


def test_a_host_on_a_specialisation_the_new_system_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", facts(extra="specialisation=foo\n")),
            *BEFORE[2:-1],
            ("inspect", inspection(extra=["specialisation=bar"])),
            ("rm", Reply()),
            ("disconnect", Reply()),
        ],
    )
    assert result.outcome is Outcome.FAILED, result
    assert "but the new system has no specialisation foo (it has: bar)" in str(result.error)
    assert not any(name.startswith("agent") for name in fake.sent)


def test_install_bootloader_reaches_the_agents_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", status("checking", log="[deploy-flake] state: checking\n")),
            ("agent confirm", status("activated")),
            ("disconnect", Reply()),
        ],
        install_bootloader=True,
    )
    assert result.outcome is Outcome.ACTIVATED, result
    assert "INSTALL_BOOTLOADER=1\n" in (fake.stdin["agent start"] or b"").decode()


# ---- --on-rollback-failure: re-activating the previous system failed twice
ROLLBACK_FAILED = status(
    "rollback-failed",
    "switch-to-configuration test failed (exit 4); re-activating the previous system failed (exit 1), twice",
)
REBOOTED = [
    ("reboot", Reply("b00t\n", stderr="Connection to web closed by remote host.", lost=True)),
    ("disconnect", Reply()),
]


def test_a_failed_rollback_is_reported_and_the_host_left_alone_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, fake, _ = run_job(
        monkeypatch, [*BEFORE, ("agent start", ROLLBACK_FAILED), ("disconnect", Reply())]
    )
    assert result.outcome is Outcome.UNKNOWN, result
    assert f"{OLD}/bin/switch-to-configuration test" in str(result.error)
    assert "reboot" not in fake.sent


def test_a_failed_rollback_reboots_into_the_old_boot_entry_and_is_rolled_back_when_it_comes_back_healthy(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    result, fake, events = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", ROLLBACK_FAILED),
            ("sh", Reply("system-1-link\n")),  # the boot entry: the profile as found, never written
            *REBOOTED,
            ("facts", facts(boot_id="b00t")),  # not down yet: the same boot
            ("facts", facts(boot_id="n3w")),  # back, on the previous system
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("running\n")),
            ("disconnect", Reply()),
        ],
        on_rollback_failure=RollbackFailurePolicy.REBOOT,
    )
    assert not fake.left, fake.mismatch
    assert result.outcome is Outcome.ROLLED_BACK, result
    assert str(result.error).startswith("rolled back by a reboot: switch-to-configuration test failed")
    assert any(n.startswith("rebooted into the previous system in") for n in events.notes), events.notes


def test_a_host_that_comes_back_on_another_system_after_the_last_resort_reboot_is_unknown(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", ROLLBACK_FAILED),
            ("sh", Reply("system-1-link\n")),
            *REBOOTED,
            ("facts", facts(current=NEW, boot_id="n3w")),
            ("disconnect", Reply()),
        ],
        on_rollback_failure=RollbackFailurePolicy.REBOOT,
    )
    assert not fake.left, fake.mismatch
    assert result.outcome is Outcome.UNKNOWN, result
    assert f"came back running {NEW}" in str(result.error) and f"not the previous system {OLD}" in str(
        result.error
    )


def test_a_degraded_previous_system_after_the_last_resort_reboot_is_unknown(
    monkeypatch: pytest.MonkeyPatch, instant: list[float]
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [
            *BEFORE,
            ("agent start", ROLLBACK_FAILED),
            ("sh", Reply("system-1-link\n")),
            *REBOOTED,
            ("facts", facts(boot_id="n3w")),
            ("connect", Reply()),
            ("systemctl is-system-running", Reply("degraded\n")),
            ("systemctl list-units", Reply("app.service loaded failed failed app\n")),
            ("disconnect", Reply()),
        ],
        on_rollback_failure=RollbackFailurePolicy.REBOOT,
    )
    assert not fake.left, fake.mismatch
    assert result.outcome is Outcome.UNKNOWN, result
    assert "came back on the previous system" in str(result.error) and "app.service" in str(result.error)


@pytest.mark.parametrize(
    ("seen", "why"),
    [
        ("system-1-link\nchanged\n", "wrote the new system's boot entry"),
        ("system-2-link\n", "the system profile is system-2-link, not system-1-link"),
    ],
)
def test_no_last_resort_reboot_when_the_boot_entry_may_name_the_new_system(
    monkeypatch: pytest.MonkeyPatch, seen: str, why: str
) -> None:
    result, fake, _ = run_job(
        monkeypatch,
        [*BEFORE, ("agent start", ROLLBACK_FAILED), ("sh", Reply(seen)), ("disconnect", Reply())],
        on_rollback_failure=RollbackFailurePolicy.REBOOT,
    )
    assert not fake.left, fake.mismatch
    assert "reboot" not in fake.sent
    assert result.outcome is Outcome.UNKNOWN, result
    assert f"{OLD}/bin/switch-to-configuration test" in str(result.error)  # what to do by hand
    assert "Not rebooted (--on-rollback-failure=reboot)" in str(result.error) and why in str(result.error)


def _gc_answer(*lines: str) -> Reply:
    return Reply(stdout="".join(f"@@deploy-flake-gc\t{line}\n" for line in lines))


def test_gc_reports_what_it_removed_and_what_it_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = _gc_answer(
        "keep\t3\tthe system profile's generation",
        f"remove\t1\t{OLDER}\t2026-11-01",
        "end\t1\t3000\t9000\t12 store paths deleted, 80.00 MiB freed\t",
    )
    asked: list[str] = []

    def gc(argv: Sequence[str], stdin: bytes | None) -> Reply:
        asked.extend(argv)
        return answer

    result, fake, events = run_job(
        monkeypatch,
        [
            ("connect", Reply()),
            ("facts", facts()),
            ("agent install", Reply()),
            ("agent gc", gc),
            ("disconnect", Reply()),
        ],
        job=Job.GC,
        gc=GcSettings(keep=2, older_than_s=86400, collect_garbage=True),
    )
    assert result.outcome is Outcome.CLEANED and result.gc is not None, result
    assert fake.sent[3] == "agent gc" and asked[-4:] == ["2", "86400", "1", "0"], asked
    assert result.gc.removed == ((1, OLDER, "2026-11-01"),)
    assert (
        "removed generation(s) 1; /boot: 2.9 MiB free before, 8.8 MiB after; "
        "store: 12 store paths deleted, 80.00 MiB freed"
    ) in events.lines
    assert result.as_json()["gc"] == result.gc.as_json()


def test_gc_that_found_the_deploy_lock_taken_fails_and_one_cut_short_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy = _gc_answer("end\t0\t\t\t\ta deploy is in progress on this host (x): nothing was removed")
    table = [
        ("connect", Reply()),
        ("facts", facts()),
        ("agent install", Reply()),
        ("agent gc", busy),
        ("disconnect", Reply()),
    ]
    result, _, _ = run_job(monkeypatch, table, job=Job.GC, gc=GcSettings(keep=1))
    assert result.outcome is Outcome.FAILED and str(result.error).startswith("a deploy is in progress"), (
        result
    )
    cut = _gc_answer("keep\t3\tthe system profile's generation", f"remove\t1\t{OLDER}\t-")
    table[3] = ("agent gc", cut)
    result, _, _ = run_job(monkeypatch, table, job=Job.GC, gc=GcSettings(keep=1))
    assert result.outcome is Outcome.UNKNOWN and "gc did not finish" in str(result.error), result
