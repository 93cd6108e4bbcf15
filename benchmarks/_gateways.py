"""What the gateway benchmarks share: the targets, the load, and the CPU they use.

The demo backend (the upstream of every target), lumen in a Jupyter server,
LiteLLM's proxy (found, not installed), the load generator run as its own
process, and one measured phase of load against a target with the CPU time the
target's processes used meanwhile.  ``bench_gateway.py`` and ``bench_service.py``
import it from this folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import _harness as h

MODEL = "demo-free"
PROMPT = "Summarize why notebooks keep outputs next to code"
LITELLM_VENV = Path.home() / ".cache" / "lumen-bench" / "litellm-venv"
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses to start without one


# -- processes ---------------------------------------------------------------------------


class Target:
    def __init__(
        self, name: str, port: int, path: str, headers: dict[str, str], pid: int | None
    ) -> None:
        self.name = name
        self.port = port
        self.path = path
        self.headers = headers
        self.pid = pid  # the process whose CPU is the gateway's (None: direct)

    def spec(self, **extra: Any) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "path": self.path,
            "headers": self.headers,
            **extra,
        }

    def cpu(self) -> float:
        if self.pid is None:
            return 0.0
        return sum(_safe_cpu(p) for p in h.descendants(self.pid))

    def main_thread_cpu(self) -> float:
        """CPU of the process's main thread: the event loop (the rest: executor threads)."""
        if self.pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.pid}/task/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        parts = fields.rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _safe_cpu(pid: int) -> float:
    try:
        return h.cpu_seconds(pid)
    except OSError:
        return 0.0


def start_demo(cpus: str | None) -> tuple[Any, str, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(h.REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = h.spawn(
        [sys.executable, "-m", "lumen_jupyter.demo.backend", "--port", "0"],
        cpus=cpus,
        env=env,
        stdout_pipe=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError(f"demo backend did not start: {line!r}")
    url = line.strip().rsplit(" ", 1)[-1]
    port = int(url.split(":")[2].split("/")[0])
    return proc, url, port


def write_lumen_config(path: Path, demo_url: str) -> None:
    path.write_text(
        "version: 2\n"
        "defaults:\n"
        "  tokens: {max: 100000000, refresh: 0, starting: 100000000}\n"
        "  models: allowed\n"
        "models:\n"
        f"  - name: {MODEL}\n"
        "    description: the standalone demo backend\n"
        "    input_cost_per_million: 1\n"
        "    output_cost_per_million: 2\n"
        "    endpoints:\n"
        f"      - {{url: '{demo_url}', model: {MODEL}}}\n"
    )


def start_lumen(
    config: Path, cpus: str | None, *, instrumented: bool = True
) -> tuple[h.JupyterServer, str]:
    """lumen in a Jupyter server on SQLite (strict billing), and a personal key of its user."""
    work = h.temp_dir("lumen-bench-gw-")
    server = h.start_jupyter(
        {
            "database_url": f"sqlite:///{work / 'lumen.db'}",
            "username": "bench",
            "config_file": str(config),
            "demo_backend": "off",
        },
        cpus=cpus,
        instrumented=instrumented,
        extra_args=["--ServerApp.log_level=WARN"],
    )
    created = h.http_json(
        "POST", f"{server.url}lumen/api/keys", {"name": "bench"}, headers=server.auth
    )
    return server, created["key"]


def find_litellm(choice: str) -> tuple[str | None, str | None]:
    """(path, None) or (None, why not)."""
    if choice == "off":
        return None, "disabled with --litellm off"
    if choice != "auto":
        return (choice, None) if Path(choice).exists() else (None, f"{choice} does not exist")
    for candidate in (shutil.which("litellm"), str(LITELLM_VENV / "bin" / "litellm")):
        if candidate and Path(candidate).exists():
            return candidate, None
    return None, (
        "litellm is not installed: not on PATH and not in "
        f"{LITELLM_VENV} (python -m venv {LITELLM_VENV} && "
        f"{LITELLM_VENV}/bin/pip install 'litellm[proxy]')"
    )


def litellm_version(binary: str) -> str | None:
    python = Path(binary).parent / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or None


def start_litellm(binary: str, demo_url: str, cpus: str | None) -> tuple[Any, int, Path]:
    work = h.temp_dir("lumen-bench-litellm-")
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {demo_url}\n"
        "      api_key: sk-demo-backend\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    port = h.free_port()
    env = dict(os.environ)
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_SCHEMA_UPDATE": "True",
            "HOME": str(work),
        }
    )
    env.pop("DATABASE_URL", None)
    log = work / "litellm.log"
    proc = h.spawn(
        [
            binary,
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        cpus=cpus,
        env=env,
        log=log,
    )
    try:
        h.wait_http(
            f"http://127.0.0.1:{port}/health/liveliness",
            180,
            proc,
            headers={"Authorization": f"Bearer {LITELLM_KEY}"},
        )
    except Exception as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        h.stop(proc)
        raise RuntimeError(f"LiteLLM did not start: {exc}\n{tail}") from exc
    return proc, port, log


# -- load --------------------------------------------------------------------------------


def loadgen(spec: dict[str, Any], cpus: str | None, timeout: float = 300) -> dict[str, Any]:
    command = [sys.executable, str(h.HERE / "_loadgen.py"), json.dumps(spec)]
    if cpus is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def body(stream: bool = False, max_tokens: int = 64) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if stream:
        payload["stream"] = True
    return payload


def phase(target: Target, spec: dict[str, Any], cpus: str | None) -> dict[str, Any]:
    cpu0 = target.cpu()
    main0 = target.main_thread_cpu()
    load0 = h.loadavg()[0]
    result = loadgen(target.spec(**spec), cpus)
    used = target.cpu() - cpu0
    main_used = target.main_thread_cpu() - main0
    total = result.get("total_ok") or result["requests"]
    result["gateway_cpu_s"] = round(used, 3)
    result["gateway_cpu_ms_per_request"] = round(used * 1000 / total, 4) if total else None
    if target.pid is not None and total:
        result["main_thread_cpu_ms_per_request"] = round(main_used * 1000 / total, 4)
        result["other_threads_cpu_ms_per_request"] = round((used - main_used) * 1000 / total, 4)
    result["loadavg1"] = [load0, h.loadavg()[0]]
    if result.get("errors"):
        print(f"    {target.name}: errors {result['errors'][:2]}", flush=True)
    return result
