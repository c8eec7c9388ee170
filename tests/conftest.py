"""Lab fixtures: the image once per session, hosts reset before each test that uses them."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

# Each pytest-xdist worker but the first has a pool of nspawn hosts of its own (LAB_POOL,
# lab/lib/common.sh): hosts a worker starts are never another worker's. A session run with
# LAB_POOL=P (beside another one) works on P, its workers on P1, P2, ... Set before tests.lab
# reads it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER is not None and _WORKER != "gw0":
    os.environ["LAB_POOL"] = os.environ.get("LAB_POOL", "") + _WORKER.removeprefix("gw")

from tests.lab import LAB_CMD, LAB_DIR, VM_SSH_CONFIG, Host, lab  # noqa: E402

POOL = ("alpha", "beta", "gamma", "delta")
_dirty: set[str] = set(POOL)  # hosts whose state a test may have changed


# With pytest-xdist (scripts/test runs three workers), tests run in three groups, each on
# one worker, one test after the other: the nspawn hosts' tests in two halves (each worker
# has its own pool of hosts alpha..delta, so the halves run side by side), and the VM's test
# (named test_vm*), the matrix of newer suites, the pure unit test files and a few nspawn
# files beside them.
# The groups are split by the files' times in a full run: 2026-12-07, 732 tests in 43 min,
# the VMs' worker 25.5 min, the nspawn halves 42.6 and 39.6; test_deploy (9 min) and
# test_rollouts (3) then moved to the first worker, on its own pool.
# (xdist's own --dist loadgroup ignores the group marks with pytest 9, so the scheduler is
# ours.) Two pools side by side once lost builds to signal 9. One cause: Nix kills every
# process of a build user before a build, and nixbld1 was one uid in every container; the
# lab's Nix now builds as root (lab/image/nix.conf). The other: a builder whose shell exec'd
# its last command, whose closed stderr Nix took for the builder's end (the fixture's
# builders now end with a builtin; lab/fixture-flake/lib.nix, runSh).
_BESIDE_FILES = frozenset(
    {
        "test_ssh_command.py",
        "test_fleet_run.py",
        "test_cli.py",
        "test_nix.py",
        "test_nix_output.py",
        "test_destination.py",
        "test_agent_protocol.py",
        "test_agent_script_parts.py",
        "test_flows.py",
        "test_connection_identity.py",
        "test_inventory_ssh.py",
        "test_flows_safety.py",
        "test_flows_reboot.py",
        "test_output.py",
        "test_rollout_waves.py",
        "test_host_decisions.py",
        "test_elevate.py",
        # hosts of their own (trixie1, sid1, vm-sid); the sid deployer root they share with
        # test_modern_nix.py is installed once, under a lock (`lab deployer install`)
        "test_matrix.py",
        "test_deploy.py",  # on this worker's own pool (the default one)
        "test_rollouts.py",
    }
)


# The second half of the nspawn hosts' tests, by file (about as long as the rest).
_SECOND_HALF_FILES = frozenset(
    {
        "test_rollout_pairs.py",
        "test_host_safety.py",
        "test_real_nixos.py",
        "test_failing_system.py",
        "test_failed_rollback.py",
        "test_agent_script.py",
        "test_reboots.py",
        "test_lockout.py",
        "test_build_once.py",
        "test_sudo_password.py",
        "test_concurrent_changes.py",
        "test_elevate_lab.py",
        "test_guard.py",  # sid1 and alpha of this worker's own pool
    }
)


def test_group(nodeid: str) -> str:
    path, _, name = nodeid.partition("::")
    file = path.rsplit("/", 1)[-1]
    if file in _BESIDE_FILES or name.startswith("test_vm"):
        return "beside-the-hosts"
    if file in _SECOND_HALF_FILES:
        return "nspawn-hosts-2"
    return "nspawn-hosts"  # the default: a new test file can never share the hosts by mistake


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ByHostPool(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid)

    return ByHostPool(config, log)


# The fixtures that start lab hosts (directly or through another of these): a test that uses
# one gets the `lab` mark, so that `pytest -m "not lab"` runs only the tests that need none.
LAB_FIXTURES = frozenset({"lab_pool", "hosts", "suite_target", "modern_deployer", "sid_vm", "sid"})


def _direct_params(item: pytest.Item) -> set[str]:
    """The names ITEM's own @pytest.mark.parametrize gives values to (not fixtures of that name)."""
    names: set[str] = set()
    for mark in item.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs["argnames"]
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",") if n.strip()]
        indirect = mark.kwargs.get("indirect", False)
        names.update(n for n in argnames if not (indirect is True or n in (indirect or ())))
    return names


@pytest.hookimpl(tryfirst=True)  # before -m selects: the mark must be there when it does
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ())) - _direct_params(item)
        if used & LAB_FIXTURES:
            item.add_marker(pytest.mark.lab)


@pytest.hookimpl(trylast=True)  # after -m and -k: only what will run
def pytest_collection_finish(session: pytest.Session) -> None:
    items = session.items
    if session.config.option.collectonly:  # nothing runs: nothing to start
        return
    # The newer suites' images and the sid deployer root (minutes when cold) are built in
    # the background by the first worker while the tests run: their tests come later in the
    # run, and wait for a build under way (`lab build` on its lock; modern_deployer retries).
    if _WORKER not in (None, "gw0"):
        return
    used = {f for item in items for f in getattr(item, "fixturenames", ())}
    steps = [step for step in _PREBUILD if any(f in used for f in _PREBUILD[step])]
    if os.geteuid() == 0 and steps:
        global _prebuild
        LAB_DIR.mkdir(parents=True, exist_ok=True)
        with (LAB_DIR / "prebuild.log").open("w") as log:
            _prebuild = subprocess.Popen(
                ["bash", "-c", " && ".join(shlex.join([str(LAB_CMD), *step]) for step in steps)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


# Each host pool's share of the run (setup, call and teardown of its tests), summed by the
# controller from the reports: the run lasts as long as its busiest worker, so this is what
# to balance (_BESIDE_FILES, _SECOND_HALF_FILES) when the suite grows.
_GROUP_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    group = test_group(report.nodeid)
    _GROUP_SECONDS[group] = _GROUP_SECONDS.get(group, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _WORKER is None and _GROUP_SECONDS:
        shares = ", ".join(f"{g} {s / 60:.1f} min" for g, s in sorted(_GROUP_SECONDS.items()))
        terminalreporter.write_line(f"time per host pool: {shares}")


def _may_have_used_the_lab(session: pytest.Session) -> bool:
    """Whether this process's tests may have started lab hosts. A run of `-m "not lab"` did not,
    and must not stop the hosts and the VM of a lab run going on beside it (the same pool)."""
    if session.config.option.collectonly:
        return False
    if session.config.pluginmanager.has_plugin("dsession"):
        return True  # xdist's controller: it ran no test, its workers did
    return any(item.get_closest_marker("lab") for item in session.items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _prebuild is not None:  # no build outlives the session
        _prebuild.wait(timeout=1800)
    if os.geteuid() != 0 or not LAB_DIR.exists() or not _may_have_used_the_lab(session):
        return
    # Each process stops the hosts of its own pool, never another session's (`lab stop --all`
    # would stop every pool's); the sid VM's fixture stops the VM it booted.
    lab("stop", "--pool", check=False, timeout=600)


@pytest.fixture(scope="session")
def lab_pool() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("lab hosts need root (systemd-nspawn, network namespaces)")
    lab("build", timeout=1800)
    yield


class PoolHosts(dict[str, Host]):
    """The pool's hosts as a test gets them; remembers the ones it looked up (a test that
    iterates over them looks up all)."""

    def __init__(self) -> None:
        super().__init__((name, Host(name)) for name in POOL)
        self.used: set[str] = set()

    def __getitem__(self, name: str) -> Host:
        self.used.add(name)
        return super().__getitem__(name)

    def values(self):  # type: ignore[no-untyped-def]  # dict's view type, every host used
        self.used.update(POOL)
        return super().values()

    def items(self):  # type: ignore[no-untyped-def]
        self.used.update(POOL)
        return super().items()


# What a test can change on a host without looking it up (a deploy to it by name, an
# inventory's --on): its systems, profile, boot entries, EFI variables, a transaction or its
# guard, its health. Read over one login; a host that does not answer is not clean.
_STATE = (
    "readlink -f /run/current-system /run/booted-system /nix/var/nix/profiles/system; "
    "ls /nix/var/nix/profiles /boot/loader/entries /var/lib/fixture-efivars; "
    "cat /boot/loader/loader.conf; ls -a /run/deploy-flake /etc/systemd/system.control 2>/dev/null; "
    "systemctl list-units --all --plain --no-legend 'deploy-flake*'; systemctl is-system-running --wait"
)
_clean_state: dict[str, str] = {}  # each host's, read once after a reset


def _state(name: str) -> str | None:
    done = Host(name).ssh(_STATE, check=False, timeout=30)
    return done.stdout if done.returncode == 0 else None


@pytest.fixture
def hosts(lab_pool: None) -> Iterator[dict[str, Host]]:
    """Clean lab hosts alpha, beta, gamma and delta, running the initial generation.

    After the test, the hosts it looked up are reset before the next test that uses them; the
    others too unless their state is still the clean one (a reset costs seconds of CPU per
    host; most tests change one host)."""
    if _dirty:
        lab("reset", *sorted(_dirty), timeout=300)
        for name in _dirty - _clean_state.keys():
            _clean_state[name] = _state(name) or ""
        _dirty.clear()
    pool = PoolHosts()
    yield pool
    _dirty.update(pool.used)
    _dirty.update(n for n in POOL if n not in pool.used and _state(n) != _clean_state.get(n))


# ------------------------------------------------------------------ newer Debian suites
# Hosts of the newer suites' images (`lab build --suite S`), one per suite, started on
# first use and reset before each test that uses them. Their names are theirs alone: a
# host remembers its suite, and alpha..delta stay bookworm.
SUITE_HOSTS = {"trixie": "trixie1", "sid": "sid1"}
# What pytest_collection_modifyitems builds early, in this order (trixie's hosts' tests
# come first), when a test uses one of these fixtures.
_PREBUILD = {
    ("build", "--suite", "trixie"): ("suite_target",),
    ("build", "--suite", "sid"): ("suite_target", "sid_vm"),
    ("deployer", "build", "sid"): ("suite_target", "modern_deployer"),
}
_prebuild: subprocess.Popen[bytes] | None = None
_built: set[str] = set()


def suite_host(suite: str) -> Host:
    """A clean host of SUITE's image (the image is built on first use: minutes when cold)."""
    if os.geteuid() != 0:
        pytest.skip("lab hosts need root (systemd-nspawn, network namespaces)")
    if suite not in _built:
        lab("build", "--suite", suite, timeout=1800)
        _built.add(suite)
    name = SUITE_HOSTS[suite]
    lab("reset", "--suite", suite, name, timeout=300)
    return Host(name)


DEPLOYER_SUITE, DEPLOYER_NIX = "sid", "2.34"


@pytest.fixture(scope="session")
def modern_deployer() -> Iterator[list[str]]:
    """deploy-flake's argv inside the sid deployer root (Nix 2.34; built and the project
    installed once per session)."""
    if os.geteuid() != 0:
        pytest.skip("the deployer root needs root (chroot)")
    deadline = time.monotonic() + 1800
    while True:  # the background build of pytest_collection_modifyitems may hold the root
        built = lab("deployer", "build", DEPLOYER_SUITE, check=False, timeout=1800)
        if built.returncode == 0:
            break
        assert "is in use" in built.stderr and time.monotonic() < deadline, built.stderr
        time.sleep(5)
    lab("deployer", "install", DEPLOYER_SUITE, timeout=900)
    version = subprocess.run(
        [str(LAB_CMD), "deployer", "run", DEPLOYER_SUITE, "--", "nix", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"nix (Nix) {DEPLOYER_NIX}" in version, version
    yield [str(LAB_CMD), "deployer", "run", DEPLOYER_SUITE, "--", "/opt/deploy-flake/bin/deploy-flake"]


# The sid VM (systemd 262 under a real kernel, the suite's only VM): its own name and port, so
# that a second lab beside the default one (its own DEPLOY_FLAKE_LAB) can have one too.
SID_VM_NAME, SID_VM_PORT = "vm-sid", os.environ.get("LAB_TEST_SID_VM_PORT", "2312")


@pytest.fixture
def sid_vm() -> Iterator[Host]:
    """A clean VM of the sid image, booted for the test (TCG: about a minute) and stopped right
    after it: an idle VM under TCG still costs CPU the other workers' tests wait for."""
    if os.geteuid() != 0:
        pytest.skip("the lab VM needs root")
    lab("build", "--suite", "sid", timeout=1800)
    lab("vm", "reset", "--suite", "sid", SID_VM_NAME, SID_VM_PORT, timeout=900)
    yield Host(SID_VM_NAME, VM_SSH_CONFIG)
    lab("vm", "stop", SID_VM_NAME, check=False)
