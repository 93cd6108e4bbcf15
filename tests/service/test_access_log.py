"""The service's access log: lines wait at most a second, failures are written at once,
each write is whole lines that another worker's writes cannot cut, and a bad path stops
the service at start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from lumen_jupyter.service import access_log
from lumen_jupyter.service.access_log import ATOMIC_WRITE, AccessLog, open_access_log


class Answered:
    """What the log reads of a finished tornado handler: its status and its request."""

    def __init__(self, status: int, uri: str) -> None:
        self.status = status
        start = RequestStartLine("POST", uri, "HTTP/1.1")
        self.request = HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "lumen"}))

    def get_status(self) -> int:
        return self.status


class Recording:
    """The log's writes, each kept apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, _stream: Any, text: str) -> None:
        self.writes.append(text)


@pytest.fixture
def info() -> Iterator[None]:
    logger = logging.getLogger("lumen_jupyter.access")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Recording:
    recording = Recording()
    monkeypatch.setattr(AccessLog, "_write", staticmethod(recording.write))
    return recording


async def test_lines_are_written_together_within_a_second(
    info: None, stderr: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access_log, "FLUSH_SECONDS", 0.2)
    log = AccessLog("-")
    for _ in range(3):
        log(Answered(200, "/v1/chat/completions"))  # type: ignore[arg-type]
    assert stderr.writes == []
    await asyncio.sleep(0.4)
    assert len(stderr.writes) == 1
    lines = stderr.writes[0].splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("[INFO lumen_jupyter.access] 200 POST /v1/chat/completions ")
    assert lines[0].endswith("ms")


async def test_a_server_error_is_written_at_once(info: None, stderr: Recording) -> None:
    log = AccessLog("-")
    log(Answered(200, "/health"))  # type: ignore[arg-type]
    log(Answered(502, "/v1/chat/completions"))  # type: ignore[arg-type]
    assert len(stderr.writes) == 1
    first, failed = stderr.writes[0].splitlines()
    assert first.startswith("[INFO lumen_jupyter.access] 200 POST /health")
    assert failed.startswith("[ERROR lumen_jupyter.access] 502 POST /v1/chat/completions")
    log.close()


async def test_each_write_is_whole_lines_no_longer_than_a_pipe_takes_at_once(
    info: None, stderr: Recording
) -> None:
    log = AccessLog("-")
    for n in range(2000):
        log(Answered(200, f"/lumen/api/keys/{n}"))  # type: ignore[arg-type]
    log.flush()
    assert len(stderr.writes) > 1
    assert all(len(w.encode()) <= ATOMIC_WRITE and w.endswith("\n") for w in stderr.writes)
    lines = "".join(stderr.writes).splitlines()
    assert [line.split()[4] for line in lines] == [f"/lumen/api/keys/{n}" for n in range(2000)]


async def test_the_level_decides_which_lines_are_written(stderr: Recording) -> None:
    logger = logging.getLogger("lumen_jupyter.access")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        log = AccessLog("-")
        log(Answered(200, "/v1/models"))  # type: ignore[arg-type]
        log(Answered(429, "/v1/chat/completions?api_key=sk_live_secret_value"))  # type: ignore[arg-type]
        log.close()
    finally:
        logger.setLevel(level)
    (line,) = "".join(stderr.writes).splitlines()
    assert line.startswith("[WARNING lumen_jupyter.access] 429 POST /v1/chat/completions?")
    assert "sk_live" not in line


async def test_a_file_gets_the_lines_and_a_bad_path_stops_at_start(
    info: None, tmp_path: Path
) -> None:
    path = tmp_path / "access.log"
    log = open_access_log(str(path))
    assert log is not None
    log(Answered(200, "/v1/models"))  # type: ignore[arg-type]
    log.close()
    assert path.read_text().startswith("[INFO lumen_jupyter.access] 200 POST /v1/models")
    assert open_access_log("") is None
    with pytest.raises(OSError):
        open_access_log(str(tmp_path / "missing" / "dir" / "access.log"))


def test_lines_left_in_the_buffer_are_written_when_the_service_stops(
    info: None, stderr: Recording
) -> None:
    async def serve() -> AccessLog:
        log = AccessLog("-")
        log(Answered(200, "/v1/models"))  # type: ignore[arg-type]
        return log

    log: Any = asyncio.run(serve())
    assert stderr.writes == []
    log.close()
    assert "/v1/models" in stderr.writes[0]


async def test_standard_error_is_the_default(
    info: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = open_access_log("-")
    assert log is not None
    log(Answered(200, "/v1/models"))  # type: ignore[arg-type]
    log.close()
    assert capsys.readouterr().err.startswith("[INFO lumen_jupyter.access] 200 POST /v1/models")
