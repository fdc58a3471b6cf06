"""The table on stdout and the JSON results file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .measure import median

UNITS = {"s": "{:.3f}", "MB": "{:.2f}", "MB/s": "{:.0f}", "MiB": "{:.1f}"}


def fmt(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    f = UNITS.get(unit, "{:.3g}")
    return f"{f.format(median(values))} [{f.format(min(values))}–{f.format(max(values))}] {unit}"


def verdict(passed) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[passed]


def table(cases) -> str:
    headers = ["case", "metric", "p median [min–max]", "baseline median [min–max]", "ratio", "target",
               "result"]
    rows = []
    for case in cases:
        if case.status != "ok" or not case.metrics:
            rows.append([case.name, "-", "-", "-", "-", "-", case.status.upper()])
            continue
        for i, m in enumerate(case.metrics):
            ratio = "-" if m.ratio is None else f"{m.ratio:.2f}×"
            target = m.target + (f" ({m.value_text})" if m.value_text else "")
            rows.append([case.name if i == 0 else "", m.label, fmt(m.p, m.unit), fmt(m.baseline, m.unit),
                         ratio, target, verdict(m.passed)])
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def notes(cases) -> str:
    out = []
    for case in cases:
        for note in case.notes:
            out.append(f"[{case.name}] {note}")
    return "\n".join(out)


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "hostname_hash": hex(hash(platform.node()) & 0xFFFF)}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["mem_gib"] = round(int(mem[1]) / (1 << 20), 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def git_state(repo: Path) -> dict:
    def git(*args):
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--", "p_tasks", "agent_sh")
    try:
        from p_tasks.agent import wanted_id

        agent = wanted_id()
    except Exception:  # noqa: BLE001 - information only
        agent = None
    return {"commit": git("rev-parse", "HEAD"),
            "p_sources_modified": bool(status) if status is not None else None,
            "modified_files": status.splitlines() if status else [], "agent_id": agent}


def results_json(meta: dict, cases) -> dict:
    counts: dict[str, int] = {}
    for case in cases:
        key = case.status if case.status != "ok" else verdict(case.passed).lower()
        counts[key] = counts.get(key, 0) + 1
    return {
        "schema": 1,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **meta,
        "summary": counts,
        "cases": [c.to_json() for c in cases],
    }


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
