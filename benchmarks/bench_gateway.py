#!/usr/bin/env python
"""Gateway overhead: direct calls vs lumen-jupyter vs LiteLLM, in one run.

    python benchmarks/bench_gateway.py                   # ~6-8 min on 2 cores

One standalone demo backend (``python -m lumen_jupyter.demo.backend``) is
the upstream of everything; three targets are measured against it, interleaved,
in ``--rounds`` rounds:

* ``direct``  - the demo backend itself;
* ``lumen``   - a ``jupyter server`` subprocess with lumen-jupyter from this
  working tree: a YAML file points model ``demo-free`` at the backend, the demo
  backend trait is off, accounting is on (SQLite, strict billing: every call
  reserves, settles, writes the request log and the counters), and calls carry
  a personal key created through the REST API;
* ``litellm`` - LiteLLM's proxy (``litellm --config ... --num_workers 1``, no
  database) with the backend as an ``openai/...`` model.  It is looked up on PATH
  and in ``~/.cache/lumen-bench/litellm-venv`` (see docs/benchmarks.md); without
  it, the run says why and goes on.

The load generator (``_loadgen.py``, raw asyncio sockets, keep-alive) is its own
process.  With two or more cores the gateways run on core 0 and the backend, the
load generator and this script on core 1 (``taskset``).  Measured: added latency
p50/p99 at concurrency 1 and 16, added time-to-first-token p50 (streaming),
requests/s at concurrency 16 and 64, the gateway's CPU time per request, the
event loop's worst stall under load (a 1 ms ticker and per-callback timing in
the lumen server, see ``_serve_instrumented.py``), peak RSS across one ~100 MB
streamed answer, and a py-spy profile of lumen under load (if py-spy is installed).

Results: ``benchmarks/results/gateway-<utc>.json`` (and ``-latest.json``).  Only
127.0.0.1 is contacted; every process and temporary directory is removed at exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
from _gateways import (
    LITELLM_KEY,
    MODEL,
    Target,
    body,
    find_litellm,
    litellm_version,
    loadgen,
    phase,
    start_demo,
    start_litellm,
    start_lumen,
    write_lumen_config,
)
from _pyspy import profile_lumen

LARGE_REPLY_MIN_TOKENS = 100_000  # the demo backend streams max_tokens exactly from here on
TARGETS_DOC = {
    "added_p50_c1_ms": "<= 1.5",
    "added_ttft_p50_ms": "<= 1.5",
    "rps_c16": ">= 1500 (accounting on)",
    "vs_litellm_rps_c16": ">= 3x",
    "vs_litellm_added_p50_c1": "<= 1/3",
    "stall_ms": "<= 5",
    "stream_rss": "flat",
}


# -- memory across one large stream ------------------------------------------------------


def stream_memory(target: Target, max_tokens: int, cpus: str | None) -> dict[str, Any]:
    assert target.pid is not None
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append((time.perf_counter(), h.memory_kb(target.pid)["VmRSS"]))
            except OSError:
                return
            time.sleep(0.02)

    before = h.memory_kb(target.pid)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = loadgen(
        target.spec(body=body(stream=True, max_tokens=max_tokens), count=1), cpus, timeout=900
    )
    took = time.perf_counter() - t0
    stop.set()
    thread.join()
    after = h.memory_kb(target.pid)
    peak = max((kb for _t, kb in samples), default=before["VmRSS"])
    return {
        "max_tokens": max_tokens,
        "bytes": result["bytes"],
        "status": result["statuses"],
        "seconds": round(took, 2),
        "mb_per_s": round(result["bytes"] / took / 1e6, 2),
        "rss_before_kb": before["VmRSS"],
        "rss_peak_kb": peak,
        "rss_after_kb": after["VmRSS"],
        "rss_growth_kb": peak - before["VmRSS"],
        "hwm_before_kb": before["VmHWM"],
        "hwm_after_kb": after["VmHWM"],
        "samples": len(samples),
        "rss_timeline_kb": [kb for _t, kb in samples[:: max(1, len(samples) // 60)]],
    }


# -- the database part of one call, in-process ---------------------------------------------


def db_path_cost(config: Path, calls: int = 300) -> dict[str, Any]:
    """What the gateway's database work costs per call, without HTTP or threads.

    Runs the service calls the gateway makes for one API-key call (key lookup,
    account, open_call = access + reserve + request row, settle = charge + counters)
    on a fresh SQLite store, then replays the very SQL they sent (captured by SQLite)
    straight through the DB-API: the difference is the Python around the SQL.
    """
    sys.path.insert(0, str(h.REPO))
    from sqlalchemy import event

    from lumen_jupyter.core import billing
    from lumen_jupyter.core.accounts import Identity
    from lumen_jupyter.core.config import load_config_file
    from lumen_jupyter.core.service import LumenService
    from lumen_jupyter.store import Store

    work = h.temp_dir("lumen-bench-db-")
    store = Store(f"sqlite:///{work / 'lumen.db'}")
    store.migrate()
    service = LumenService(store, load_config_file(config), os.urandom(32).hex().encode())
    who = Identity("bench", "bench")
    key = service.create_key(who, "bench")["key"]

    def call() -> None:
        owner = service.key_owner(key)
        assert owner is not None
        account = service.account("bench")
        ctx = billing.CallContext(account_id=account, source="api", key_id=owner.key_id)
        admission = service.calls.open_call(
            who, ctx, MODEL, endpoint="chat", input_tokens=20, max_output_tokens=64
        )
        service.calls.settle(admission, 20, 40)

    def timed(fn: Any, n: int) -> tuple[float, float]:
        for _ in range(20):
            fn()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            fn()
        return ((time.perf_counter() - wall) * 1000 / n, (time.thread_time() - cpu) * 1000 / n)

    service_wall, service_cpu = timed(call, calls)
    # The hot statements run on the DB-API connection, out of SQLAlchemy's sight, so
    # the SQL is captured by SQLite itself (with its parameters filled in).
    captured: list[str] = []

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.set_trace_callback(captured.append)

    def on_checkin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(None)

    event.listen(store.engine, "checkout", on_checkout)
    event.listen(store.engine, "checkin", on_checkin)
    call()
    event.remove(store.engine, "checkout", on_checkout)
    event.remove(store.engine, "checkin", on_checkin)
    raw = store.engine.raw_connection()
    driver = raw.dbapi_connection
    assert driver is not None
    driver.isolation_level = None  # the captured SQL has its own BEGIN and COMMIT

    def replay() -> None:
        for statement in captured:
            cursor = driver.execute(statement)
            if cursor.description is not None:
                cursor.fetchall()

    replay_wall, replay_cpu = timed(replay, calls)
    raw.close()
    store.dispose()
    statements = [s for s in captured if s != "COMMIT"]
    return {
        "calls": calls,
        "statements_per_call": len(statements),
        "transactions_per_call": sum(1 for s in statements if s.startswith("BEGIN")),
        "service_ms_per_call": round(service_wall, 3),
        "service_cpu_ms_per_call": round(service_cpu, 3),
        "raw_replay_ms_per_call": round(replay_wall, 3),
        "raw_replay_cpu_ms_per_call": round(replay_cpu, 3),
        "statements": [" ".join(s.split())[:160] for s in statements],
    }


# -- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n1", type=int, default=400, help="requests at concurrency 1")
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds of each throughput phase"
    )
    parser.add_argument("--ttft-n", type=int, default=150, help="streamed requests per round")
    parser.add_argument("--stream-mb", type=float, default=100.0)
    parser.add_argument("--litellm", default="auto", help="auto, off, or the litellm binary")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    args = parser.parse_args()

    binary, litellm_missing = find_litellm(args.litellm)
    facts = h.machine_facts({"litellm": litellm_version(binary) if binary else None})
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) >= 2 and shutil.which("taskset") is not None
    gw_cpus = str(cores[0]) if pin else None
    aux_cpus = ",".join(str(c) for c in cores[1:]) if pin else None
    if pin:
        os.sched_setaffinity(0, set(cores[1:]))
    facts["pinning"] = {"gateways": gw_cpus, "backend+load+driver": aux_cpus} if pin else "none"
    print(
        f"machine: {facts['usable_cores']} cores, python {facts['python']}, "
        f"load {facts['loadavg_at_start']}, pinning {facts['pinning']}",
        flush=True,
    )

    demo_proc, demo_url, demo_port = start_demo(aux_cpus)
    print(f"demo backend {demo_url}", flush=True)
    work = h.temp_dir("lumen-bench-gateway-")
    config = work / "lumen.yaml"
    write_lumen_config(config, demo_url)
    lumen_server, key = start_lumen(config, gw_cpus)
    print(f"lumen-jupyter on port {lumen_server.port} (pid {lumen_server.pid})", flush=True)

    targets = [
        Target("direct", demo_port, "/v1/chat/completions", {}, None),
        Target(
            "lumen",
            lumen_server.port,
            "/lumen/v1/chat/completions",
            {"Authorization": f"Bearer {key}"},
            lumen_server.pid,
        ),
    ]
    litellm_error = litellm_missing
    if binary:
        try:
            t0 = time.perf_counter()
            proc, port, _log = start_litellm(binary, demo_url, gw_cpus)
            print(
                f"litellm on port {port} (started in {time.perf_counter() - t0:.0f} s)", flush=True
            )
            targets.append(
                Target(
                    "litellm",
                    port,
                    "/v1/chat/completions",
                    {"Authorization": f"Bearer {LITELLM_KEY}"},
                    h.python_child(proc.pid),
                )
            )
        except Exception as exc:  # say why, go on without it
            litellm_error = str(exc)[:2000]
            print(f"litellm unavailable: {litellm_error[:300]}", flush=True)

    # sanity: every target answers the same request
    for target in targets:
        check = loadgen(target.spec(body=body(), count=5, warmup=0), aux_cpus)
        if check["statuses"] != {"200": 5}:
            raise RuntimeError(f"{target.name} does not answer: {check}")
    demo_target = Target("demo backend", demo_port, "", {}, demo_proc.pid)

    phases: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    lumen_ok_sent = 5
    t_start = time.perf_counter()
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds} (load {h.loadavg()})", flush=True)
        plan = [
            ("c1", {"body": body(), "concurrency": 1, "count": args.n1, "warmup": 50}),
            ("c16", {"body": body(), "concurrency": 16, "duration": args.duration, "warmup": 200}),
            ("c64", {"body": body(), "concurrency": 64, "duration": args.duration, "warmup": 200}),
            (
                "stream_c1",
                {
                    "body": body(stream=True),
                    "concurrency": 1,
                    "count": args.ttft_n,
                    "warmup": 20,
                    "ttft": True,
                },
            ),
        ]
        for name, spec in plan:
            for target in targets:
                demo_cpu0 = demo_target.cpu()
                result = phase(target, spec, aux_cpus)
                result["upstream_cpu_s"] = round(demo_target.cpu() - demo_cpu0, 3)
                if result.get("total_ok"):
                    result["upstream_cpu_ms_per_request"] = round(
                        result["upstream_cpu_s"] * 1000 / result["total_ok"], 4
                    )
                phases[name][target.name].append(result)
                if target.name == "lumen":
                    lumen_ok_sent += result.get("total_ok", 0)
                lat = result["latency_ms"]
                extra = f" ttft p50 {result['ttft_ms']['p50']:.2f}" if "ttft_ms" in result else ""
                print(
                    f"  {name:9} {target.name:8} p50 {lat['p50']:7.2f} p99 {lat['p99']:7.2f} "
                    f"ms  {result['rps']:7.0f}/s  cpu/req "
                    f"{result['gateway_cpu_ms_per_request'] or 0:.3f} ms{extra}",
                    flush=True,
                )
    measured_s = time.perf_counter() - t_start

    # The platform's floor: jupyter_server's own simplest authenticated endpoint, in the
    # same process, same pinning - what any extension's request costs before its work.
    floor_target = Target(
        "jupyter GET /api", lumen_server.port, "/api", lumen_server.auth, lumen_server.pid
    )
    floor = phase(
        floor_target, {"concurrency": 16, "duration": args.duration, "warmup": 200}, aux_cpus
    )
    print(
        f"  floor: jupyter GET /api at c=16 {floor['rps']:.0f}/s, cpu/req "
        f"{floor['gateway_cpu_ms_per_request'] or 0:.3f} ms",
        flush=True,
    )

    # event-loop stalls in the lumen server
    lumen = targets[1]
    stalls: dict[str, Any] = {}
    monitor = f"{lumen_server.url}_bench/loop"
    for name, spec in (
        ("c1", {"body": body(), "concurrency": 1, "duration": args.duration, "warmup": 20}),
        ("c16", {"body": body(), "concurrency": 16, "duration": args.duration, "warmup": 100}),
        (
            "stream_c16",
            {"body": body(stream=True), "concurrency": 16, "duration": args.duration, "warmup": 32},
        ),
    ):
        h.http_json("POST", monitor + "?action=start", {}, headers=lumen_server.auth)
        result = loadgen(lumen.spec(**spec), aux_cpus)
        lumen_ok_sent += result.get("total_ok", 0)
        report = h.http_json("GET", monitor, headers=lumen_server.auth)
        h.http_json("POST", monitor + "?action=stop", {}, headers=lumen_server.auth)
        report["rps"] = result["rps"]
        report["latency_ms"] = result["latency_ms"]
        stalls[name] = report
        print(
            f"  stall {name:10} tick late max {report['tick_late_ms']['max']:.2f} ms "
            f"p99 {report['tick_late_ms']['p99']:.2f}; longest callback "
            f"{report['max_callback_ms']:.2f} ms ({report['max_callback']}); "
            f"longest gc pause {max(report['gc_max_pause_ms'].values()):.1f} ms",
            flush=True,
        )

    # accounting check: every answered call was settled on the key's counters
    keys = h.http_json("GET", f"{lumen_server.url}lumen/api/keys", headers=lumen_server.auth)
    counted = keys["keys"][0]["requests"]
    accounting = {
        "answered_200": lumen_ok_sent,
        "counted_on_key": counted,
        "all_settled": counted == lumen_ok_sent,
    }
    print(f"accounting: {lumen_ok_sent} answered, {counted} counted on the key", flush=True)

    # one large stream: calibrate the size on the backend, then through lumen
    calib = loadgen(targets[0].spec(body=body(stream=True, max_tokens=100_000), count=1), aux_cpus)
    max_tokens = max(
        LARGE_REPLY_MIN_TOKENS, int(100_000 * args.stream_mb * 1e6 / max(1, calib["bytes"]))
    )
    direct_mb_s = calib["bytes"] / (calib["latency_ms"]["max"] / 1000) / 1e6
    print(
        f"large stream: {max_tokens:,} tokens for ~{args.stream_mb:g} MB "
        f"(direct: {direct_mb_s:.1f} MB/s)",
        flush=True,
    )
    h.http_json("POST", monitor + "?action=start", {}, headers=lumen_server.auth)
    memory = stream_memory(lumen, max_tokens, aux_cpus)
    memory["loop"] = h.http_json("GET", monitor, headers=lumen_server.auth)
    memory["direct_mb_per_s_100k_tokens"] = round(direct_mb_s, 2)
    h.http_json("POST", monitor + "?action=stop", {}, headers=lumen_server.auth)
    print(
        f"  {memory['bytes'] / 1e6:.0f} MB in {memory['seconds']} s; RSS {memory['rss_before_kb']}"
        f" -> peak {memory['rss_peak_kb']} kB (+{memory['rss_growth_kb']} kB); loop max tick "
        f"late {memory['loop']['tick_late_ms']['max']} ms",
        flush=True,
    )

    profile = profile_lumen(lumen, args.profile_seconds, aux_cpus, work)
    db_cost = db_path_cost(config)
    print(
        f"  db work per call in-process: {db_cost['statements_per_call']} statements in "
        f"{db_cost['transactions_per_call']} transactions; via the service "
        f"{db_cost['service_cpu_ms_per_call']} ms CPU, same SQL raw "
        f"{db_cost['raw_replay_cpu_ms_per_call']} ms CPU",
        flush=True,
    )
    if "error" not in profile:
        print("  profile categories:", profile["categories_pct"][:8], flush=True)

    results: dict[str, Any] = {
        "benchmark": "gateway",
        "command": "python benchmarks/bench_gateway.py " + " ".join(sys.argv[1:]),
        "machine": facts,
        "parameters": vars(args),
        "targets": TARGETS_DOC,
        "litellm_error": litellm_error if len(targets) < 3 else None,
        "phases": phases,
        "platform_floor": floor,
        "summary": summarize(phases),
        "event_loop": stalls,
        "large_stream": memory,
        "accounting": accounting,
        "profile": profile,
        "db_path": db_cost,
        "measured_seconds": round(measured_s, 1),
    }
    results["machine"]["loadavg_at_end"] = h.loadavg()
    path = h.write_results("gateway", results)
    print_summary(results)
    print(f"\nresults: {path}")


def _med(values: list[float]) -> float:
    return round(h.median(values), 3)


def summarize(phases: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per-round differences against the direct call of the same round, then medians."""
    out: dict[str, Any] = {}
    names = list(phases["c1"])
    rounds = len(phases["c1"]["direct"])
    for target in names:
        row: dict[str, Any] = {}
        for ph in ("c1", "c16"):
            p50s, p99s, added50, added99 = [], [], [], []
            for i in range(rounds):
                mine = phases[ph][target][i]["latency_ms"]
                base = phases[ph]["direct"][i]["latency_ms"]
                p50s.append(mine["p50"])
                p99s.append(mine["p99"])
                added50.append(mine["p50"] - base["p50"])
                added99.append(mine["p99"] - base["p99"])
            row[f"p50_{ph}_ms"] = _med(p50s)
            row[f"p99_{ph}_ms"] = _med(p99s)
            row[f"added_p50_{ph}_ms"] = _med(added50)
            row[f"added_p99_{ph}_ms"] = _med(added99)
            row[f"added_p50_{ph}_ms_rounds"] = [round(x, 3) for x in added50]
        ttft = [phases["stream_c1"][target][i]["ttft_ms"]["p50"] for i in range(rounds)]
        base_ttft = [phases["stream_c1"]["direct"][i]["ttft_ms"]["p50"] for i in range(rounds)]
        row["ttft_p50_ms"] = _med(ttft)
        row["added_ttft_p50_ms"] = _med([a - b for a, b in zip(ttft, base_ttft, strict=True)])
        for ph in ("c16", "c64"):
            row[f"rps_{ph}"] = _med([phases[ph][target][i]["rps"] for i in range(rounds)])
            row[f"rps_{ph}_rounds"] = [phases[ph][target][i]["rps"] for i in range(rounds)]
            cpu = [phases[ph][target][i]["gateway_cpu_ms_per_request"] for i in range(rounds)]
            if all(c is not None for c in cpu):
                row[f"cpu_ms_per_request_{ph}"] = _med(cpu)
        cpu1 = [phases["c1"][target][i]["gateway_cpu_ms_per_request"] for i in range(rounds)]
        if all(c is not None for c in cpu1):
            row["cpu_ms_per_request_c1"] = _med(cpu1)
        if target != "direct" and row.get("cpu_ms_per_request_c16"):
            # what one core fully given to the gateway would carry; robust to a shared machine
            row["capacity_rps_per_core_c16"] = round(1000 / row["cpu_ms_per_request_c16"])
            for ph in ("c1", "c16"):
                split = [
                    phases[ph][target][i].get("main_thread_cpu_ms_per_request")
                    for i in range(rounds)
                ]
                if all(x is not None for x in split):
                    row[f"loop_thread_cpu_ms_per_request_{ph}"] = _med(split)
                    row[f"other_threads_cpu_ms_per_request_{ph}"] = _med(
                        [
                            phases[ph][target][i]["other_threads_cpu_ms_per_request"]
                            for i in range(rounds)
                        ]
                    )
        upstream = [
            phases["c16"][target][i].get("upstream_cpu_ms_per_request") for i in range(rounds)
        ]
        if all(x is not None for x in upstream):
            row["upstream_cpu_ms_per_request_c16"] = _med(upstream)
        out[target] = row
    if "litellm" in out and "lumen" in out:
        lum, lit = out["lumen"], out["litellm"]
        out["lumen_vs_litellm"] = {
            "rps_c16_ratio": round(lum["rps_c16"] / lit["rps_c16"], 2),
            "rps_c64_ratio": round(lum["rps_c64"] / lit["rps_c64"], 2),
            "added_p50_c1_ratio": round(lum["added_p50_c1_ms"] / lit["added_p50_c1_ms"], 3)
            if lit["added_p50_c1_ms"] > 0
            else None,
            "added_p99_c1_ratio": round(lum["added_p99_c1_ms"] / lit["added_p99_c1_ms"], 3)
            if lit["added_p99_c1_ms"] > 0
            else None,
            "cpu_per_request_c16_ratio": round(
                lum["cpu_ms_per_request_c16"] / lit["cpu_ms_per_request_c16"], 3
            )
            if lit.get("cpu_ms_per_request_c16")
            else None,
        }
    return out


def print_summary(results: dict[str, Any]) -> None:
    s = results["summary"]
    print("\n(ms, medians over rounds; added = minus the direct call of the same round)")
    print(
        f"{'target':8} {'p50 c1':>7} {'+p50 c1':>8} {'+p99 c1':>8} {'+p50 c16':>9} "
        f"{'+ttft':>7} {'rps c16':>8} {'rps c64':>8} {'cpu/req':>8}"
    )
    for name in ("direct", "lumen", "litellm"):
        if name not in s:
            continue
        r = s[name]
        print(
            f"{name:8} {r['p50_c1_ms']:7.2f} {r['added_p50_c1_ms']:8.2f} "
            f"{r['added_p99_c1_ms']:8.2f} {r['added_p50_c16_ms']:9.2f} "
            f"{r['added_ttft_p50_ms']:7.2f} {r['rps_c16']:8.0f} {r['rps_c64']:8.0f} "
            f"{r.get('cpu_ms_per_request_c16', 0):8.3f}"
        )
    if "lumen_vs_litellm" in s:
        print("lumen vs litellm:", s["lumen_vs_litellm"])
    elif results.get("litellm_error"):
        print("litellm:", results["litellm_error"][:300])


if __name__ == "__main__":
    main()
