"""The benchmark's record: the machine and versions it ran on, the JSON report of every measurement,
and the table printed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from zoobot.bench.config import BenchmarkConfig, resolve_sizes
from zoobot.bench.measurement import Measurement
from zoobot.core.machine import usable_cores

VERSIONS_OF = ("tensorflow-cpu", "tensorflow", "keras", "mlflow", "numpy", "pillow", "pyarrow")


def environment() -> dict:
    """Machine and versions, for the report's params."""
    from importlib.metadata import PackageNotFoundError, version

    import zoobot

    versions = {"python": platform.python_version(), "zoobot": zoobot.__version__}
    for name in VERSIONS_OF:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    machine = {"cpu": cpu, "cores": usable_cores(), "system": platform.platform(),
               "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    return {"machine": machine, "versions": versions}


def report(measurements: list[Measurement], config: BenchmarkConfig, seconds: float) -> dict:
    return {"mode": config.mode, "seconds": round(seconds, 1), "config": asdict(config),
            "sizes": asdict(resolve_sizes(config)), **environment(),
            "figures": {m.key: m.to_dict() for m in measurements}}


def write_report(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def format_table(measurements: list[Measurement]) -> str:
    rows = [("figure", "value", "spread (min-max)", "target", "pass")]
    for m in measurements:
        value = "-" if m.value is None else f"{m.value:.3g}"
        spread = "-" if m.spread is None else f"{m.spread[0]:.3g}-{m.spread[1]:.3g}"
        verdict = {True: "yes", False: "NO", None: "n/a"}[m.passed]
        rows.append((m.title, value, spread, f"{m.comparison} {m.target:g}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
