"""The --report file: one JSON document describing every host."""

from __future__ import annotations

import json
from pathlib import Path

from deploy_flake.models import HostResult


def write_report(path: Path, results: list[HostResult]) -> None:
    doc = {"hosts": [r.as_json() for r in results]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
