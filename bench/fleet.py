"""Benchmark: a fleet deploy on lab hosts, parallel against one host at a time.

Reports wall time, the parallel/serial ratio and the deployer's peak memory.
Figures, not assertions. Needs root and the lab (scripts/setup).

    sudo .venv/bin/python bench/fleet.py [--hosts 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import deploy_flake  # noqa: E402
from tests.lab import lab  # noqa: E402

NAMES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def one_deploy(hosts: list[str], config: str, jobs: int) -> tuple[float, int, float]:
    """Seconds, exit code and the deployer's peak RSS in MiB (run.py's measurement)."""
    sample = deploy_flake(hosts, config, "--jobs", str(jobs), sample_process=True)
    return sample.wall, sample.rc, sample.peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    hosts = NAMES[: args.hosts]
    lab("build", timeout=1800)
    results: dict[str, list[float]] = {"parallel": [], "serial": []}
    rss: list[float] = []
    try:
        for _ in range(args.rounds):
            for mode, jobs in (("parallel", len(hosts)), ("serial", 1)):
                lab("reset", *hosts, timeout=600)
                one_deploy(hosts, "good", jobs)  # warm: source copied and built once per host
                elapsed, rc, peak = one_deploy(hosts, "good-v2", jobs)
                assert rc == 0, f"{mode} deploy failed ({rc})"
                results[mode].append(elapsed)
                rss.append(peak)
    finally:
        lab("stop", *hosts, check=False)
    par, ser = statistics.median(results["parallel"]), statistics.median(results["serial"])
    report = {
        "hosts": len(hosts),
        "rounds": args.rounds,
        "parallel_s": round(par, 2),
        "serial_s": round(ser, 2),
        "serial_over_parallel": round(ser / par, 2),
        "per_host_serial_s": round(ser / len(hosts), 2),
        "deployer_peak_rss_mib": round(max(rss), 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
