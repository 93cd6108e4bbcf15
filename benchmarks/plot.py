#!/usr/bin/env python
"""Draw the benchmark figures for docs/benchmarks.md from the latest results.

    python benchmarks/plot.py        # needs matplotlib (pip install matplotlib)

Reads ``benchmarks/results/{profile_api,gateway,service}-latest.json`` (whichever
exist) and writes ``docs/benchmarks-profile-api.png``, ``docs/benchmarks-gateway.png``
and ``docs/benchmarks-service.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"


def plot_profile(data: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    backends = [b for b, v in data["backends"].items() if "http" in v]
    names = [n for n in data["backends"][backends[0]]["http"] if not n.startswith("floor")]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        http = data["backends"][backend]["http"]
        p50 = [http[n]["p50"] for n in names]
        p90 = [http[n]["p90"] for n in names]
        xs = [x + i * width for x in range(len(names))]
        ax.bar(xs, p50, width, label=f"{backend} p50")
        ax.scatter(
            xs, p90, marker="_", s=120, color="black", zorder=3, label="p90" if i == 0 else None
        )
    for n, target in data["targets_ms_p50"].items():
        if n in names:
            x = names.index(n)
            ax.hlines(
                target,
                x - 0.2,
                x + 0.2 + width * (len(backends) - 1),
                colors="red",
                linestyles="dashed",
                label="target" if n == "profile" else None,
            )
    ax.set_xticks([x + width * (len(backends) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ms (sequential requests)")
    ax.set_yscale("log")
    rows = data["seed"]["request_rows"]
    ax.set_title(f"Profile REST API with {rows:,} logged calls ({data['machine']['date'][:10]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_gateway(data: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    summary = data["summary"]
    targets = [t for t in ("direct", "lumen", "litellm") if t in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    added = [t for t in targets if t != "direct"]
    metrics = [
        ("added_p50_c1_ms", "+p50 c=1"),
        ("added_p99_c1_ms", "+p99 c=1"),
        ("added_p50_c16_ms", "+p50 c=16"),
        ("added_ttft_p50_ms", "+TTFT p50"),
    ]
    width = 0.8 / max(1, len(added))
    for i, t in enumerate(added):
        xs = [x + i * width for x in range(len(metrics))]
        left.bar(xs, [max(0.01, summary[t][m]) for m, _ in metrics], width, label=t)
    left.set_xticks([x + width * (len(added) - 1) / 2 for x in range(len(metrics))])
    left.set_xticklabels([label for _, label in metrics])
    left.set_yscale("log")
    left.set_ylabel("ms added over a direct call")
    left.axhline(1.5, color="red", linestyle="dashed", label="target 1.5 ms")
    left.legend(fontsize=8)
    left.set_title("Added latency (lower is better)")
    width = 0.8 / len(targets)
    for i, t in enumerate(targets):
        xs = [x + i * width for x in range(2)]
        right.bar(xs, [summary[t]["rps_c16"], summary[t]["rps_c64"]], width, label=t)
    right.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(2)])
    right.set_xticklabels(["concurrency 16", "concurrency 64"])
    right.axhline(1500, color="red", linestyle="dashed", label="target 1,500/s")
    right.set_ylabel("requests/s")
    right.legend(fontsize=8)
    right.set_title("Throughput (higher is better)")
    fig.suptitle(f"Gateway overhead, one core for the gateway ({data['machine']['date'][:10]})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_service(data: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    summary = data["summary"]
    names = [n for n in summary if n != "direct"]
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(13, 4.2))
    xs = range(len(names))
    for ax, key, title, log in (
        (left, "rps_c16", "Requests/s at c=16 (higher is better)", False),
        (mid, "added_p50_c1_ms", "Added p50 at c=1, ms (lower is better)", True),
        (right, "cpu_ms_per_request_c16", "Host CPU ms per call at c=16 (lower is better)", True),
    ):
        values = [max(0.01, summary[n].get(key) or 0) for n in names]
        floors = ("bare proxy", "bare + books", "litellm")
        ax.bar(xs, values, color=["#888" if n in floors else "C0" for n in names])
        if key == "cpu_ms_per_request_c16":
            db = [summary[n].get("db_cpu_ms_per_request_c16") or 0 for n in names]
            ax.bar(xs, db, bottom=values, color="C1", label="+ PostgreSQL")
            ax.legend(fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        if log:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_yscale("log")
            ax.set_ylim(bottom=0.1)
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10)
    if "bare proxy" in summary:
        left.axhline(
            0.85 * summary["bare proxy"]["rps_c16"],
            color="red",
            linestyle="dashed",
            label="85 % of the bare proxy",
        )
        mid.axhline(
            summary["bare proxy"]["added_p50_c1_ms"] + 0.3,
            color="red",
            linestyle="dashed",
            label="bare proxy + 0.3 ms",
        )
        left.legend(fontsize=8)
        mid.legend(fontsize=8)
    fig.suptitle(
        f"The standalone service and its peers, same upstream, same run "
        f"({data['machine']['date'][:10]}, load {data['machine']['loadavg_at_start'][0]:.1f})"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        sys.exit("matplotlib is not installed: pip install matplotlib")
    DOCS.mkdir(exist_ok=True)
    done = []
    profile = HERE / "results" / "profile_api-latest.json"
    if profile.exists():
        plot_profile(json.loads(profile.read_text()), DOCS / "benchmarks-profile-api.png")
        done.append("docs/benchmarks-profile-api.png")
    gateway = HERE / "results" / "gateway-latest.json"
    if gateway.exists():
        plot_gateway(json.loads(gateway.read_text()), DOCS / "benchmarks-gateway.png")
        done.append("docs/benchmarks-gateway.png")
    service = HERE / "results" / "service-latest.json"
    if service.exists():
        plot_service(json.loads(service.read_text()), DOCS / "benchmarks-service.png")
        done.append("docs/benchmarks-service.png")
    print("wrote", ", ".join(done) or "nothing (no results yet)")


if __name__ == "__main__":
    main()
