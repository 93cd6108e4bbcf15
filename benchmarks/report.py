#!/usr/bin/env python
"""Print the Markdown tables of docs/benchmarks.md from results JSON files.

python benchmarks/report.py                      # the -latest.json of each benchmark
python benchmarks/report.py results/gateway-20261127T033254Z.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine(data: dict[str, Any]) -> str:
    m = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    return (
        f"{m['date']} UTC · {m['usable_cores']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB · Python {m['python']} · {versions} · "
        f"lumen-jupyter {m['lumen_jupyter_commit']} (+ working tree) · load average "
        f"{m['loadavg_at_start'][0]:.1f} at start, {m['loadavg_at_end'][0]:.1f} at end"
    )


def profile_tables(data: dict[str, Any]) -> str:
    out = [f"Run: {machine(data)}", ""]
    seed = data["seed"]
    out.append(
        f"Seed: {seed['request_rows']:,} request rows ({seed['status_counts']}), "
        f"{seed['usage_daily_rows']:,} usage_daily rows, {seed['usage_stats_rows']} usage_stats "
        f"rows, {seed['keys']} keys ({seed['revoked_keys']} revoked), {seed['chat_calls']:,} "
        f"chat calls, {seed['first_day']} → {seed['last_day']}; seeded in {seed['seconds']} s."
    )
    out.append("")
    backends = [b for b, v in data["backends"].items() if "http" in v]
    header = "| endpoint | " + " | ".join(
        f"{b} p50 | p90 | p99 | n | ×floor | service p50 | SQL p50" for b in backends
    )
    out.append(header + " | target p50 |")
    out.append("|" + "---|" * (1 + 7 * len(backends) + 1))
    names = list(data["backends"][backends[0]]["http"])
    for name in names:
        cells = [name]
        verdicts = []
        for b in backends:
            http = data["backends"][b]["http"]
            floor = http["floor: jupyter GET /api"]["p50"]
            row = http[name]
            part = data["backends"][b]["breakdown"].get(name)
            service = f"{part['service_ms']['p50']:.1f}" if part else ""
            sql = ""
            if part:
                total = sum(s.get("db_ms_p50") or 0 for s in part["statements"])
                sql = f"{total:.1f}"
            cells += [
                f"{row['p50']:.1f}",
                f"{row['p90']:.1f}",
                f"{row['p99']:.1f}",
                str(row["n"]),
                f"{row['p50'] / floor:.0f}",
                service,
                sql,
            ]
            target = data["targets_ms_p50"].get(name)
            if target is not None:
                verdicts.append("met" if row["p50"] <= target else "**missed**")
        target = data["targets_ms_p50"].get(name)
        tcell = "" if target is None else f"≤ {target:g} ms: {' / '.join(verdicts)}"
        out.append("| " + " | ".join(cells) + f" | {tcell} |")
    return "\n".join(out)


def gateway_tables(data: dict[str, Any]) -> str:
    s = data["summary"]
    out = [f"Run: {machine(data)}; pinning {data['machine'].get('pinning')}", ""]
    out.append(
        "| target | p50 c=1 | added p50 c=1 | added p99 c=1 | added p50 c=16 | "
        "added TTFT p50 | req/s c=16 | req/s c=64 | CPU ms/req (c=16) | "
        "of which event loop / other threads | req/s per core (1000/CPU) |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("direct", "lumen", "litellm"):
        if name not in s:
            continue
        r = s[name]
        cpu = r.get("cpu_ms_per_request_c16")
        if name == "direct":
            cpu_text = f"{r.get('upstream_cpu_ms_per_request_c16', 0):.2f} (the backend)"
            split = ""
            capacity = ""
        else:
            cpu_text = f"{cpu:.2f}"
            split = (
                f"{r.get('loop_thread_cpu_ms_per_request_c16', 0):.2f} / "
                f"{r.get('other_threads_cpu_ms_per_request_c16', 0):.2f}"
            )
            capacity = str(r.get("capacity_rps_per_core_c16", ""))
        out.append(
            f"| {name} | {r['p50_c1_ms']:.2f} | {r['added_p50_c1_ms']:.2f} | "
            f"{r['added_p99_c1_ms']:.2f} | {r['added_p50_c16_ms']:.1f} | "
            f"{r['added_ttft_p50_ms']:.2f} | {r['rps_c16']:.0f} | {r['rps_c64']:.0f} | "
            f"{cpu_text} | {split} | {capacity} |"
        )
    if "lumen_vs_litellm" in s:
        v = s["lumen_vs_litellm"]
        out.append("")
        out.append(
            f"lumen vs LiteLLM: throughput ×{v['rps_c16_ratio']} (c=16), ×{v['rps_c64_ratio']} "
            f"(c=64); added p50 at c=1 ×{v['added_p50_c1_ratio']}, added p99 ×"
            f"{v['added_p99_c1_ratio']}; CPU per request ×{v['cpu_per_request_c16_ratio']}."
        )
    elif data.get("litellm_error"):
        out.append("")
        out.append(f"LiteLLM not measured: {data['litellm_error'][:300]}")
    out.append("")
    out.append("Per round (added p50 at c=1, ms; req/s at c=16):")
    for name in ("lumen", "litellm"):
        if name in s:
            out.append(
                f"- {name}: {s[name]['added_p50_c1_ms_rounds']}; {s[name]['rps_c16_rounds']}"
            )
    out.append("")
    out.append(
        "| event loop of the lumen server | req/s | tick late p50 | p99 | max | "
        "ticks late > 5 ms | longest single callback | longest GC pause (gen2 runs) |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for name, v in data["event_loop"].items():
        t = v["tick_late_ms"]
        out.append(
            f"| {name} | {v['rps']:.0f} | {t['p50']:.2f} | {t['p99']:.2f} | {t['max']:.1f} | "
            f"{v['ticks_late_over_ms']['5']} of {v['ticks']} | {v['max_callback_ms']:.1f} ms "
            f"({v['max_callback']}) | {_gc(v)} |"
        )
    m = data["large_stream"]
    t = m["loop"]["tick_late_ms"]
    out.append(
        f"| one {m['bytes'] / 1e6:.0f} MB stream | - | {t['p50']:.2f} | {t['p99']:.2f} | "
        f"{t['max']:.1f} | {m['loop']['ticks_late_over_ms']['5']} of {m['loop']['ticks']} | "
        f"{m['loop']['max_callback_ms']:.1f} ms | {_gc(m['loop'])} |"
    )
    out.append("")
    out.append(
        f"Large stream: {m['bytes'] / 1e6:.0f} MB ({m['max_tokens']:,} tokens) through lumen in "
        f"{m['seconds']} s = {m['mb_per_s']} MB/s (the backend alone: "
        f"{m['direct_mb_per_s_100k_tokens']} MB/s); gateway RSS {m['rss_before_kb'] / 1024:.1f}"
        f" MiB before, peak {m['rss_peak_kb'] / 1024:.1f} MiB (+{m['rss_growth_kb']} kB)."
    )
    floor = data.get("platform_floor")
    if floor:
        out.append("")
        out.append(
            f"Platform floor, same process and pinning: jupyter_server's own `GET /api` at "
            f"c=16 answers {floor['rps']:.0f} req/s for "
            f"{floor['gateway_cpu_ms_per_request']:.2f} ms of CPU per request."
        )
    d = data["db_path"]
    out.append("")
    out.append(
        f"Database work of one call, in-process: {d['statements_per_call']} statements in "
        f"{d['transactions_per_call']} transactions; through the service "
        f"{d['service_cpu_ms_per_call']} ms CPU; the same SQL replayed on the DB-API "
        f"{d['raw_replay_cpu_ms_per_call']} ms CPU."
    )
    a = data["accounting"]
    out.append(
        f"Accounting: {a['answered_200']} answered calls, {a['counted_on_key']} counted on the "
        f"key ({'all settled' if a['all_settled'] else 'MISMATCH'})."
    )
    p = data.get("profile", {})
    if "error" not in p and p:
        out.append("")
        out.append(
            f"py-spy (--gil, {p['samples']} samples at c=16, {p.get('rps_while_profiled')} "
            f"req/s while profiled). GIL held by: "
            + ", ".join(f"{k} {v}%" for k, v in p["threads_pct"])
        )
        out.append("")
        out.append(
            "Where GIL time goes (leaf-most known layer): "
            + ", ".join(f"{k} {v}%" for k, v in p["categories_pct"][:10])
        )
        out.append("")
        out.append(
            "Top frames by own time: " + ", ".join(f"`{k}` {v}%" for k, v in p["self_pct_top"][:10])
        )
    return "\n".join(out)


def service_tables(data: dict[str, Any]) -> str:
    """The standalone service against the floor, the extension and LiteLLM."""
    out = [f"Run: {machine(data)}", ""]
    pins = data["machine"]["pinning"]
    if isinstance(pins, dict):
        out.append("Pinning: " + "; ".join(f"{who}: CPU {cpus}" for who, cpus in pins.items()))
        out.append("")
    s = data["summary"]
    out.append(
        "| target | CPUs | added p50 c=1 | added p99 c=1 | added TTFT p50 | req/s c=16 "
        "| CPU ms/call c=16 (host) | PostgreSQL ms/call | req/s per core (1000/CPU) "
        "| busy: host cores / others |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in s.items():
        cpu = r.get("cpu_ms_per_request_c16")
        db = r.get("db_cpu_ms_per_request_c16")
        out.append(
            f"| {data['hosts'][name]['label']} | {data['hosts'][name]['cpus']} "
            f"| {r['added_p50_c1_ms']:.2f} | {r['added_p99_c1_ms']:.2f} "
            f"| {r['added_ttft_p50_ms']:.2f} | {r['rps_c16']:,.0f} "
            f"| {'' if cpu is None else f'{cpu:.3f}'} | {'' if db is None else f'{db:.3f}'} "
            f"| {r.get('capacity_rps_per_core_c16', '')} "
            f"| {r.get('host_cpu_busy_c16', '')} / {r['aux_cpu_busy_c16']} |"
        )
    out.append("")
    out.append("Per round (added p50 at c=1, ms; req/s at c=16):")
    for name, r in s.items():
        if name != "direct":
            out.append(f"- {name}: {r['added_p50_c1_ms_rounds']}; {r['rps_c16_rounds']}")
    out.append("")
    for key, v in data["verdicts"].items():
        extra = {k: x for k, x in v.items() if k not in ("value", "target", "met", "rounds")}
        if "rounds" in v:
            extra["per round"] = v["rounds"]
        verdict = (
            f" (target {v['target']}): {'met' if v['met'] else 'missed'}"
            if "target" in v
            else " (no target: for comparison)"
        )
        out.append(f"- {key}: {v['value']}{verdict}{f' {extra}' if extra else ''}")
    accounting = data.get("accounting", {})
    if accounting:
        out.append(
            "- accounting: "
            + "; ".join(
                f"{n} {a['counted_on_key']:,} of {a['answered_2xx']:,} answered calls counted"
                for n, a in accounting.items()
            )
        )
    return "\n".join(out)


def _gc(loop: dict[str, Any]) -> str:
    pauses = loop.get("gc_max_pause_ms")
    if not pauses:
        return "not measured"
    return f"{max(pauses.values()):.1f} ms ({loop['gc_collections']['gen2']})"


def main() -> None:
    paths = [Path(a) for a in sys.argv[1:]] or [
        HERE / "results" / "profile_api-latest.json",
        HERE / "results" / "gateway-latest.json",
        HERE / "results" / "service-latest.json",
    ]
    for path in paths:
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        print(f"<!-- from {path.name} -->")
        if data["benchmark"] == "profile_api":
            print(profile_tables(data))
        elif data["benchmark"] == "service":
            print(service_tables(data))
        else:
            print(gateway_tables(data))
        print()


if __name__ == "__main__":
    main()
