"""The clients of docs/api.md's table, each calling the gateway as that table says.

Each client runs in a script of its own in the client environment, with a personal
key made through the REST API (what a script outside a kernel uses), against a
server on the embedded default.  For each one the test checks what the table claims:

* a chat answer, and a streamed one, come from the demo model through the gateway and
  are logged under the key;
* the token usage the client reports for the stream is what the gateway billed;
* embeddings, for the clients that have them;
* a key whose budget cannot cover the call gets a 429 that the client reports as an
  error **after one request** (it honours ``x-should-retry: false`` instead of
  retrying), and a model that needs consent a 403 whose message says how to give it;
* nothing is sent anywhere but the server (the egress recorder of the conftest: no
  price list, trace or telemetry leaves).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import run_script
from tests.clients.evidence import request_rows
from tests.kernel.server import JupyterServer

PROMPT = "Say hello to the clients"

COMMON = """\
import json, os, sys
URL, KEY, POOR = os.environ["LUMEN_URL"], os.environ["LUMEN_KEY"], os.environ["LUMEN_POOR_KEY"]
PROMPT = os.environ["PROMPT"]
out = {}

def failure(exc):
    status = getattr(exc, "status_code", None)
    return {"type": type(exc).__name__, "status": status, "message": str(exc)}
"""

LANGCHAIN = """\
import openai
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

chat = ChatOpenAI(model="demo-pro", base_url=URL, api_key=KEY)
out["chat"] = chat.invoke(PROMPT).content
chunks = list(ChatOpenAI(model="demo-pro", base_url=URL, api_key=KEY, stream_usage=True)
              .stream(PROMPT))
out["stream"] = "".join(c.content for c in chunks)
usage = [c.usage_metadata for c in chunks if c.usage_metadata]
out["stream_usage"] = [usage[-1]["input_tokens"], usage[-1]["output_tokens"]]
embeddings = OpenAIEmbeddings(model="demo-free", base_url=URL, api_key=KEY,
                              check_embedding_ctx_length=False)
out["embedding"] = len(embeddings.embed_query(PROMPT))
for name, model, key in (("budget", "demo-pro", POOR), ("consent", "demo-restricted", KEY)):
    try:
        ChatOpenAI(model=model, base_url=URL, api_key=key).invoke(PROMPT)
    except openai.APIStatusError as exc:
        out[name] = failure(exc)
"""

LITELLM = """\
import litellm

def complete(**kw):
    return litellm.completion(api_base=URL, messages=[{"role": "user", "content": PROMPT}], **kw)

out["chat"] = complete(model="openai/demo-pro", api_key=KEY).choices[0].message.content
chunks = list(complete(model="openai/demo-pro", api_key=KEY, stream=True,
                       stream_options={"include_usage": True}))
out["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
usage = [c.usage for c in chunks if getattr(c, "usage", None)]
out["stream_usage"] = [usage[-1].prompt_tokens, usage[-1].completion_tokens]
found = litellm.embedding(model="openai/demo-free", api_base=URL, api_key=KEY, input=[PROMPT])
out["embedding"] = len(found.data[0]["embedding"])
for name, model, key in (("budget", "demo-pro", POOR), ("consent", "demo-restricted", KEY)):
    try:
        complete(model="openai/" + model, api_key=key)
    except litellm.exceptions.APIError as exc:
        out[name] = failure(exc)
    except (litellm.RateLimitError, litellm.PermissionDeniedError) as exc:
        out[name] = failure(exc)
"""

LLM = """\
import re, subprocess
from pathlib import Path

home = Path(os.environ["LLM_USER_PATH"])
home.mkdir(parents=True, exist_ok=True)
(home / "extra-openai-models.yaml").write_text(
    "- model_id: lumen-demo-pro\\n  model_name: demo-pro\\n"
    f"  api_base: {URL}\\n  api_key_name: lumen\\n"
    "- model_id: lumen-demo-restricted\\n  model_name: demo-restricted\\n"
    f"  api_base: {URL}\\n  api_key_name: lumen\\n"
)

def llm(*args):
    done = subprocess.run([sys.executable, "-m", "llm", *args], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr

def must(*args):
    code, stdout, stderr = llm(*args)
    assert code == 0, stdout + stderr
    return stdout, stderr

must("keys", "set", "lumen", "--value", KEY)
out["chat"] = must("-m", "lumen-demo-pro", "--no-stream", PROMPT)[0].strip()
stdout, stderr = must("-m", "lumen-demo-pro", "--usage", PROMPT)
out["stream"] = stdout.strip()
out["usage_line"] = stderr.strip()
for name, model, key in (("budget", "lumen-demo-pro", POOR),
                         ("consent", "lumen-demo-restricted", KEY)):
    code, stdout, stderr = llm("-m", model, "--key", key, PROMPT)
    assert code != 0, stdout
    status = re.search(r"Error code: (\\d+)", stderr)
    out[name] = {"type": "exit %d" % code, "status": status and int(status[1]),
                 "message": stderr.strip()}
"""

AGENTS = """\
import asyncio
import openai
from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, Runner,
                    set_tracing_disabled)

set_tracing_disabled(True)

def agent(model, key):
    client = openai.AsyncOpenAI(base_url=URL, api_key=key)
    return Agent(name="helper", instructions="Be brief.",
                 model=OpenAIChatCompletionsModel(model=model, openai_client=client),
                 model_settings=ModelSettings(include_usage=True))

out["chat"] = Runner.run_sync(agent("demo-pro", KEY), PROMPT).final_output

async def streamed():
    result = Runner.run_streamed(agent("demo-pro", KEY), PROMPT)
    text = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            text.append(event.data.delta)
    usage = result.context_wrapper.usage
    return "".join(text), [usage.input_tokens, usage.output_tokens]

out["stream"], out["stream_usage"] = asyncio.run(streamed())
for name, model, key in (("budget", "demo-pro", POOR), ("consent", "demo-restricted", KEY)):
    try:
        Runner.run_sync(agent(model, key), PROMPT)
    except openai.APIStatusError as exc:
        out[name] = failure(exc)
"""

PYDANTIC_AI = """\
import asyncio
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

def agent(model, key):
    return Agent(OpenAIChatModel(model, provider=OpenAIProvider(base_url=URL, api_key=key)))

out["chat"] = agent("demo-pro", KEY).run_sync(PROMPT).output

async def streamed():
    async with agent("demo-pro", KEY).run_stream(PROMPT) as result:
        text = [delta async for delta in result.stream_text(delta=True)]
    usage = result.usage()
    return "".join(text), [usage.input_tokens, usage.output_tokens]

out["stream"], out["stream_usage"] = asyncio.run(streamed())
for name, model, key in (("budget", "demo-pro", POOR), ("consent", "demo-restricted", KEY)):
    try:
        agent(model, key).run_sync(PROMPT)
    except ModelHTTPError as exc:
        out[name] = failure(exc)
"""

CLIENTS = {
    "langchain-openai": LANGCHAIN,
    "litellm": LITELLM,
    "llm": LLM,
    "openai-agents": AGENTS,
    "pydantic-ai": PYDANTIC_AI,
}
WITH_EMBEDDINGS = {"langchain-openai", "litellm"}


@pytest.fixture(scope="module")
def keys(server: JupyterServer) -> Iterator[dict[str, str]]:
    """A personal key, and one whose budget cannot cover a call to demo-pro."""
    made = {}
    for name, body in (("key", {"name": "clients"}), ("poor", {"name": "poor", "budget": "0.001"})):
        response = server.rest("POST", "lumen/api/keys", json=body)
        assert response.status_code == 201, response.text
        made[name] = response.json()
    yield {name: str(key["key"]) for name, key in made.items()}
    for key in made.values():
        server.rest("DELETE", f"lumen/api/keys/{key['id']}")


def _refusals(server: JupyterServer, status: int) -> int:
    """How many model calls the server refused with ``status`` (its log's warnings)."""
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    return len(re.findall(rf"\] {status} POST \S*lumen/v1/chat/completions", log))


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_client(
    client: str,
    server: JupyterServer,
    keys: dict[str, str],
    client_python: Path,
    client_env_vars: dict[str, str],
    tmp_path: Path,
) -> None:
    key_id = _key_id(server, "clients")
    before = len(request_rows(server, key_id=key_id))
    refused = {status: _refusals(server, status) for status in (403, 429)}
    env = {
        **client_env_vars,
        "LUMEN_URL": server.root_url + "lumen/v1",
        "LUMEN_KEY": keys["key"],
        "LUMEN_POOR_KEY": keys["poor"],
        "PROMPT": PROMPT,
        "LLM_USER_PATH": str(tmp_path / "llm"),
    }
    source = COMMON + textwrap.dedent(CLIENTS[client]) + "\nprint(json.dumps(out))\n"
    out = run_script(client_python, source, env, timeout=180)

    for answer in (out["chat"], out["stream"]):
        assert answer.startswith("Demo reply to:") and PROMPT in answer, out
    rows = request_rows(server, key_id=key_id)[before:]
    chats = [r for r in rows if r["model"] == "demo-pro"]
    assert len(chats) == 2 and all(r["status"] == "ok" for r in chats), rows
    assert all(r["source"] == "api" for r in rows), rows
    streamed = chats[1]
    if "stream_usage" in out:
        assert out["stream_usage"] == [streamed["input_tokens"], streamed["output_tokens"]]
    else:  # llm prints it: "Token usage: 12 input, 34 output"
        assert (
            f"{streamed['input_tokens']} input, {streamed['output_tokens']} output"
            in (out["usage_line"])
        ), out["usage_line"]
    if client in WITH_EMBEDDINGS:
        assert out["embedding"] > 0
        assert [r["model"] for r in rows if r["model"] != "demo-pro"] == ["demo-free"], rows

    assert out["budget"]["status"] == 429 and "coins left" in out["budget"]["message"], out
    assert out["consent"]["status"] == 403 and "consent" in out["consent"]["message"], out
    # one request each: the 429's x-should-retry: false is honoured, a 403 not retried
    assert _refusals(server, 429) - refused[429] == 1, "the client retried the 429"
    assert _refusals(server, 403) - refused[403] == 1


def _key_id(server: JupyterServer, name: str) -> int:
    listed = server.rest("GET", "lumen/api/keys").json()
    found: list[Any] = listed if isinstance(listed, list) else listed.get("keys", [])
    return int(next(k["id"] for k in found if k["name"] == name))
