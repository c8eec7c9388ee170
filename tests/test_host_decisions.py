"""One host's pure decisions: sanity checks, preflight verdict, rollback target, reboot, which job."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from deploy_flake.deploy import checks
from deploy_flake.deploy.jobs import JOBS, DeployJob, PlanJob, RollbackJob, StatusJob, host_job
from deploy_flake.deploy.reboot import boots_once, reboot_wanted
from deploy_flake.deploy.rollback_target import rollback_target
from deploy_flake.deploy.run import Run
from deploy_flake.destination import Destination
from deploy_flake.errors import DeployError
from deploy_flake.host.inspection import ClosureFacts
from deploy_flake.host.target import HostFacts
from deploy_flake.models import DeployOptions, HostResult, Job, RebootPolicy, Stage
from deploy_flake.nix import Flake
from deploy_flake.remote.ssh import SshSettings

SYSTEM = "/nix/store/" + "t" * 32 + "-nixos-system-web1"


def _closure(
    *,
    stc: bool = True,
    system: str = "x86_64-linux",
    sshd_units: frozenset[str] = frozenset({"sshd.service"}),
    sshd_wanted: frozenset[str] = frozenset({"sshd.service"}),
    reboot_reasons: tuple[str, ...] = (),
) -> ClosureFacts:
    return ClosureFacts(stc, system, sshd_units, sshd_wanted, reboot_reasons)


def _check(
    closure: ClosureFacts,
    host_machine: str = "x86_64",
    skip: frozenset[str] = frozenset(),
    *,
    activate_now: bool = True,
) -> None:
    checks.check_system(
        closure, toplevel=SYSTEM, host_machine=host_machine, host="web1", skip=skip, activate_now=activate_now
    )


def test_a_sound_system_passes_the_checks() -> None:
    _check(_closure())
    _check(_closure(system=""), host_machine="aarch64")  # unknown: not refused
    _check(_closure(), host_machine="")


@pytest.mark.parametrize(
    ("machine", "system"),
    [
        ("x86_64", "i686-linux"),  # Nix's extra platform on x86_64
        ("i686", "i686-linux"),
        ("i586", "i686-linux"),
        ("armv7l", "armv7l-linux"),
        ("armv7l", "armv6l-linux"),
        ("armv8l", "armv7l-linux"),
        ("arm64", "aarch64-linux"),
        ("ppc64le", "powerpc64le-linux"),
        ("riscv64", "riscv64-linux"),
        ("mips64", "mips64el-linux"),
    ],
)
def test_a_system_for_the_hosts_platform_under_another_name_is_accepted(machine: str, system: str) -> None:
    _check(_closure(system=system), host_machine=machine)


@pytest.mark.parametrize(
    ("machine", "system"),
    [
        ("i686", "x86_64-linux"),
        ("aarch64", "armv7l-linux"),
        ("armv7l", "aarch64-linux"),
        ("ppc64le", "x86_64-linux"),
    ],
)
def test_a_system_its_host_cannot_run_is_refused(machine: str, system: str) -> None:
    with pytest.raises(DeployError, match=f"built for {system} but the host runs .*uname -m: {machine}"):
        _check(_closure(system=system), host_machine=machine)


def test_a_new_init_is_refused_before_anything_is_changed_unless_it_only_takes_effect_at_boot() -> None:
    new_init = replace(_closure(), init_interface="systemd 3", running_init_interface="systemd 2")
    with pytest.raises(DeployError) as e:
        _check(new_init)
    assert str(e.value) == (
        "the new system's init (systemd 3) is incompatible with the running one's (systemd 2): "
        'switch-to-configuration test would refuse it ("won\'t take effect until you reboot"), so '
        "nothing was changed; deploy it with --test=skip --reboot=if-needed"
    )
    _check(new_init, activate_now=False)  # --test=skip: what it is for
    with pytest.raises(DeployError, match=r"nothing was changed; only at a boot$"):  # a rollback's advice
        checks.check_system(
            new_init, toplevel=SYSTEM, host_machine="x86_64", host="web1", skip=(), boot_only="only at a boot"
        )
    _check(replace(new_init, init_interface="systemd 2"))  # the same init
    _check(replace(new_init, init_interface=None))  # not said: not refused here
    with pytest.raises(DeployError, match=r"running one's \(none\)"):  # as ng: none reads as ""
        _check(replace(new_init, running_init_interface=""))


def _specialised(*names: str, activates: str = "") -> ClosureFacts:
    return replace(_closure(), specialisations=names, activates=activates)


def test_the_specialisation_the_host_runs_is_followed_and_an_asked_one_wins() -> None:
    want = checks.wanted_specialisation
    assert want(None, "foo", activate_now=True) == "foo"
    assert want(None, "", activate_now=True) == ""
    assert want("bar", "foo", activate_now=True) == "bar"
    assert want("", "foo", activate_now=True) == ""  # --specialisation '': the system itself
    assert want(None, "foo", activate_now=False) == ""  # --test=skip: the boot entry is the system


def test_a_host_on_a_specialisation_gets_the_new_systems_or_is_refused() -> None:
    check = checks.check_specialisation
    child = "/nix/store/" + "c" * 32 + "-nixos-system-web1"
    note = check(_specialised("foo", activates=child), wanted="foo", asked=None, running="foo", host="web1")
    assert note is not None and note.startswith("web1 runs the specialisation foo of its system: activating")
    with pytest.raises(DeployError) as e:
        check(_specialised("bar"), wanted="foo", asked=None, running="foo", host="web1")
    assert str(e.value) == (
        "web1 runs the specialisation foo of its system, but the new system has no specialisation foo "
        "(it has: bar), so nothing was changed; pick one with --specialisation NAME, or "
        "--specialisation '' for the new system itself"
    )
    with pytest.raises(
        DeployError, match=r"the new system has no specialisation baz \(--specialisation; it has: none\)"
    ):
        check(_specialised(), wanted="baz", asked="baz", running="", host="web1")
    assert (
        check(_specialised("foo", activates=child), wanted="foo", asked="foo", running="", host="web1")
        is None
    )
    left = check(_specialised("foo"), wanted="", asked="", running="foo", host="web1")
    assert left == "web1 leaves its specialisation foo for the new system itself (--specialisation '')"
    assert check(_specialised(), wanted="", asked=None, running="", host="web1") is None


def test_a_system_without_switch_to_configuration_is_refused() -> None:
    with pytest.raises(DeployError) as e:
        _check(_closure(stc=False))
    assert str(e.value) == (
        f"{SYSTEM} has no bin/switch-to-configuration: it is not a NixOS system "
        "(skip this check with --skip-check=switch-to-configuration)"
    )
    _check(_closure(stc=False), skip=frozenset({"switch-to-configuration"}))


def test_a_system_for_another_platform_is_refused() -> None:
    with pytest.raises(DeployError, match="built for aarch64-linux but the host runs x86_64-linux"):
        _check(_closure(system="aarch64-linux"))
    _check(_closure(system="aarch64-linux"), skip=frozenset({"system-type"}))


def test_a_system_without_sshd_at_boot_is_refused() -> None:
    with pytest.raises(DeployError) as e:
        _check(_closure(sshd_units=frozenset(), sshd_wanted=frozenset()))
    assert str(e.value) == (
        "the new configuration does not have sshd: activating it would lock you out of web1 "
        "(skip this check with --skip-check=sshd if that is intended)"
    )
    with pytest.raises(DeployError, match="has sshd but does not start it at boot"):
        _check(_closure(sshd_wanted=frozenset()))
    _check(_closure(sshd_wanted=frozenset()), skip=frozenset({"sshd"}))


def test_the_checks_say_the_first_problem() -> None:
    with pytest.raises(DeployError, match="switch-to-configuration"):
        _check(_closure(stc=False, system="aarch64-linux", sshd_units=frozenset()))


def test_preflight_a_running_or_unchecked_host_may_be_deployed_to() -> None:
    assert checks.preflight_verdict("running", ()) is None
    assert checks.preflight_verdict(None, ()) is None  # --preflight-check=skip, or a plan


def test_preflight_refuses_a_host_that_is_not_healthy() -> None:
    with pytest.raises(DeployError) as e:
        checks.preflight_verdict("degraded", ("nginx.service", "deploy-flake-x.service"))
    assert str(e.value) == (
        "System is not healthy. State: degraded; failed units: nginx.service, deploy-flake-x.service. "
        "Fix them or deploy with --preflight-check=skip."
    )
    with pytest.raises(DeployError, match="State: starting; failed units: none listed"):
        checks.preflight_verdict("starting", ())
    with pytest.raises(DeployError, match="State: degraded; failed units: none listed"):
        checks.preflight_verdict("degraded", ())


def test_preflight_only_our_own_failed_units_are_a_note_not_a_refusal() -> None:
    units = ("deploy-flake-1.service", "deploy-flake-guard-1.service")
    assert checks.preflight_verdict("degraded", units) == (
        "an earlier deploy's units failed (deploy-flake-1.service, deploy-flake-guard-1.service): "
        "it is finished first"
    )
    with pytest.raises(DeployError):  # not degraded: refused all the same
        checks.preflight_verdict("maintenance", units)


def _gen(n: int) -> str:
    return "/nix/store/" + str(n) * 32 + f"-nixos-system-web1-{n}"


def _facts(generations: tuple[int, ...], current: int | None, running: int | None = None) -> HostFacts:
    """A host with these system generations, the profile at current, running running (current)."""
    shown = current if running is None else running
    return HostFacts(
        uid=0,
        hostname="web1",
        system="x86_64-linux",
        current_system=_gen(shown) if shown is not None else "",
        booted_system="",
        profile_link=f"system-{current}-link" if current is not None else "",
        generations=tuple((n, _gen(n)) for n in generations),
    )


def test_rollback_goes_to_the_generation_before_the_current_one() -> None:
    assert rollback_target(_facts((1, 3, 4, 7), 4), None, "web1") == (_gen(3), 3)
    assert rollback_target(_facts((1, 3, 4, 7), 7), None, "web1") == (_gen(4), 4)


def test_rollback_to_a_named_generation() -> None:
    assert rollback_target(_facts((1, 3, 4, 7), 4), 7, "web1") == (_gen(7), 7)  # forward too
    assert rollback_target(_facts((1, 3, 4, 7), 4), 1, "web1") == (_gen(1), 1)


def test_rollback_without_generations_is_refused() -> None:
    for facts in (_facts((), 4), _facts((1, 2), None)):
        with pytest.raises(DeployError) as e:
            rollback_target(facts, None, "web1")
        assert str(e.value) == "web1 has no generations of /nix/var/nix/profiles/system"


def test_rollback_from_the_oldest_generation_is_refused() -> None:
    with pytest.raises(DeployError) as e:
        rollback_target(_facts((3, 4), 3), None, "web1")
    assert str(e.value) == (
        "generation 3 is the oldest of /nix/var/nix/profiles/system on web1: there is nothing to roll back to"
    )


def test_rollback_to_an_unknown_generation_is_refused() -> None:
    with pytest.raises(DeployError) as e:
        rollback_target(_facts((4, 1, 3), 4), 2, "web1")
    assert str(e.value) == "web1 has no system generation 2 (it has 1, 3, 4)"


def test_rollback_to_the_generation_it_runs_is_refused() -> None:
    with pytest.raises(DeployError) as e:
        rollback_target(_facts((3, 4), 4), 4, "web1")
    assert str(e.value) == "web1 already runs generation 4, the profile's current one: nothing to do"
    # the profile's current generation, while the host runs another system: it is activated
    assert rollback_target(_facts((3, 4), 4, running=3), 4, "web1") == (_gen(4), 4)


def _reboot(
    policy: RebootPolicy, *, test: bool = True, reasons: tuple[str, ...] = (), running: str = SYSTEM
) -> bool:
    return reboot_wanted(policy, test=test, reboot_reasons=reasons, toplevel=SYSTEM, current_system=running)


def test_reboot_always_and_never() -> None:
    assert _reboot(RebootPolicy.ALWAYS)
    assert _reboot(RebootPolicy.ALWAYS, reasons=("kernel",))
    assert not _reboot(RebootPolicy.NEVER, reasons=("kernel",))
    assert not _reboot(RebootPolicy.NEVER, test=False, running=_gen(1))


def test_reboot_if_needed_for_what_the_new_system_changes() -> None:
    assert not _reboot(RebootPolicy.IF_NEEDED)
    assert _reboot(RebootPolicy.IF_NEEDED, reasons=("kernel", "initrd"))


def test_reboot_if_needed_when_the_new_system_is_only_the_boot_entry() -> None:
    # --test=skip: the new system runs once the host boots it
    assert _reboot(RebootPolicy.IF_NEEDED, test=False, running=_gen(1))
    assert not _reboot(RebootPolicy.IF_NEEDED, test=False)  # it runs that system already


class _Events:
    def stage(self, label: str, stage: Stage) -> None: ...
    def note(self, label: str, text: str) -> None: ...
    def line(self, label: str, text: str) -> None: ...
    def finished(self, label: str, result: HostResult) -> None: ...


def test_host_job_is_the_job_the_hosts_options_name(tmp_path: Path) -> None:
    assert set(JOBS) == set(Job)
    options = DeployOptions(flake_dir=tmp_path)
    run = Run(
        flake=Flake(url="", store_path=""),
        options=options,
        ssh=SshSettings(control_dir=tmp_path),
        events=_Events(),
        run_id="r",
        holder="me@here",
        limit=asyncio.Semaphore(1),
    )
    web1 = Destination.parse("web1")
    assert type(host_job(run, web1, 0)) is DeployJob
    job = host_job(run, web1, 3, options=replace(options, job=Job.ROLLBACK))  # an inventory's own
    assert type(job) is RollbackJob
    assert job.deploy_id == "r-3"
    assert type(host_job(replace(run, options=replace(options, job=Job.STATUS)), web1, 0)) is StatusJob
    assert type(host_job(run, web1, 0, options=replace(options, job=Job.PLAN))) is PlanJob


def test_a_reboot_boots_the_new_system_once_unless_unverified_or_the_default_already() -> None:
    """--reboot's one-time boot (verified) is for a system that is not the boot default yet;
    a reboot into the default (--reboot=always of the same system) is a plain reboot."""
    other = "/nix/store/b-nixos-system-web-1"
    assert boots_once(True, unverified=False, toplevel=SYSTEM, default_system=other)
    assert not boots_once(False, unverified=False, toplevel=SYSTEM, default_system=other)
    assert not boots_once(True, unverified=True, toplevel=SYSTEM, default_system=other)
    assert not boots_once(True, unverified=False, toplevel=SYSTEM, default_system=SYSTEM)
