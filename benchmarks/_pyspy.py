"""A py-spy profile of a gateway under load, summed up by layer and by frame.

Used by ``bench_gateway.py`` (lumen in a Jupyter server) and ``bench_service.py``
(the standalone service); without py-spy installed the profile says so.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _harness as h
from _gateways import Target, body, loadgen


def profile_lumen(
    lumen: Target, seconds: float, cpus: str | None, out_dir: Path, name: str = "py-spy"
) -> dict[str, Any]:
    """py-spy (GIL holders, every thread) on ``lumen`` while it serves calls at c=16.

    The collapsed stacks are kept as ``benchmarks/results/<name>-<utc>.txt``; the
    answer says how many calls were answered meanwhile (``calls_while_profiled``),
    also when py-spy failed."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    assert lumen.pid is not None
    raw = out_dir / "py-spy.txt"
    prof = subprocess.Popen(
        [
            py_spy,
            "record",
            "-p",
            str(lumen.pid),
            "-d",
            str(int(seconds)),
            "-r",
            "250",
            "--threads",
            "--gil",
            "-f",
            "raw",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    load = loadgen(lumen.spec(body=body(), concurrency=16, duration=seconds - 1.5, warmup=50), cpus)
    calls = int(load.get("total_ok") or 0)
    try:
        _out, err = prof.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        prof.kill()
        return {"error": "py-spy did not finish", "calls_while_profiled": calls}
    if prof.returncode != 0 or not raw.exists():
        failure = f"py-spy failed: {err.decode(errors='replace')[-500:]}"
        return {"error": failure, "calls_while_profiled": calls}
    report = summarize_profile(raw.read_text())
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    shutil.copy(raw, h.RESULTS / f"{name}-{stamp}.txt")
    report["rps_while_profiled"] = load["rps"]
    report["calls_while_profiled"] = calls
    return report


CATEGORIES = [
    # (label, substring of a frame) - first match from the leaf up decides a sample's owner
    ("sqlite (C, in statements)", "execute (sqlite3"),
    ("sqlalchemy", "sqlalchemy/"),
    ("lumen core (service, billing, ledger, usage)", "lumen_jupyter/core/"),
    ("lumen store", "lumen_jupyter/store/"),
    ("upstream HTTP client", "gateway/http_client.py"),
    ("lumen gateway", "lumen_jupyter/gateway/"),
    ("lumen server auth/handlers", "lumen_jupyter/server/"),
    ("json", "json/"),
    ("jupyter_server", "jupyter_server/"),
    ("tornado", "tornado/"),
    ("asyncio / executor", "asyncio/"),
    ("concurrent.futures / threading", "concurrent/"),
    ("threading", "threading.py"),
    ("logging", "logging/"),
    ("prometheus metrics", "prometheus_client/"),
]


def summarize_profile(text: str) -> dict[str, Any]:
    """Top self and inclusive costs from py-spy's collapsed stacks (``--threads``)."""
    by_thread: dict[str, int] = defaultdict(int)
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    category: dict[str, int] = defaultdict(int)
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        frames = frames[1:]
        total += count
        name = (
            "event loop (MainThread)"
            if "MainThread" in thread or "main" in thread.lower()
            else (
                "lumen-db executor"
                if "lumen-db" in thread
                else ("accountant" if "accountant" in thread else thread.split(" ")[0])
            )
        )
        by_thread[name] += count
        if frames:
            own[_short(frames[-1])] += count
        for frame in set(_short(f) for f in frames):
            inclusive[frame] += count
        owner = "other"
        for frame in reversed(frames):
            hit = next((label for label, key in CATEGORIES if key in frame), None)
            if hit:
                owner = hit
                break
        category[owner] += count

    def top(d: dict[str, int], n: int) -> list[tuple[str, float]]:
        return [
            (k, round(100 * v / total, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]
        ]

    return {
        "samples": total,
        "threads_pct": top(by_thread, 8),
        "self_pct_top": top(own, 25),
        "inclusive_pct_top": top(
            {
                k: v
                for k, v in inclusive.items()
                if "lumen_jupyter" in k
                or "run_in_executor" in k
                or "commit" in k
                or "json" in k
                or "log_request" in k
                or "_execute_context" in k
            },
            30,
        ),
        "categories_pct": top(category, 20),
    }


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module/path.py)" without the line
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({tail})"
