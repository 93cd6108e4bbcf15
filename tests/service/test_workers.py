"""The pre-fork supervisor, on a real forked tornado service (``forked_app.py``).

Processes are watched through /proc: a worker counts as gone once it no longer exists or
is a zombie (after its supervisor was killed, nothing here reaps it).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lumen_jupyter.service.app import listening_sockets

if not sys.platform.startswith("linux"):
    pytest.skip("the supervisor tests read /proc", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("forked_app.py")


def state(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a live process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    found = state(pid)
    return found is not None and found[0] != "Z"


def children(parent: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = state(int(entry))
            if found is not None and found[1] == parent and found[0] != "Z":
                pids.add(int(entry))
    return pids


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def answer(port: int, sleep: float = 0.0) -> int:
    url = f"http://127.0.0.1:{port}/?sleep={sleep}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.read())


def two_answers(port: int) -> tuple[int, int]:
    """The pids answering two overlapping requests: the first blocks its worker for a
    moment, so only another worker can take the second."""
    first: queue.Queue[int] = queue.Queue()
    blocker = threading.Thread(target=lambda: first.put(answer(port, sleep=1.0)))
    blocker.start()
    time.sleep(0.3)
    second = answer(port)
    blocker.join(timeout=10)
    return first.get(timeout=1), second


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


class Service:
    """``forked_app.py`` in a subprocess, its stdout and stderr collected as lines."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = subprocess.Popen(
            [sys.executable, str(APP), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.process.pid
        self.out: list[str] = []
        self.err: list[str] = []
        self.seen: set[int] = set()
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()
        wait_until(lambda: any(line.startswith("port ") for line in self.out), 10, "a port")
        self.port = int(next(line for line in self.out if line.startswith("port ")).split()[1])

    @staticmethod
    def _collect(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def workers(self, count: int) -> set[int]:
        """Wait for exactly ``count`` live workers and return their pids."""
        wait_until(lambda: len(children(self.pid)) == count, 10, f"{count} workers")
        pids = children(self.pid)
        self.seen |= pids
        return pids

    def exit_code(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return "\n".join(self.err)

    def close(self) -> None:
        """Kill whatever is left of this service (the supervisor and the workers seen)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def service() -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(*args: str) -> Service:
        started.append(Service(*args))
        return started[-1]

    yield start
    for each in started:
        each.close()


def test_two_workers_answer_with_their_own_pids(service: Callable[..., Service]) -> None:
    app = service("--workers", "2")
    pids = app.workers(2)
    first, second = two_answers(app.port)
    assert first != second
    assert {first, second} == pids
    for pid in pids:
        assert os.getpgid(pid) == pid  # a group of its own: a terminal's Ctrl-C skips it


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(
    service: Callable[..., Service],
) -> None:
    app = service("--workers", "2")
    victim, survivor = sorted(app.workers(2))
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in children(app.pid), 5, "the killed worker reaped")
    replacement = app.workers(2) - {survivor}
    assert victim not in replacement and len(replacement) == 1
    assert survivor in children(app.pid)
    assert set(two_answers(app.port)) == {survivor, *replacement}
    wait_until(lambda: f"exited {victim}" in app.out, 5, "on_worker_exit for the victim")
    assert "was killed by SIGKILL" in app.log()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_every_worker_and_frees_the_port(
    service: Callable[..., Service], stop: signal.Signals
) -> None:
    app = service("--workers", "2")
    pids = app.workers(2)
    answer(app.port)
    app.process.send_signal(stop)
    assert app.exit_code(timeout=5) == 0, app.log()
    assert not any(alive(pid) for pid in pids)
    assert {f"exited {pid}" for pid in pids} <= set(app.out)
    assert port_is_free(app.port)


def test_workers_do_not_outlive_a_killed_supervisor(service: Callable[..., Service]) -> None:
    app = service("--workers", "2")
    pids = app.workers(2)
    answer(app.port)
    app.process.kill()
    app.process.wait(timeout=5)
    wait_until(lambda: not any(alive(pid) for pid in pids), 5, "the orphaned workers gone")
    assert port_is_free(app.port)


def test_a_crash_loop_stops_the_supervisor(service: Callable[..., Service]) -> None:
    started = time.monotonic()
    app = service("--workers", "2", "--crash")
    assert app.exit_code(timeout=10) == 1
    assert time.monotonic() - started < 5
    log = app.log()
    assert "RuntimeError: worker 0 cannot start" in log  # the worker's own traceback
    assert "5 times in a row: crash loop, stopping all workers" in log
    assert children(app.pid) == set()
    assert port_is_free(app.port)


def test_workers_ignoring_sigterm_are_killed_after_the_grace_period(
    service: Callable[..., Service],
) -> None:
    app = service("--workers", "2", "--stubborn", "--grace", "1")
    pids = app.workers(2)
    answer(app.port)
    started = time.monotonic()
    app.process.terminate()
    assert app.exit_code(timeout=5) == 1
    assert 0.9 < time.monotonic() - started < 3
    assert "still running 1 s after the stop signal; killing them" in app.log()
    assert not any(alive(pid) for pid in pids)
    assert port_is_free(app.port)


def test_a_second_stop_signal_kills_at_once(service: Callable[..., Service]) -> None:
    app = service("--workers", "2", "--stubborn", "--grace", "30")
    pids = app.workers(2)
    app.process.terminate()
    wait_until(lambda: "SIGTERM: stopping 2 worker(s)" in app.log(), 5, "the first SIGTERM")
    started = time.monotonic()
    app.process.send_signal(signal.SIGINT)
    assert app.exit_code(timeout=5) == 1
    assert time.monotonic() - started < 2
    assert "SIGINT again: killing the 2 worker(s) left" in app.log()
    assert not any(alive(pid) for pid in pids)


def scrape(port: int) -> tuple[int, dict[str, float]]:
    """The answering worker's pid and the unlabelled-or-summed samples of ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        pid = int(response.headers["X-Pid"])
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("lumen_model_calls_total", "lumen_calls_in_flight"):
                samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return pid, samples


def test_metrics_are_summed_over_workers_and_a_dead_one_is_forgotten(
    service: Callable[..., Service],
) -> None:
    app = service("--workers", "2", "--metrics")
    app.workers(2)
    assert len(set(two_answers(app.port))) == 2  # one call recorded in each worker
    _, samples = scrape(app.port)
    assert samples == {"lumen_model_calls_total": 2, "lumen_calls_in_flight": 0}

    in_call: queue.Queue[BaseException | int] = queue.Queue()

    def call() -> None:
        try:
            in_call.put(answer(app.port, sleep=3.0))
        except BaseException as error:  # the worker is killed during the call
            in_call.put(error)

    threading.Thread(target=call, daemon=True).start()
    time.sleep(0.3)
    scraper, samples = scrape(app.port)
    assert samples == {"lumen_model_calls_total": 2, "lumen_calls_in_flight": 1}
    (busy,) = children(app.pid) - {scraper}
    os.kill(busy, signal.SIGKILL)
    assert isinstance(in_call.get(timeout=5), BaseException)
    wait_until(lambda: f"exited {busy}" in app.out, 5, "the killed worker forgotten")
    app.workers(2)
    _, samples = scrape(app.port)
    assert samples == {"lumen_model_calls_total": 2, "lumen_calls_in_flight": 0}

    app.process.terminate()
    assert app.exit_code(timeout=5) == 0, app.log()


def test_each_worker_listens_on_a_socket_of_its_own_on_one_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    linux = listening_sockets("127.0.0.1", 0, 3)
    try:
        socks = [own[0] for own in linux]
        assert len({id(s) for s in socks}) == 3
        assert len({s.getsockname()[1] for s in socks}) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
    finally:
        for own in linux:
            for sock in own:
                sock.close()
    monkeypatch.setattr("sys.platform", "darwin")  # SO_REUSEPORT does not spread there
    shared = listening_sockets("127.0.0.1", 0, 3)
    try:
        assert shared[0] is shared[1] is shared[2]
    finally:
        for sock in shared[0]:
            sock.close()
