"""Printing the bench's results: the table of figures, the machine and the filesystem."""

from __future__ import annotations

import os
import platform
from typing import Any


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| figure | ours | reference | ratio | x floor | target | met? |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["kind"] == "mib":
            ours, ref, ratio, target = f"{row['ours_mib']:.1f} MiB", "-", "-", f"<= {row['target']} MiB"
        elif row["kind"] == "us":
            ours, ref, ratio = f"{row['ours_s'] * 1e6:.1f} us", "-", "-"
            target = f"<= {row['target']:g} us"
        else:
            ours = fmt_time(row["ours_s"]) + (f" {row['per']}" if row["per"] else "")
            ref = f"{fmt_time(row['ref_s'])} ({row['ref_name']})" if row["ref_s"] is not None else "-"
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
            target = row.get("target_text") or f"<= {row['target']:g}x"  # or e.g. ">= 1.6x", "<= 100 ms"
        x_floor = f"{row['x_floor']:.2f}x" if row["x_floor"] is not None else "-"
        met = "-" if row["met"] is None else "yes" if row["met"] else "**no**"  # None: no target
        lines.append(f"| {row['figure']} | {ours} | {ref} | {ratio} | {x_floor} | {target} | {met} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(l.split(":", 1)[1].strip() for l in handle if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def filesystem(path: str) -> str:
    best = ("?", "?", "")
    with open("/proc/mounts") as handle:
        for line in handle:
            device, point, kind = line.split()[:3]
            if os.path.realpath(path).startswith(point) and len(point) >= len(best[2]):
                best = (device, kind, point)
    return f"{best[1]} on {best[0]} (mounted at {best[2]})"


def print_report(facts: dict[str, Any], rows: list[dict[str, Any]], header: str, floor_line: str,
                 floors: list[float], json_out: str | None) -> None:
    """The closing output of a bench script: where it ran, its floor, a load warning, the table,
    the facts, and (with --json-out) all of it as JSON."""
    import json

    print(f"\n{facts['date']} · {facts['machine']} · {header}")
    print(f"{floor_line}\nEach figure is divided by the floor measured around it "
          f"({fmt_time(min(floors))} to {fmt_time(max(floors))} this run).")
    if max(floors) > 2 * min(floors) or max(facts["load_average_1min_before_after"]) > 1.0:
        print("WARNING: the disk or the CPUs were busy with other work (floor varied "
              f"{max(floors) / min(floors):.1f}x, load average {facts['load_average_1min_before_after']}): "
              "ratios are unreliable; run again on a quiet machine.")
    print()
    print(table(rows))
    print("\nfacts:")
    for key, value in facts.items():
        shown = fmt_time(value) if key.endswith("_s") and isinstance(value, float) else value
        print(f"  {key}: {shown}")
    if json_out:
        with open(json_out, "w") as handle:
            json.dump({"rows": rows, "facts": facts}, handle, indent=2, default=str)
