"""Models behind a forward proxy and an institutional CA, as on a cluster whose only way
out is a proxy: a real tinyproxy (with a password), https upstreams whose certificates
a CA made by ``trustme`` signed, and the real ``openai`` client calling the gateway."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import trustme

from lumen_jupyter.core.config import parse_endpoint
from lumen_jupyter.core.errors import ConfigError

from .conftest import DEFAULT_POOL, model_entry
from .forward_proxy import PASSWORD, TinyProxy
from .scripted import Scripted, answer, completion

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[TinyProxy]:
    if shutil.which("tinyproxy") is None:
        pytest.skip("tinyproxy is not installed (tests/run installs it)")
    started = TinyProxy(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "institution-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


async def serve_completions(server: Scripted, reader: Any, writer: Any) -> None:
    while True:
        await server.read_request(reader)
        writer.write(answer(completion(), b"Content-Type: application/json\r\n"))
        await writer.drain()


@pytest.fixture
def tls_upstream(ca: trustme.CA, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[Scripted]:
    """An https upstream for ``localhost``, its certificate signed by the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = Scripted(serve_completions)
    jp_asyncio_loop.run_until_complete(server.start(ssl=context))
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


@pytest.fixture
def plain_upstream(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[Scripted]:
    server = Scripted(serve_completions)
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


@pytest.fixture
def lumen_yaml(
    proxy: TinyProxy, tls_upstream: Scripted, plain_upstream: Scripted, ca_file: Path
) -> dict[str, Any]:
    https_url = f"https://localhost:{tls_upstream.port}/v1"

    def entry(name: str, url: str, **endpoint: Any) -> dict[str, Any]:
        found = model_entry(name, url, "up")
        found["endpoints"][0].update(endpoint)
        return found

    models = [
        entry("https-via-proxy", https_url, proxy=proxy.url(), ca_certs=str(ca_file)),
        entry("http-via-proxy", plain_upstream.base_url, proxy=proxy.url()),
        entry("https-via-environment", https_url, verify=str(ca_file)),
        entry("wrong-proxy-password", https_url, proxy=proxy.url("wrong"), ca_certs=str(ca_file)),
        entry("untrusted", https_url),
    ]
    return {"models": models, "defaults": {"models": "allowed", "tokens": dict(DEFAULT_POOL)}}


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


@pytest.fixture
def no_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def hello(client: openai.AsyncOpenAI, model: str) -> str:
    reply = await client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
    return str(reply.choices[0].message.content)


async def test_models_behind_a_proxy_and_an_institutional_ca(
    no_environment_proxy: None,
    proxy: TinyProxy,
    tls_upstream: Scripted,
    plain_upstream: Scripted,
    aclient: Any,
    make_key: Any,
    books: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, key = await make_key()
    client = aclient(key)
    with caplog.at_level(logging.DEBUG):
        assert (await hello(client, "https-via-proxy")).startswith("Hello")
        assert (await hello(client, "http-via-proxy")).startswith("Hello")
    log = proxy.forwarded()
    assert f"CONNECT localhost:{tls_upstream.port}" in log  # https through a tunnel
    assert f"http://127.0.0.1:{plain_upstream.port}/v1/chat/completions" in log
    assert len(tls_upstream.requests) == 1 and len(plain_upstream.requests) == 1
    assert b"(tinyproxy/" in plain_upstream.requests[0]  # its Via header
    assert b"Authorization: Bearer" not in plain_upstream.requests[0]  # no key configured
    assert b"Proxy-Authorization" not in plain_upstream.requests[0]
    assert PASSWORD not in caplog.text
    assert [r.status for r in books.requests()] == ["ok", "ok"]
    await books.settled()


async def test_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    no_environment_proxy: None,
    proxy: TinyProxy,
    tls_upstream: Scripted,
    aclient: Any,
    make_key: Any,
    books: Any,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the test's own calls to Jupyter go direct
    _, key = await make_key()
    assert (await hello(aclient(key), "https-via-environment")).startswith("Hello")
    assert f"CONNECT localhost:{tls_upstream.port}" in proxy.forwarded()
    assert len(tls_upstream.requests) == 1
    await books.settled()


async def test_why_an_endpoint_failed_is_logged_without_secrets(
    no_environment_proxy: None,
    proxy: TinyProxy,
    aclient: Any,
    make_key: Any,
    books: Any,
    jp_fetch: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, key = await make_key()
    client = aclient(key)
    with caplog.at_level(logging.WARNING, logger="lumen_jupyter.gateway"):
        for model in ("wrong-proxy-password", "untrusted"):
            with pytest.raises(openai.APIStatusError) as refused:
                await hello(client, model)
            assert refused.value.status_code == 503
            assert "No healthy endpoint" in refused.value.message
    assert "the proxy refused the connection (40" in caplog.text
    assert "via proxy http://***@127.0.0.1" in caplog.text
    assert "certificate verify failed" in caplog.text
    assert "wrong" not in caplog.text and PASSWORD not in caplog.text
    assert {r.status for r in books.requests()} == {"error"}
    assert books.spent() == 0
    await books.settled()
    response = await asyncio.wait_for(jp_fetch("api", "status"), 1.0)
    assert response.code == 200


def test_endpoint_transport_settings_are_checked(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    found = parse_endpoint(
        {"url": "https://api.example.org/v1", "proxy": "http://a:b@proxy:3128", "verify": False},
        "m",
        "m",
    )
    assert found.verify is False and found.proxy.reveal() == "http://a:b@proxy:3128"
    assert "a:b" not in repr(found)
    found = parse_endpoint({"url": "https://x/v1", "verify": str(bundle)}, "m", "m")
    assert found.ca_certs == str(bundle) and found.verify is None
    for bad, message in [
        ({"proxy": "socks5://proxy:1080"}, "proxy must be"),
        ({"ca_certs": str(tmp_path / "missing.pem")}, "ca_certs names no readable file"),
        ({"client_key": str(bundle)}, "client_key needs client_cert"),
        ({"verify": 3}, "verify"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_endpoint({"url": "https://x/v1", **bad}, "models[0]", "m")
