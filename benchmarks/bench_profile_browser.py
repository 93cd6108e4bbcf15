#!/usr/bin/env python
"""First paint of the profile in Chromium: the notebook widget and the Lab panel.

    python benchmarks/bench_profile_browser.py          # ~2-3 min with the 1M-call seed

The account is the profile API benchmark's seed (``bench_profile_api.py``): by default
1,000,000 logged calls, 1,000 keys and 200 models in a SQLite store. A JupyterLab
subprocess (this working tree's server extension, widget bundle and Lab extension)
serves it; Playwright drives Debian's Chromium. Measured, ``--runs`` times each:

- ``widget_warm``: a cell running ``Profile()`` in a kernel that has already shown one;
  from the execute request to the view painted (skeleton), to every part filled in
  (``aria-busy=false`` with the key and model rows present: the first screen) and to
  the whole key and model lists in (``complete``; each run waits for it);
- ``widget_new_kernel``: the same as the first cell of a new kernel (restart first);
- ``panel``: the Lab panel, from the click on the status bar meter to painted and
  filled in (the panel is closed in between).

Times are taken in the page (``performance.now()``), from the moment the request is
sent (Ctrl+Enter in the selected cell / a mouse click at the meter's place) to the
animation frame after the DOM state is reached; also from the input event itself
(``*_from_input``). Until 2026-12-04 the cell and the meter were clicked through their
locators inside the measured time, and Playwright first waits for an element to be
visible and stable (two animation frames at least, far more on a busy machine). For
the panel the performance marks ``lumen:*`` of the Lab extension (requests answered,
first screen, whole lists) are kept with each run, from the input event.
Results: ``benchmarks/results/profile_browser-<utc>.json`` (and ``-latest.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import bench_profile_api as api

CHROMIUM = "/usr/bin/chromium"
TARGETS_MS = {"widget_warm": 150, "widget_new_kernel": 400, "panel": 150}

# Resolves when ``selector`` matches, at the next animation frame: the time it is painted.
WAIT_JS = """([selector, started]) => new Promise((resolve, reject) => {
  setTimeout(() => reject(new Error('not seen in 60 s: ' + selector)), 60000);
  const check = () => {
    if (document.querySelector(selector)) {
      requestAnimationFrame(() => resolve(performance.now() - started));
      return true;
    }
    return false;
  };
  if (check()) return;
  const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
  observer.observe(document.body, {
    childList: true, subtree: true, attributes: true, attributeFilter: ['aria-busy']
  });
})"""

FILLED = (
    "{root} .lumen-profile[aria-busy='false']"
    ":has(.lumen-keys-table tr[data-row-key]):has(.lumen-models-table tr[data-row-key])"
)
# The whole key and model lists are in: the tables wait for nothing any more. Each run
# waits for this too, so that no list still arriving weighs on the next run.
COMPLETE = (
    "{root} .lumen-profile[aria-busy='false']"
    ":has(.lumen-keys-table:not([aria-busy='true']) tr[data-row-key])"
    ":has(.lumen-models-table:not([aria-busy='true']) tr[data-row-key])"
)


def seed_store(work: Path, args: argparse.Namespace) -> tuple[str, Path, Path]:
    models = api.make_models(args.models)
    config = work / "lumen.yaml"
    api.write_config(config, models)
    secret_file = api.write_secret(work)
    seed = api.Seed(
        rows=args.rows,
        days=args.days,
        models=models,
        keys=args.keys,
        secret=secret_file.read_bytes().strip(),
        now=datetime.now(timezone.utc),
    )
    url = api.seeded_sqlite(work / "lumen.db", seed)
    return url, config, secret_file


def start_lab(url: str, config: Path, secret_file: Path) -> tuple[Any, str]:
    home = h.temp_dir("lumen-bench-lab-")
    for sub in ("config", "data/labextensions", "runtime", "ipython", "root", "settings"):
        (home / sub).mkdir(parents=True)
    # this working tree's Lab extension, before any installed one
    (home / "data" / "labextensions" / "lumen-jupyter").symlink_to(
        h.REPO / "lumen_jupyter" / "labextension"
    )
    news = home / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ)
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "PYTHONPATH": str(h.REPO),
        }
    )
    for name in ("LUMEN_DATABASE_URL", "LUMEN_CONFIG", "JUPYTER_TOKEN"):
        env.pop(name, None)
    port = h.free_port()
    token = os.urandom(16).hex()
    traits = {
        "database_url": url,
        "username": api.USERNAME,
        "config_file": str(config),
        "secret_file": str(secret_file),
        "health_interval": 0,
        "demo_backend": "off",
    }
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home / 'root'}",
        "--LabApp.news_url=",
        "--LabApp.expose_app_in_browser=True",
        "--ServerApp.log_level=WARN",
        *(f"--LumenJupyter.{k}={v}" for k, v in traits.items()),
    ]
    proc = h.spawn(argv, env=env, log=home / "lab.log")
    base = f"http://127.0.0.1:{port}/"
    auth = {"Authorization": f"token {token}"}
    h.wait_http(f"{base}lumen/api/openapi.json", 90, proc, headers=auth)
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "profile",
                "metadata": {},
                "outputs": [],
                "source": "from lumen_jupyter.widgets import Profile\nProfile()",
            }
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (home / "root" / "bench.ipynb").write_text(json.dumps(notebook))
    return proc, f"{base}lab/workspaces/bench/tree/bench.ipynb?reset&token={token}"


def measure(page: Any, trigger: Any, root: str, event: str) -> dict[str, Any]:
    # The waits are installed before the trigger and kept on the page (not awaited here).
    # The input event's own time is kept too: Playwright's click first waits for the
    # element to be visible and stable (a few frames), which is not the page's work.
    page.evaluate(
        f"""([painted, filled, complete, event]) => {{
          const wait = {WAIT_JS};
          performance.clearMarks();
          const started = performance.now();
          const input = new Promise(resolve => {{
            const seen = e => {{
              if (e.type === 'click' || e.key === 'Enter') {{
                document.removeEventListener(event, seen, true);
                resolve(e.timeStamp - started);
              }}
            }};
            document.addEventListener(event, seen, true);
          }});
          window.__lumenBench = {{
            started,
            input,
            painted: wait([painted, started]),
            filled: wait([filled, started]),
            complete: wait([complete, started])
          }};
        }}""",
        [f"{root} .lumen-profile", FILLED.format(root=root), COMPLETE.format(root=root), event],
    )
    trigger()
    painted = page.evaluate("() => window.__lumenBench.painted")
    filled = page.evaluate("() => window.__lumenBench.filled")
    complete = page.evaluate("() => window.__lumenBench.complete")
    input_ms = page.evaluate("() => window.__lumenBench.input")
    # Where the time went: the Lab panel's performance marks (lumen:*), from the input.
    marks = page.evaluate(
        """() => performance.getEntriesByType('mark')
             .filter(m => m.name.startsWith('lumen:'))
             .map(m => [m.name.slice(6), m.startTime - window.__lumenBench.started])"""
    )
    return {
        "painted_ms": painted,
        "filled_ms": filled,
        "complete_ms": complete,
        "input_ms": input_ms,
        "marks_ms": {name: round(at - input_ms, 1) for name, at in marks},
    }


def run_widget(page: Any) -> dict[str, Any]:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.locator(".jp-OutputArea .lumen-profile").wait_for(state="detached")
    # The cell is selected before the clock starts: Playwright's click waits for it to
    # be visible and stable first, which is none of the page's work.
    page.locator(".jp-Notebook .jp-Cell").first.click()
    return measure(page, lambda: page.keyboard.press("Control+Enter"), ".jp-OutputArea", "keydown")


def _kernel(page_url: str) -> tuple[str, dict[str, str]]:
    base = page_url.split("lab/")[0]
    auth = {"Authorization": f"token {page_url.split('token=')[1]}"}
    sessions = h.http_json("GET", f"{base}api/sessions", headers=auth)
    return f"{base}api/kernels/{sessions[0]['kernel']['id']}", auth


def restart_kernel(page_url: str) -> None:
    """Restart the notebook's kernel through the REST API (no dialog), wait until idle."""
    url, auth = _kernel(page_url)
    h.http_json("POST", f"{url}/restart", headers=auth)
    kernel_idle(page_url)


def kernel_idle(page_url: str, timeout: float = 60) -> None:
    url, auth = _kernel(page_url)
    deadline = time.monotonic() + timeout
    while h.http_json("GET", url, headers=auth)["execution_state"] != "idle":
        if time.monotonic() > deadline:
            raise TimeoutError("the kernel did not become idle")
        time.sleep(0.2)


def idle(page: Any) -> None:
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--seed-dir",
        type=Path,
        help="keep the seeded store here and use a copy of it when it is there already "
        "(to compare trees on the same seed without seeding again)",
    )
    args = parser.parse_args()
    facts = h.machine_facts()
    print(f"machine: load {facts['loadavg_at_start']}", flush=True)
    work = h.temp_dir("lumen-bench-browser-")
    kept = args.seed_dir
    if kept is not None and (kept / "lumen.db").exists():
        print(f"using the store seeded in {kept}", flush=True)
        for name in ("lumen.db", "lumen.db-wal", "lumen.yaml", "secret"):
            if (kept / name).exists():
                shutil.copy(kept / name, work / name)
        (work / "secret").chmod(0o600)
        url, config, secret_file = (
            f"sqlite:///{work / 'lumen.db'}",
            work / "lumen.yaml",
            work / "secret",
        )
    else:
        print(f"seeding {args.rows:,} calls, {args.keys} keys, {args.models} models", flush=True)
        url, config, secret_file = seed_store(work, args)
        if kept is not None:
            kept.mkdir(parents=True, exist_ok=True)
            for name in ("lumen.db", "lumen.db-wal", "lumen.yaml", "secret"):
                if (work / name).exists():
                    shutil.copy(work / name, kept / name)
    proc, page_url = start_lab(url, config, secret_file)
    print(f"lab: {page_url.split('?')[0]}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {
        "widget_warm": [],
        "widget_new_kernel": [],
        "panel": [],
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_url)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=90_000)
        idle(page)
        run_widget(page)  # warm-up: imports, first comm, the bundle
        idle(page)
        for i in range(args.runs):
            results["widget_warm"].append(run_widget(page))
            idle(page)
            print(f"widget warm {i + 1}: {results['widget_warm'][-1]}", flush=True)
        for i in range(args.runs):
            restart_kernel(page_url)
            time.sleep(1)
            results["widget_new_kernel"].append(run_widget(page))
            kernel_idle(page_url)
            print(f"widget new kernel {i + 1}: {results['widget_new_kernel'][-1]}", flush=True)
        # the rows' real heights (the windowing assumes 36 px: one layout, no second render)
        heights = page.evaluate(
            """() => [...new Set([...document.querySelectorAll(
                 '.lumen-table tbody tr[data-row-key]')].map(
                 tr => tr.getBoundingClientRect().height))]"""
        )
        print(f"row heights: {heights}", flush=True)
        meter = page.locator(".lumen-status-item")
        for i in range(args.runs + 1):
            # A click at the meter's place, found before the clock starts (the locator's
            # click would first wait for the meter to be visible and stable).
            box = meter.bounding_box()
            assert box is not None
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            outcome = measure(
                page, lambda x=x, y=y: page.mouse.click(x, y), ".lumen-panel", "click"
            )
            if i:  # the first opening loads nothing more, but is the warm-up
                results["panel"].append(outcome)
                print(f"panel {i}: {outcome}", flush=True)
            page.evaluate("() => window.jupyterapp.commands.execute('application:close')")
            page.locator(".lumen-panel").wait_for(state="detached")
        browser.close()
    h.stop(proc)
    summary = {
        name: {
            **{
                part: h.summary_ms([r[part] / 1000 for r in runs])
                for part in ("painted_ms", "filled_ms", "complete_ms")
            },
            **{
                f"{part}_from_input": h.summary_ms([(r[part] - r["input_ms"]) / 1000 for r in runs])
                for part in ("painted_ms", "filled_ms")
            },
        }
        for name, runs in results.items()
    }
    data = {
        "benchmark": "profile_browser",
        "command": "python benchmarks/bench_profile_browser.py " + " ".join(sys.argv[1:]),
        "machine": facts,
        "loadavg_after": h.loadavg(),
        "parameters": vars(args),
        "targets_ms": TARGETS_MS,
        "row_heights_px": heights,
        "runs": results,
        "summary": summary,
    }
    path = h.write_results("profile_browser", data)
    for name, parts in summary.items():
        print(
            f"{name:18} painted p50 {parts['painted_ms']['p50']:7.1f} "
            f"p95 {parts['painted_ms']['p95']:7.1f} ms  "
            f"filled p50 {parts['filled_ms']['p50']:7.1f} p95 {parts['filled_ms']['p95']:7.1f} ms"
            f"  (target {TARGETS_MS[name]} ms; from the input event: painted p50 "
            f"{parts['painted_ms_from_input']['p50']:.1f} p95 "
            f"{parts['painted_ms_from_input']['p95']:.1f} ms)"
        )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
