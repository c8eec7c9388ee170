"""Benchmark: the deployer's memory with long build logs, on lab hosts. Figures, not assertions.

    sudo .venv/bin/python bench/build_log.py [--hosts 32] [--log-mb 50] [--line 120]

Each host builds a system with one derivation that prints LOG_MB of build log (lines of
LINE bytes, like a compiler's); deploy-flake streams every line (shown on stdout, here
/dev/null, and written to the run log) while the deployer's peak RSS (VmHWM), descriptors
and child processes are sampled. The logs are a temporary flake of their own beside the
fixture's (its lib.nix), so the lab's image is not rebuilt for it. Needs root and the lab
(scripts/setup); starts hosts bench01..benchNN and stops them after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import _descendants, _reap, hosts_named  # noqa: E402
from tests.lab import FIXTURE_FLAKE, SSH_CONFIG, lab  # noqa: E402

FLAKE = """{{
  description = "deploy-flake bench: a system whose build prints a long log";
  outputs = {{ self }}:
    let
      fx = import ./lib.nix {{ system = "x86_64-linux"; }};
      noisy = fx.runSh "bench-noisy-dep-1.0" {{ bytes = "{bytes}"; line = "{line}"; nonce = "{nonce}"; }} ''
        # a long build log, in lines like a compiler's (yes: fast, so the deployer is measured)
        yes "$line" | head -c "$bytes" >&2
        mkdir -p "$out"; echo done > "$out/done"
      '';
    in
    {{
      nixosConfigurations.noisy = fx.mkSystem {{ hostName = "noisy"; extraDeps = [ noisy ]; }};
    }};
}}
"""


def make_flake(directory: Path, log_mb: int, line: int) -> None:
    shutil.copy(FIXTURE_FLAKE / "lib.nix", directory / "lib.nix")
    shutil.copytree(FIXTURE_FLAKE / "scripts", directory / "scripts")
    text = "cc -O2 -c src/" + "x" * max(0, line - 20) + ".c"
    (directory / "flake.nix").write_text(
        FLAKE.format(bytes=log_mb * 1_000_000, line=text[: line - 1], nonce=secrets.token_hex(4))
    )


def measure(hosts: list[str], flake: Path, log_dir: Path) -> dict[str, object]:
    argv = [
        sys.executable,
        "-m",
        "deploy_flake",
        "--flake",
        str(flake),
        "--ssh-config",
        str(SSH_CONFIG),
        "--settle-time=0",
        # builds as root, not as the nixbld users: the lab's hosts share one kernel, so each
        # Nix's clean-up of a build user before a build (SIGKILL to all its processes) would
        # kill another host's build running as the same uid
        "--build-cmdline=--option build-users-group ''",
        "--log-dir",
        str(log_dir),
        "--report",
        str(log_dir.parent / "report.json"),
        *[f"nixos://{h}/noisy" for h in hosts],
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    rss_mb, fds, children = 0.0, 0, 0
    while (cpu := _reap(proc, block=False)) is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
            rss_mb = max(rss_mb, int(hwm.split()[1]) / 1024)
            fds = max(fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
            children = max(children, _descendants(proc.pid))
        except (OSError, StopIteration):
            pass
        time.sleep(0.1)
    logged = sum(p.stat().st_size for p in log_dir.rglob("*.log"))
    results = json.loads((log_dir.parent / "report.json").read_text())["hosts"]
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    errors = sorted({str(r["error"])[:200] for r in results if r["error"]})
    return {
        "outcomes": outcomes,
        "errors": errors,
        "exit_code": proc.returncode,
        "wall_s": round(time.monotonic() - t0, 1),
        "deployer_cpu_s": round(cpu, 1),
        "deployer_peak_rss_mib": round(rss_mb, 1),
        "peak_fds": fds,
        "peak_processes": children,
        "run_logs_mb": round(logged / 1e6, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=32)
    ap.add_argument("--log-mb", type=int, default=50, help="build log per host, in MB")
    ap.add_argument("--line", type=int, default=120, help="bytes per build log line")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    hosts = hosts_named(args.hosts)
    lab("build", timeout=1800)
    lab("start", *hosts, timeout=900)
    try:
        lab("reset", *hosts, timeout=900)
        with tempfile.TemporaryDirectory(prefix="deploy-flake-bench-") as tmp:
            flake, logs = Path(tmp) / "flake", Path(tmp) / "logs"
            flake.mkdir()
            make_flake(flake, args.log_mb, args.line)
            figures = measure(hosts, flake, logs)
    finally:
        lab("stop", *hosts, check=False, timeout=600)
    report = {"hosts": args.hosts, "log_mb_per_host": args.log_mb, "line_bytes": args.line, **figures}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
