"""The gateway's Prometheus metrics, in one process and summed over worker processes.

The pytest process never keeps ``PROMETHEUS_MULTIPROC_DIR``: the workers are subprocesses
given it in their environment (or setting it themselves, after importing the module, as a
worker forked by a supervisor that set it late does), and the scrape of their files sets
it only for the duration of a test.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import lumen_jupyter.gateway.metrics as metrics_module
from lumen_jupyter.gateway.metrics import (
    MULTIPROC_ENV,
    CallMetrics,
    forget_worker,
    render_metrics,
)

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)


@pytest.mark.usefixtures("one_process")
def test_counts_move_as_recorded_and_render_as_text() -> None:
    registry = CollectorRegistry()
    metrics = CallMetrics(registry)
    metrics.started()
    metrics.started()
    body, _ = render_metrics(registry)
    assert value(parse(body), "lumen_calls_in_flight") == 2

    metrics.finished("demo", "ok", 0.123, 1_500_000, endpoint="chat")
    metrics.finished("demo", "refused", 0.002, 0, endpoint="chat")
    metrics.refused("insufficient_budget")
    metrics.refused("insufficient_budget")
    metrics.refused("consent_required")
    metrics.upstream_error("demo", "timeout")
    metrics.started()
    metrics.finished("demo-embed", "ok", 0.04, 250, endpoint="embeddings")

    body, content_type = render_metrics(registry)
    assert content_type.startswith("text/plain; version=")
    text = body.decode()
    assert 'lumen_model_calls_total{model="demo",status="ok"} 1.0' in text
    samples = parse(body)
    assert value(samples, "lumen_calls_in_flight") == 0
    assert value(samples, "lumen_model_calls_total", model="demo", status="ok") == 1
    assert value(samples, "lumen_model_calls_total", model="demo", status="refused") == 1
    assert value(samples, "lumen_model_calls_total", model="demo-embed", status="ok") == 1
    assert value(samples, "lumen_coins_charged_total", model="demo") == 1.5
    assert value(samples, "lumen_coins_charged_total", model="demo-embed") == 0.00025
    assert value(samples, "lumen_refusals_total", reason="insufficient_budget") == 2
    assert value(samples, "lumen_refusals_total", reason="consent_required") == 1
    assert value(samples, "lumen_upstream_errors_total", model="demo", kind="timeout") == 1
    chat = {"endpoint": "chat"}
    assert value(samples, "lumen_call_duration_seconds_count", **chat) == 2
    assert value(samples, "lumen_call_duration_seconds_sum", **chat) == pytest.approx(0.125)
    assert value(samples, "lumen_call_duration_seconds_bucket", le="0.005", **chat) == 1
    assert value(samples, "lumen_call_duration_seconds_bucket", le="0.1", **chat) == 1
    assert value(samples, "lumen_call_duration_seconds_bucket", le="0.25", **chat) == 2
    assert value(samples, "lumen_call_duration_seconds_bucket", le="300.0", **chat) == 2
    assert value(samples, "lumen_call_duration_seconds_count", endpoint="embeddings") == 1


@pytest.mark.usefixtures("one_process")
def test_recorders_and_a_second_import_share_the_default_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ok_calls() -> float:
        found = REGISTRY.get_sample_value(
            "lumen_model_calls_total", {"model": "twice", "status": "ok"}
        )
        return found or 0.0

    before = ok_calls()
    spec = importlib.util.spec_from_file_location(
        "lumen_metrics_again", metrics_module.__file__, submodule_search_locations=None
    )
    assert spec is not None and spec.loader is not None
    again: Any = importlib.util.module_from_spec(spec)
    again.__package__ = "lumen_jupyter.gateway"
    monkeypatch.setitem(sys.modules, spec.name, again)
    spec.loader.exec_module(again)
    assert again.CallMetrics is not CallMetrics  # a second module, with its own state
    recorders = [CallMetrics(), CallMetrics(), again.CallMetrics()]
    for recorder in recorders:
        recorder.started()
        recorder.finished("twice", "ok", 0.01, 0, endpoint="chat")
    assert ok_calls() == before + 3


async def test_jupyter_servers_own_metrics_page_shows_them(jp_fetch: Any) -> None:
    assert MULTIPROC_ENV not in os.environ
    CallMetrics().refused("metrics_page_test")
    response = await jp_fetch("metrics", method="GET")
    samples = parse(response.body)
    assert value(samples, "lumen_refusals_total", reason="metrics_page_test") == 1
    assert value(samples, "lumen_calls_in_flight") is not None


WORKER = """
import os, sys
from lumen_jupyter.gateway.metrics import CallMetrics
if len(sys.argv) > 1:  # the directory is set after the import, as after a late fork
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
metrics = CallMetrics()
{calls}
"""


def run_worker(calls: str, env: dict[str, str], *args: str) -> int:
    script = WORKER.format(calls=textwrap.dedent(calls))
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_workers_files_are_summed_on_every_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = str(tmp_path / "metrics")
    os.mkdir(files)
    plain = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    first = run_worker(
        """
        metrics.started()
        metrics.started()  # still in flight when the worker dies
        metrics.finished("demo", "ok", 0.2, 1_500_000, endpoint="chat")
        metrics.refused("rate_limited")
        print(os.getpid())
        """,
        {**plain, MULTIPROC_ENV: files},
    )
    second = run_worker(
        """
        metrics.started()
        metrics.finished("demo", "ok", 3.0, 500_000, endpoint="chat")
        metrics.started()
        metrics.upstream_error("demo", "connect")
        metrics.finished("demo", "error", 0.5, 0, endpoint="chat")
        metrics.refused("rate_limited")
        print(os.getpid())
        """,
        plain,
        files,
    )
    assert first != second
    assert os.path.exists(os.path.join(files, f"gauge_livesum_{second}.db"))

    monkeypatch.setenv(MULTIPROC_ENV, files)
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    samples = parse(body)
    assert value(samples, "lumen_model_calls_total", model="demo", status="ok") == 2
    assert value(samples, "lumen_model_calls_total", model="demo", status="error") == 1
    assert value(samples, "lumen_coins_charged_total", model="demo") == 2.0
    assert value(samples, "lumen_refusals_total", reason="rate_limited") == 2
    assert value(samples, "lumen_upstream_errors_total", model="demo", kind="connect") == 1
    assert value(samples, "lumen_call_duration_seconds_count", endpoint="chat") == 3
    assert value(samples, "lumen_call_duration_seconds_sum", endpoint="chat") == 3.7
    assert value(samples, "lumen_call_duration_seconds_bucket", endpoint="chat", le="1.0") == 2
    assert value(samples, "lumen_calls_in_flight") == 1  # the first worker's unfinished call

    forget_worker(first)
    samples = parse(render_metrics()[0])
    assert value(samples, "lumen_calls_in_flight") == 0
    assert value(samples, "lumen_model_calls_total", model="demo", status="ok") == 2


@pytest.mark.usefixtures("one_process")
def test_forget_worker_is_harmless_in_one_process() -> None:
    forget_worker(os.getpid())
