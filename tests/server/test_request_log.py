"""Finished requests are logged and measured as jupyter_server does, without the wasted work."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_server.prometheus.metrics import HTTP_REQUEST_DURATION_SECONDS

from lumen_jupyter.server.jupyter_host import shows_debug
from lumen_jupyter.server.rest import OpenAPIHandler

LABELS = {
    "method": "GET",
    "handler": f"{OpenAPIHandler.__module__}.{OpenAPIHandler.__name__}",
    "status_code": 200,
}


def _count() -> float:
    child = HTTP_REQUEST_DURATION_SECONDS.labels(**LABELS)
    samples = [s for metric in child.collect() for s in metric.samples]
    return next(s.value for s in samples if s.name.endswith("_count"))


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    parent = logging.getLogger("lumen-test-parent")
    child = logging.getLogger("lumen-test-parent.child")
    yield child
    for each in (parent, child):
        each.handlers.clear()
        each.setLevel(logging.NOTSET)
        each.propagate = True


def test_shows_debug_follows_levels_handlers_and_propagation(logger: logging.Logger) -> None:
    parent = logger.parent
    assert isinstance(parent, logging.Logger)
    parent.propagate = False  # keep pytest's own root handlers out of it
    logger.setLevel(logging.DEBUG)
    assert not shows_debug(logger)  # no handler at all
    quiet = logging.StreamHandler()
    quiet.setLevel(logging.INFO)
    parent.addHandler(quiet)
    assert not shows_debug(logger)  # the handler drops debug records
    loud = logging.StreamHandler()  # level NOTSET: shows everything
    parent.addHandler(loud)
    assert shows_debug(logger)
    logger.propagate = False
    assert not shows_debug(logger)  # the loud handler is out of reach
    logger.propagate = True
    logger.setLevel(logging.INFO)
    assert not shows_debug(logger)  # the logger itself drops debug


async def test_success_line_kept_when_debug_is_shown(
    jp_fetch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = _count()
    response = await jp_fetch("lumen", "api", "openapi.json")
    assert response.code == 200
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("200 GET ") and "/lumen/api/openapi.json" in line for line in lines)
    assert _count() == before + 1


@pytest.fixture
def debug_dropped(jp_serverapp: Any, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The usual set-up: every handler the server's logger reaches shows INFO and up."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = jp_serverapp.log
    while current is not None:
        handlers.extend(current.handlers)
        current = current.parent if current.propagate else None
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.INFO)
    yield
    for handler, level in zip(handlers, levels, strict=True):
        handler.setLevel(level)


async def test_success_measured_when_debug_is_dropped(
    jp_fetch: Any, jp_serverapp: Any, debug_dropped: None
) -> None:
    assert not shows_debug(jp_serverapp.log)
    made: list[str] = []

    def note(record: logging.LogRecord) -> bool:  # sees every record made for the logger
        made.append(record.getMessage())
        return True

    jp_serverapp.log.addFilter(note)
    try:
        before = _count()
        response = await jp_fetch("lumen", "api", "openapi.json")
        assert response.code == 200
        await jp_fetch("api")  # jupyter_server's own handler still builds its line
    finally:
        jp_serverapp.log.removeFilter(note)
    assert not any("/lumen/api/openapi.json" in line for line in made), "\n".join(made)
    assert any(line.startswith("200 GET ") and line.split()[2].endswith("/api") for line in made)
    assert _count() == before + 1
