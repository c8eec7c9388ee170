"""deploy-flake's benchmark on lab hosts: figures, not assertions.

    sudo .venv/bin/python bench/run.py [--rounds 5] [--fleet 1,4,8,16,32] [--json FILE]

Side by side, in one run:
 1. overhead on one host: deploy-flake (--settle-time=0) against the bare sequence, the same
    Nix and systemd commands typed by hand over one multiplexed SSH connection (flake
    archive, nix build, switch-to-configuration test, nix-env --set, switch-to-configuration
    boot), for a changed configuration (good <-> good-v2) and an unchanged one; per-stage
    times from deploy-flake's JSON events; the default 5 s settle time apart.
 2. fleet scaling: 1..32 hosts at once, wall time and ratio to one host, beside the bare
    sequence's own ratio; the CPU time each host's deploy costs (the lab's hosts run on this
    machine: with every core busy, the wall time follows the CPU time), and the deployer's share.
    With every core busy nothing can go faster than the CPU work divided by the cores: the
    "CPU floor" (hosts x CPU per host / cores, at least the one-host time) and how close
    each run comes to it show whether anything but the cores holds the hosts back.
 3. SSH connections per host per deploy: sshd's accepted logins on the host.
 4. `deploy-flake --help` wall time; the deployer's peak RSS, file descriptors and
    processes with 32 hosts.
Needs root and the lab (scripts/setup); starts hosts bench01..benchNN and stops them after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab import FIXTURE_FLAKE, SSH_CONFIG, Host, lab  # noqa: E402

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]
TOPLEVEL = "nixosConfigurations.{}.config.system.build.toplevel"
CONFIGS = ("good", "good-v2")


def hosts_named(n: int) -> list[str]:
    return [f"bench{i:02d}" for i in range(1, n + 1)]


# ------------------------------------------------------------------ deploy-flake
@dataclass
class Sample:
    wall: float
    rc: int
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds, summed over hosts
    peak_rss_mb: float = 0.0
    peak_fds: int = 0
    peak_children: int = 0
    cpu_s: float = 0.0  # the whole machine's (hosts and deployer) busy CPU time during the run
    deployer_cpu_s: float = 0.0  # the deployer's own and its processes'


def busy_cpu_s() -> float:
    """CPU time the machine spent busy so far (lab hosts included: they run on it)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait


def _reap(proc: subprocess.Popen[str], *, block: bool) -> float | None:
    """Waits for proc (or looks whether it ended): its CPU time and its processes', None while
    it runs. (A look at the whole process table, as ps takes, would cost more CPU than a host.)"""
    pid, status, ru = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def _descendants(pid: int) -> int:
    """How many processes pid has below it (the kernel's list of each one's children)."""
    todo, seen = [pid], 0
    while todo:
        p = todo.pop()
        try:
            kids = [
                int(c)
                for t in os.listdir(f"/proc/{p}/task")
                for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()
            ]
        except OSError:
            continue
        seen += len(kids)
        todo.extend(kids)
    return seen


def deploy_flake(hosts: list[str], config: str, *extra: str, sample_process: bool = False) -> Sample:
    argv = [
        sys.executable,
        "-m",
        "deploy_flake",
        "--flake",
        str(FIXTURE_FLAKE),
        "--ssh-config",
        str(SSH_CONFIG),
        "--instrumentation=json",
        "--log-dir",
        "/tmp/deploy-flake-bench-logs",
        *extra,
        *[f"nixos://{h}/{config}" for h in hosts],
    ]
    events = tempfile.TemporaryFile("w+")  # a pipe would fill up while we sample the process
    t0, cpu0 = time.monotonic(), busy_cpu_s()
    proc = subprocess.Popen(argv, stdout=events, stderr=subprocess.DEVNULL, text=True)
    sample = Sample(0.0, 0)
    own = None
    if sample_process:
        while (own := _reap(proc, block=False)) is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
                sample.peak_rss_mb = max(sample.peak_rss_mb, int(hwm.split()[1]) / 1024)
                sample.peak_fds = max(sample.peak_fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
                sample.peak_children = max(sample.peak_children, _descendants(proc.pid))
            except (OSError, StopIteration):
                pass
            time.sleep(0.05)
    if own is None:
        own = _reap(proc, block=True)
    sample.wall = time.monotonic() - t0
    sample.cpu_s, sample.deployer_cpu_s = busy_cpu_s() - cpu0, own or 0.0
    events.seek(0)
    out = events.read()
    events.close()
    sample.rc = proc.returncode
    last: dict[str, tuple[str, float]] = {}
    for line in out.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "stage":
            host = ev["host"]
            if host in last:
                stage, since = last[host]
                sample.stages[stage] = sample.stages.get(stage, 0.0) + ev["time"] - since
            last[host] = (ev["stage"], ev["time"])
    return sample


# ------------------------------------------------------------------ the bare sequence
async def _sh(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: {err.decode()[-400:]}")
    return out.decode()


async def bare_one(host: str, config: str, control_dir: Path, *, fresh_login: bool = False) -> None:
    """What an operator types: one multiplexed connection, the five Nix and systemd steps.
    fresh_login: and, after the activation, one new SSH login (the floor of a lockout check)."""
    cp = control_dir / f"cm-{host}"
    ssh = ["ssh", "-F", str(SSH_CONFIG), "-o", f"ControlPath={cp}"]

    async def on_host(*argv: str) -> str:
        return await _sh([*ssh, host, shlex.join(argv)])

    await _sh([*ssh, "-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-f", "-N", host])
    try:
        env = {"NIX_SSHOPTS": f"-F {SSH_CONFIG} -o ControlPath={cp}"}
        archive = [*NIX, "flake", "archive", "--json", "--to", f"ssh-ng://{host}", f"path:{FIXTURE_FLAKE}"]
        src = json.loads(await _sh(archive, env))["path"]
        installable = f"path:{src}#{TOPLEVEL.format(config)}"
        built = await on_host(*NIX, "build", "--json", "--out-link", "/tmp/bench-result", installable)
        top = json.loads(built)[0]["outputs"]["out"]
        await on_host(f"{top}/bin/switch-to-configuration", "test")
        if fresh_login:
            await _sh(["ssh", "-F", str(SSH_CONFIG), "-o", "ControlPath=none", host, "true"])
        await on_host("nix-env", "-p", "/nix/var/nix/profiles/system", "--set", top)
        await on_host(f"{top}/bin/switch-to-configuration", "boot")
    finally:
        await _sh([*ssh, "-O", "exit", host])


def bare(hosts: list[str], config: str, *, fresh_login: bool = False) -> float:
    control = Path("/tmp/deploy-flake-bench-cm")
    control.mkdir(exist_ok=True)

    async def all_hosts() -> None:
        await asyncio.gather(*(bare_one(h, config, control, fresh_login=fresh_login) for h in hosts))

    t0 = time.monotonic()
    asyncio.run(all_hosts())
    return time.monotonic() - t0


# ------------------------------------------------------------------ measurements
def accepted_logins(host: str, since: float, until: float) -> int:
    """sshd's accepted logins on host between two moments (whole seconds: keep a second clear
    of other logins on both sides; this count's own login comes after `until`)."""
    window = f"--since=@{int(since)} --until=@{int(until) + 1}"
    return int(
        Host(host).out(
            f"journalctl -q {window} -t sshd -t sshd-session --no-pager | grep -c 'Accepted ' || true"
        )
    )


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def overhead(host: str, rounds: int) -> dict[str, object]:
    for config in CONFIGS:  # warm: the flake copied, both systems built
        assert deploy_flake([host], config, "--settle-time=0").rc == 0
    changed_df: list[float] = []
    changed_bare: list[float] = []
    changed_bare_login: list[float] = []
    unchanged_df: list[float] = []
    unchanged_bare: list[float] = []
    settle_default: list[float] = []
    stages: list[dict[str, float]] = []
    logins: list[int] = []
    config = CONFIGS[1]
    for _ in range(rounds):
        config = CONFIGS[0] if config == CONFIGS[1] else CONFIGS[1]
        changed_bare.append(bare([host], config))
        unchanged_bare.append(bare([host], config))
        config = CONFIGS[0] if config == CONFIGS[1] else CONFIGS[1]
        changed_bare_login.append(bare([host], config, fresh_login=True))
        config = CONFIGS[0] if config == CONFIGS[1] else CONFIGS[1]
        time.sleep(1.1)
        since = time.time()
        s = deploy_flake([host], config, "--settle-time=0")
        until = time.time()
        time.sleep(1.1)
        logins.append(accepted_logins(host, since, until))
        assert s.rc == 0
        changed_df.append(s.wall)
        stages.append(s.stages)
        s = deploy_flake([host], config, "--settle-time=0")
        assert s.rc == 0
        unchanged_df.append(s.wall)
    for _ in range(max(1, rounds // 2)):
        config = CONFIGS[0] if config == CONFIGS[1] else CONFIGS[1]
        settle_default.append(deploy_flake([host], config).wall)
    stage_names = sorted({k for st in stages for k in st})
    return {
        "changed": {
            "deploy_flake_s": median(changed_df),
            "bare_s": median(changed_bare),
            "bare_fresh_login_s": median(changed_bare_login),
        },
        "unchanged": {"deploy_flake_s": median(unchanged_df), "bare_s": median(unchanged_bare)},
        "default_settle_s": median(settle_default),
        "stages_s": {k: median([st.get(k, 0.0) for st in stages]) for k in stage_names},
        "ssh_logins_per_deploy": median([float(x) for x in logins]),
    }


def fleet(sizes: list[int], rounds: int) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    config = CONFIGS[1]
    for n in sizes:
        hosts = hosts_named(n)
        for c in CONFIGS:  # warm
            assert deploy_flake(hosts, c, "--settle-time=0").rc == 0
        walls: list[float] = []
        bares: list[float] = []
        cpus: list[float] = []
        deployer_cpus: list[float] = []
        bare_cpus: list[float] = []
        peak = Sample(0, 0)
        for _ in range(rounds):
            config = CONFIGS[0] if config == CONFIGS[1] else CONFIGS[1]
            cpu0 = busy_cpu_s()
            bares.append(bare(hosts, config))
            bare_cpus.append((busy_cpu_s() - cpu0) / n)
            config = CONFIGS[0] if config == CONFIGS[1] else CONFIGS[1]
            s = deploy_flake(hosts, config, "--settle-time=0", sample_process=True)
            assert s.rc == 0, f"{n} hosts: exit {s.rc}"
            walls.append(s.wall)
            cpus.append(s.cpu_s / n)
            deployer_cpus.append(s.deployer_cpu_s / n)
            peak.peak_rss_mb = max(peak.peak_rss_mb, s.peak_rss_mb)
            peak.peak_fds = max(peak.peak_fds, s.peak_fds)
            peak.peak_children = max(peak.peak_children, s.peak_children)
        rows.append(
            {
                "hosts": n,
                "deploy_flake_s": median(walls),
                "bare_s": median(bares),
                "cpu_per_host_s": median(cpus),
                "deployer_cpu_per_host_s": median(deployer_cpus),
                "bare_cpu_per_host_s": median(bare_cpus),
                "peak_rss_mb": peak.peak_rss_mb,
                "peak_fds": peak.peak_fds,
                "peak_processes": peak.peak_children,
            }
        )
    one = rows[0]
    for r in rows:
        r["ratio"] = r["deploy_flake_s"] / one["deploy_flake_s"]
        r["bare_ratio"] = r["bare_s"] / one["bare_s"]
    return rows


def help_time(rounds: int) -> float:
    entry = Path(sys.executable).parent / "deploy-flake"
    argv = [str(entry), "--help"] if entry.exists() else [sys.executable, "-m", "deploy_flake", "--help"]
    walls = []
    for _ in range(rounds):
        t0 = time.monotonic()
        subprocess.run(argv, capture_output=True, check=True)
        walls.append(time.monotonic() - t0)
    return median(walls)


def report(results: dict[str, object]) -> str:
    o = results["overhead"]
    assert isinstance(o, dict)
    lines = [
        f"deploy-flake benchmark, {results['date']}, {results['machine']}",
        "",
        "| one host, --settle-time=0 | deploy-flake | bare sequence | ratio |",
        "|---|---|---|---|",
    ]
    for kind in ("changed", "unchanged"):
        d = o[kind]
        lines.append(
            f"| {kind} configuration | {d['deploy_flake_s']:.2f} s | {d['bare_s']:.2f} s | "
            f"{d['deploy_flake_s'] / d['bare_s']:.2f}x |"
        )
    c = o["changed"]
    lines += [
        "",
        f"bare sequence plus one fresh SSH login after the activation (the floor of a lockout "
        f"check), changed configuration: {c['bare_fresh_login_s']:.2f} s; deploy-flake's ratio to it: "
        f"{c['deploy_flake_s'] / c['bare_fresh_login_s']:.2f}x",
        f"default --settle-time=5s, changed configuration: {o['default_settle_s']:.2f} s",
        "stages (changed configuration): " + ", ".join(f"{k} {v:.2f} s" for k, v in o["stages_s"].items()),
        f"SSH logins per host per deploy: {o['ssh_logins_per_deploy']:.0f}",
        "",
        "| hosts | deploy-flake | ratio to 1 host | bare | bare ratio | CPU per host (deployer's) "
        "| bare CPU per host | CPU floor: deploy-flake, bare | peak RSS | peak fds | peak processes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fleet_rows = results["fleet"]
    assert isinstance(fleet_rows, list)
    cores = results.get("cores", os.cpu_count() or 1)
    assert isinstance(cores, int)
    one = fleet_rows[0]
    for r in fleet_rows:
        floor, bare_floor = (
            max(one[wall], r["hosts"] * r[cpu] / cores)
            for wall, cpu in (("deploy_flake_s", "cpu_per_host_s"), ("bare_s", "bare_cpu_per_host_s"))
        )
        lines.append(
            f"| {r['hosts']} | {r['deploy_flake_s']:.2f} s | {r['ratio']:.2f}x | {r['bare_s']:.2f} s | "
            f"{r['bare_ratio']:.2f}x | {r['cpu_per_host_s']:.2f} s ({r['deployer_cpu_per_host_s']:.2f} s) | "
            f"{r['bare_cpu_per_host_s']:.2f} s | {floor:.2f} s ({floor / r['deploy_flake_s']:.0%} of it), "
            f"{bare_floor:.2f} s ({bare_floor / r['bare_s']:.0%}) | {r['peak_rss_mb']:.0f} MiB | "
            f"{r['peak_fds']} | {r['peak_processes']} |"
        )
    lines += ["", f"deploy-flake --help: {results['help_s']:.3f} s"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fleet", default="1,4,8,16,32", help="host counts, comma-separated")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sizes = sorted({int(x) for x in args.fleet.split(",") if x})
    lab("build", timeout=1800)
    hosts = hosts_named(max(sizes))
    lab("start", *hosts, timeout=900)
    nix_version = subprocess.run([*NIX, "--version"], capture_output=True, text=True, check=False)
    try:
        results: dict[str, object] = {
            "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count() or 1,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
            f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
            f"nspawn lab hosts, {nix_version.stdout.strip()}",
            "help_s": help_time(max(5, args.rounds)),
            "overhead": overhead(hosts[0], args.rounds),
            "fleet": fleet(sizes, max(1, min(3, args.rounds))),
        }
    finally:
        lab("stop", *hosts, check=False, timeout=600)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
