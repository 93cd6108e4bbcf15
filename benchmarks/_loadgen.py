"""A small closed-loop HTTP/1.1 load generator on raw asyncio sockets.

Run as a separate process (``python _loadgen.py '<json spec>'``); prints one JSON
object.  Each of ``concurrency`` workers owns one keep-alive connection and sends
the next request as soon as the previous answer has fully arrived.  Responses
are parsed incrementally (Content-Length or chunked) without keeping bodies, so
a 100 MB stream costs no memory here.

Spec fields: host, port, path, headers (dict), body (JSON value), concurrency,
count (measured requests) or duration (s), warmup (requests, per run),
ttft (bool: also time the first SSE event carrying content), sample (bool:
return every latency), rate (requests/s in all: each worker then sends its next
request at its turn of a steady schedule, or at once when late, instead of as soon
as the previous answer is in; latencies are measured from the send).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
from typing import Any

_TOKEN = re.compile(rb'"(?:content|text)":\s*"[^"]')


class Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pos = 0
        self.fut: asyncio.Future[int] | None = None
        self.lost = False
        self.state = "idle"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.fut is not None and not self.fut.done():
            if self.state == "eof":
                self._finish()
            else:
                self.fut.set_exception(ConnectionError(f"connection lost ({exc})"))

    def send(self, request: bytes, want_token: bool) -> asyncio.Future[int]:
        assert self.transport is not None
        self.fut = self.loop.create_future()
        self.state = "head"
        self.status = 0
        self.need = 0
        self.nbytes = 0
        self.t_first: float | None = None
        self.t_token: float | None = None
        self.want_token = want_token
        self.tail = b""
        self.error_body = b""
        self.transport.write(request)
        return self.fut

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._parse()
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0

    def eof_received(self) -> bool | None:
        return None

    def _body(self, start: int, end: int) -> None:
        if end <= start:
            return
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        self.nbytes += end - start
        if self.status >= 400 and len(self.error_body) < 500:
            self.error_body += bytes(self.buf[start:end])[:500]
        if self.want_token and self.t_token is None:
            piece = self.tail + bytes(self.buf[start:end])
            if _TOKEN.search(piece):
                self.t_token = now
            self.tail = piece[-40:]

    def _finish(self) -> None:
        self.state = "idle"
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(self.status)

    def _parse(self) -> None:
        buf = self.buf
        while True:
            state = self.state
            if state == "head":
                cut = buf.find(b"\r\n\r\n", self.pos)
                if cut < 0:
                    return
                head = bytes(buf[self.pos : cut]).decode("latin-1")
                self.pos = cut + 4
                lines = head.split("\r\n")
                self.status = int(lines[0].split(" ", 2)[1])
                length = None
                chunked = False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value.strip())
                    elif name == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                if chunked:
                    self.state = "size"
                elif length is not None:
                    self.need = length
                    self.state = "fixed"
                    if length == 0:
                        self._finish()
                        return
                else:
                    self.state = "eof"
            elif state == "fixed":
                n = min(self.need, len(buf) - self.pos)
                self._body(self.pos, self.pos + n)
                self.pos += n
                self.need -= n
                if self.need == 0:
                    self._finish()
                return
            elif state == "eof":
                self._body(self.pos, len(buf))
                self.pos = len(buf)
                return
            elif state == "size":
                cut = buf.find(b"\r\n", self.pos)
                if cut < 0:
                    return
                size = int(bytes(buf[self.pos : cut]).split(b";")[0], 16)
                self.pos = cut + 2
                if size == 0:
                    self.state = "trailer"
                else:
                    self.need = size
                    self.state = "data"
            elif state == "data":
                n = min(self.need, len(buf) - self.pos)
                if n == 0:
                    return
                self._body(self.pos, self.pos + n)
                self.pos += n
                self.need -= n
                if self.need == 0:
                    self.state = "crlf"
            elif state == "crlf":
                if len(buf) - self.pos < 2:
                    return
                self.pos += 2
                self.state = "size"
            elif state == "trailer":
                cut = buf.find(b"\r\n", self.pos)
                if cut < 0:
                    return
                empty = cut == self.pos
                self.pos = cut + 2
                if empty:
                    self._finish()
                    return
            else:  # idle: unexpected bytes
                self.pos = len(buf)
                return


def build_request(spec: dict[str, Any]) -> bytes:
    body = json.dumps(spec.get("body")).encode() if spec.get("body") is not None else b""
    method = "POST" if body else "GET"
    lines = [
        f"{method} {spec['path']} HTTP/1.1",
        f"Host: {spec['host']}:{spec['port']}",
        "Accept: */*",
    ]
    for name, value in (spec.get("headers") or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = build_request(spec)
    concurrency = int(spec.get("concurrency", 1))
    count = spec.get("count")
    duration = spec.get("duration")
    warmup = int(spec.get("warmup", 0))
    want_token = bool(spec.get("ttft"))
    latencies: list[float] = []
    ttfts: list[float] = []
    ttfbs: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    bytes_total = 0
    issued = 0
    done_warmup = 0
    state: dict[str, Any] = {"stop": False, "t0": None, "t1": None, "total_ok": 0}

    async def connect() -> Conn:
        _t, proto = await loop.create_connection(
            lambda: Conn(loop), spec["host"], int(spec["port"])
        )
        return proto

    rate = float(spec["rate"]) if spec.get("rate") else None
    started_at = time.perf_counter()

    async def worker(index: int) -> None:
        nonlocal issued, done_warmup, bytes_total
        conn = await connect()
        turn = 0
        while not state["stop"]:
            if count is not None and issued >= count + warmup:
                break
            if rate is not None:
                due = started_at + (turn * concurrency + index) / rate
                turn += 1
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if state["stop"]:
                    break
            issued += 1
            if conn.lost:
                conn = await connect()
            started = time.perf_counter()
            try:
                status = await conn.send(request, want_token)
            except ConnectionError as exc:
                errors.append(str(exc))
                conn = await connect()
                continue
            ended = time.perf_counter()
            if 200 <= status < 300:
                state["total_ok"] += 1
            if done_warmup < warmup:
                done_warmup += 1
                if done_warmup == warmup:
                    state["t0"] = ended
                continue
            if state["t0"] is None:
                state["t0"] = started
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 400 and len(errors) < 5:
                errors.append(f"{status}: {conn.error_body[:300]!r}")
            latencies.append(ended - started)
            bytes_total += conn.nbytes
            if conn.t_first is not None:
                ttfbs.append(conn.t_first - started)
            if want_token and conn.t_token is not None:
                ttfts.append(conn.t_token - started)
            state["t1"] = ended
        if conn.transport is not None:
            conn.transport.close()

    async def timer() -> None:
        # wait for the warm-up to end, then measure for `duration` seconds
        while state["t0"] is None and not state["stop"]:
            await asyncio.sleep(0.01)
        await asyncio.sleep(float(duration))
        state["stop"] = True

    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    if duration is not None:
        tasks.append(asyncio.ensure_future(timer()))
    await asyncio.gather(*tasks)
    window = (state["t1"] or 0) - (state["t0"] or 0)
    result: dict[str, Any] = {
        "requests": len(latencies),
        "total_ok": state["total_ok"],  # every 2xx answer, warm-up included
        "window_s": round(window, 4),
        "rps": round(len(latencies) / window, 1) if window > 0 else None,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors[:5],
        "bytes": bytes_total,
        "latency_ms": _summary(latencies),
        "ttfb_ms": _summary(ttfbs),
        "loadgen_cpu_s": round(time.process_time(), 3),  # this process, start-up included
    }
    if want_token:
        result["ttft_ms"] = _summary(ttfts)
    if spec.get("sample"):
        result["latencies_ms"] = [round(x * 1000, 4) for x in latencies]
    return result


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ms = sorted(v * 1000 for v in values)

    def pct(q: float) -> float:
        pos = (len(ms) - 1) * q / 100
        low = int(pos)
        high = min(low + 1, len(ms) - 1)
        return round(ms[low] + (ms[high] - ms[low]) * (pos - low), 4)

    return {
        "n": len(ms),
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "max": round(ms[-1], 4),
        "mean": round(sum(ms) / len(ms), 4),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = asyncio.run(run(spec))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
