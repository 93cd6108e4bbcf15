"""Fuzzing the profile REST API and the model API of a live server with schemathesis.

A real ``jupyter server`` (a subprocess, on the embedded default with its demo
backend) is sent requests generated from the OpenAPI documents: valid ones
(``positive``) and ones that break the schema (``negative``: wrong types, missing
or extra fields, bad paths).  Whatever arrives, the server must not answer 5xx
(a 502/503/504 from the model API is the upstream's, so only 500 and 501 count
there), and every JSON answer of the profile API must match its document.
The number of examples is bounded (``LUMEN_FUZZ_EXAMPLES``, default 25 per
operation and mode) so the suite stays quick; raise it to search harder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from lumen_jupyter.server.openapi import openapi_document
from lumen_jupyter.server.openapi_models import model_api_document
from tests.contract import validate
from tests.kernel.server import BASE_URL, JupyterServer, start_server

EXAMPLES = int(os.environ.get("LUMEN_FUZZ_EXAMPLES", "25"))
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    running = start_server(tmp_path_factory.mktemp("fuzz"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api_key(live: JupyterServer) -> str:
    created = live.rest("POST", "lumen/api/keys", json={"name": "fuzz"})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def operations(document: dict[str, Any]) -> list[Any]:
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(
    operation: Any, mode: GenerationMode, check: Any, base_url: str, headers: dict[str, str]
) -> int:
    """Run ``check(case, response)`` on up to EXAMPLES generated cases; returns how many."""
    seen = [0]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        seen[0] += 1
        check(case, case.call(base_url=base_url, headers=headers, timeout=30))

    try:
        run()
    except Unsatisfiable:
        # nothing in this operation can be broken (no body, no constrained parameter)
        assert mode is GenerationMode.NEGATIVE, "valid requests could not be generated"
        pytest.skip("nothing in this operation's schema can be made invalid")
    return seen[0]


REST = openapi_document(BASE_URL)
REST_OPS = {f"{op.method.upper()} {op.path}": op for op in operations(REST)}
REST_OPS.pop("GET /events")  # an endless stream, tested in tests/server/test_events.py


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", sorted(REST_OPS))
def test_profile_api_never_answers_5xx(
    live: JupyterServer, label: str, mode: GenerationMode
) -> None:
    operation = REST_OPS[label]

    def check(case: Any, response: Any) -> None:
        where = f"{case.method} {case.formatted_path} body={case.body!r} query={case.query!r}"
        assert response.status_code < 500, f"{where} -> {response.status_code} {response.text}"
        body = response.json() if response.content else None
        api_path = case.formatted_path
        validate(case.method, api_path, response.status_code, body)

    seen = fuzz(operation, mode, check, live.root_url + "lumen/api", live.jupyter_headers)
    assert seen >= 1


def model_ops(live: JupyterServer) -> dict[str, Any]:
    listed = httpx.get(
        live.root_url + "lumen/v1/models", headers=live.jupyter_headers, timeout=30
    ).json()
    names = sorted(m["id"] for m in listed["data"])
    document = model_api_document(BASE_URL, [*names, "no-such-model"])
    return {f"{op.method.upper()} {op.path}": op for op in operations(document)}


MODEL_LABELS = ["GET /models", "GET /models/{name}", "POST /chat/completions", "POST /embeddings"]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", MODEL_LABELS)
def test_model_api_never_answers_a_server_error(
    live: JupyterServer, api_key: str, label: str, mode: GenerationMode
) -> None:
    operation = model_ops(live)[label]

    def check(case: Any, response: Any) -> None:
        where = f"{case.method} {case.formatted_path} body={case.body!r}"
        assert response.status_code not in (500, 501), f"{where} -> {response.text[:500]}"
        if response.status_code >= 400:
            error = response.json()["error"]  # OpenAI-shaped, whatever went wrong
            assert error["message"] and error["type"], where

    headers = {"Authorization": f"Bearer {api_key}"}
    seen = fuzz(operation, mode, check, live.root_url + "lumen/v1", headers)
    assert seen >= 1


def test_the_documents_are_valid_openapi() -> None:
    from openapi_spec_validator import validate as validate_spec

    validate_spec(openapi_document("/"))
    validate_spec(model_api_document("/", ["a", "b"]))


def test_a_5xx_would_be_caught(tmp_path: Path) -> None:
    """The check itself fails on a server error (the fuzz tests are not vacuous)."""
    with pytest.raises(AssertionError, match="does not list"):
        validate("GET", "/profile", 500, {"error": {"message": "x", "type": "y", "code": "z"}})
