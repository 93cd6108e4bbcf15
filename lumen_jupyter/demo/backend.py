"""A small OpenAI-compatible server that answers with deterministic demo text.

Lumen needs an upstream that works with no account, no network and no cost: the
gateway's embedded default configuration points at it (the Jupyter server runs
it in its own event loop on a loopback port), and tests and benchmarks run it
as a subprocess (``python -m lumen_jupyter.demo.backend --port 0``).
Its replies and token usage are exactly predictable from
:mod:`lumen_jupyter.core.tokens`, and it can be told to misbehave (see
:mod:`lumen_jupyter.demo.faults`) so the gateway's error handling can be
tested against a real socket.  It is also the upstream of a latency benchmark,
so the common path does as little work per request as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import tornado.iostream
import tornado.netutil
import tornado.web
from tornado.httpserver import HTTPServer

from lumen_jupyter.core.tokens import count_message_tokens, count_prompt_tokens, count_text_tokens
from lumen_jupyter.demo.faults import (
    FAULT_NAMES,
    ApiError,
    DemoHandler,
    DemoState,
    FaultAwareHandler,
    RequestFaults,
)

__all__ = [
    "DEMO_MODELS",
    "LARGE_REPLY_MIN_TOKENS",
    "DemoBackend",
    "DemoModel",
    "DemoReply",
    "DemoState",
    "demo_embedding",
    "main",
    "make_app",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModel:
    id: str
    description: str
    context_window: int
    max_output_tokens: int


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel("demo-free", "Free demo model with short deterministic replies.", 8_192, 1_024),
    DemoModel("demo-pro", "Priced demo model with larger limits.", 128_000, 8_192),
    DemoModel("demo-restricted", "Demo model that needs explicit consent.", 32_768, 4_096),
)
_MODELS_BY_ID: dict[str, DemoModel] = {model.id: model for model in DEMO_MODELS}
_MODELS_CREATED = 1_700_000_000

#: A request whose max_tokens reaches this gets a reply exactly max_tokens long,
#: generated lazily (for throughput and memory benchmarks).
LARGE_REPLY_MIN_TOKENS = 100_000
_NATURAL_MIN_TOKENS = 20
_NATURAL_MAX_TOKENS = 60
_MAX_ECHO_WORDS = 8
_MAX_ECHO_CHARS = 24
_EMBEDDING_DIMENSIONS = 16
_MAX_EMBEDDING_DIMENSIONS = 4_096
_LARGE_BODY_BATCH_CHARS = 64 * 1024

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_dumps = _ENCODER.encode
_SENTINEL = "\x00"
_RUN_ID = os.urandom(3).hex()
_REQUEST_IDS = itertools.count(1)


# -- reply text -----------------------------------------------------------------

#: The piece rule of lumen_jupyter.core.tokens.count_text_tokens; the tests check
#: that the usage computed word by word equals count_text_tokens of the text.
_PIECE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True, slots=True)
class _Word:
    """A piece of reply text as sent in one chunk (leading space included)."""

    text: str
    escaped: str  # JSON string body, without the quotes
    pieces: int
    chars: int


def _make_word(text: str) -> _Word:
    return _Word(text, _dumps(text)[1:-1], len(_PIECE.findall(text)), len(text))


_FILLER_TEXT = (
    "the notebook kernel keeps every cell output close to the code that made it "
    "while lumen routes each request through a gateway that counts tokens and "
    "checks budgets so this sample answer stays short plain and easy to predict in tests"
)
_FILLER = tuple(_make_word(" " + word) for word in _FILLER_TEXT.split(" "))
_FILLER_COUNT = len(_FILLER)
_LEAD = (_make_word("Demo"), _make_word(" reply"), _make_word(" to:"))
_NOTHING = (_make_word(" (empty"), _make_word(" message)."))


def _echo_words(prompt: str) -> tuple[_Word, ...]:
    words = [word[:_MAX_ECHO_CHARS] for word in prompt.split()[:_MAX_ECHO_WORDS]]
    if not words:
        return _NOTHING
    if not words[-1].endswith((".", "!", "?")):
        words[-1] += "."
    return tuple(_make_word(" " + word) for word in words)


class DemoReply:
    """The deterministic answer to one prompt, produced one word at a time.

    The text is "Demo reply to: <first words of the prompt>." followed by filler
    words.  Its natural length is 20-60 tokens (chosen from the prompt and seed);
    ``max_tokens`` cuts it shorter (finish reason "length").  From
    ``LARGE_REPLY_MIN_TOKENS`` on the reply fills ``max_tokens`` and is never held
    in memory as a whole.  ``tokens`` is exact for what has been produced so far.
    """

    def __init__(self, prompt: str, max_tokens: int | None = None, seed: int = 0) -> None:
        digest = zlib.crc32(prompt.encode("utf-8", "surrogatepass")) ^ (seed & 0xFFFFFFFF)
        self._prompt = prompt
        self._digest = digest
        self.large = max_tokens is not None and max_tokens >= LARGE_REPLY_MIN_TOKENS
        span = _NATURAL_MAX_TOKENS - _NATURAL_MIN_TOKENS + 1
        natural = None if self.large else _NATURAL_MIN_TOKENS + digest % span
        if max_tokens is not None and (natural is None or max_tokens < natural):
            self.limit, self.finish_reason = max_tokens, "length"
        else:
            assert natural is not None
            self.limit, self.finish_reason = natural, "stop"
        self._pieces = 0
        self._chars = 0

    @property
    def tokens(self) -> int:
        """count_text_tokens of the words produced so far (pieces and chars add up)."""
        return max(self._pieces, (self._chars + 3) // 4)

    def words(self) -> Iterator[_Word]:
        """Yield the reply's words; each word starts with a space except the first."""
        for word in itertools.chain(_LEAD, _echo_words(self._prompt), self._filler()):
            pieces = self._pieces + word.pieces
            chars = self._chars + word.chars
            if max(pieces, (chars + 3) // 4) > self.limit:
                return
            self._pieces, self._chars = pieces, chars
            yield word

    def text(self) -> str:
        return "".join(word.text for word in self.words())

    def _filler(self) -> Iterator[_Word]:
        position = self._digest % _FILLER_COUNT
        step = 1 + (self._digest >> 8) % (_FILLER_COUNT - 1)
        while True:
            yield _FILLER[position]
            position = (position + step) % _FILLER_COUNT


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def _last_user_text(messages: list[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(messages[-1].get("content"))


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return " ".join(item for item in prompt if isinstance(item, str))


def demo_embedding(data: bytes, dimensions: int = _EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector derived from a hash of ``data``."""
    raw = hashlib.shake_128(data).digest(2 * dimensions)
    values = [value / 32767.5 - 1.0 for value in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


# -- wire formats ---------------------------------------------------------------


def _split_template(payload: Mapping[str, Any]) -> tuple[str, str]:
    """JSON-encode ``payload`` and split it where the sentinel string value sits."""
    head, _, tail = _dumps(payload).partition(_dumps(_SENTINEL)[1:-1])
    return head, tail


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload: Mapping[str, Any]) -> str:
    return f"data: {_dumps(payload)}\n\n"


class _ReplyFormat:
    """How one endpoint wraps reply text: full response and stream chunks."""

    id_prefix: ClassVar[str]
    object_name: ClassVar[str]
    chunk_object_name: ClassVar[str]

    def __init__(self, model: str) -> None:
        self.ident = f"{self.id_prefix}-{_RUN_ID}{next(_REQUEST_IDS)}"
        self.created = int(time.time())
        self.model = model

    def _envelope(self, object_name: str) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": object_name,
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._envelope(self.chunk_object_name), "choices": choices}

    def full(self, content: str, finish_reason: str) -> dict[str, Any]:
        choice = self._full_choice(content, finish_reason)
        return {**self._envelope(self.object_name), "choices": [choice]}

    @cached_property
    def _content_template(self) -> tuple[str, str]:
        head, tail = _split_template(self._chunk([self._delta_choice(_SENTINEL, None)]))
        return "data: " + head, tail + "\n\n"

    def content_event(self, escaped_text: str) -> str:
        head, tail = self._content_template
        return head + escaped_text + tail

    def finish_event(self, finish_reason: str) -> str:
        return _sse(self._chunk([self._delta_choice(None, finish_reason)]))

    def usage_event(self, usage: Mapping[str, int]) -> str:
        return _sse({**self._chunk([]), "usage": usage})

    def opening_events(self) -> tuple[str, ...]:
        return ()

    def _full_choice(self, content: str, finish_reason: str) -> dict[str, Any]:
        raise NotImplementedError

    def _delta_choice(self, content: str | None, finish_reason: str | None) -> dict[str, Any]:
        raise NotImplementedError


class _ChatFormat(_ReplyFormat):
    id_prefix = "chatcmpl"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"

    def opening_events(self) -> tuple[str, ...]:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return (_sse(self._chunk([choice])),)

    def _full_choice(self, content: str, finish_reason: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": content, "refusal": None}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}

    def _delta_choice(self, content: str | None, finish_reason: str | None) -> dict[str, Any]:
        delta = {} if content is None else {"content": content}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


class _CompletionFormat(_ReplyFormat):
    id_prefix = "cmpl"
    object_name = "text_completion"
    chunk_object_name = "text_completion"

    def _full_choice(self, content: str, finish_reason: str) -> dict[str, Any]:
        return {"text": content, "index": 0, "logprobs": None, "finish_reason": finish_reason}

    def _delta_choice(self, content: str | None, finish_reason: str | None) -> dict[str, Any]:
        return {"text": content or "", "index": 0, "logprobs": None, "finish_reason": finish_reason}


# -- errors and request parsing ---------------------------------------------------


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "You must provide a model parameter.", param="model")
    if model not in _MODELS_BY_ID:
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise ApiError(404, message, code="model_not_found", param="model")
    return model


def _require_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array.", param="messages")
    if not all(isinstance(message, dict) for message in messages):
        raise ApiError(400, "Each message must be an object.", param="messages")
    return messages


def _optional_max_tokens(body: Mapping[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, f"'{field}' must be an integer >= 1.", param=field)
        return value
    return None


def _wants_usage_chunk(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _seed(body: Mapping[str, Any]) -> int:
    seed = body.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _embedding_inputs(value: Any) -> list[bytes]:
    if isinstance(value, str):
        return [value.encode("utf-8", "surrogatepass")]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return [item.encode("utf-8", "surrogatepass") for item in value]
        if all(isinstance(item, int) for item in value):
            return [repr(value).encode()]
        if all(isinstance(item, list) for item in value):
            return [repr(item).encode() for item in value]
    raise ApiError(400, "'input' must be a string or a non-empty array.", param="input")


def _embedding_dimensions(body: Mapping[str, Any]) -> int:
    value = body.get("dimensions")
    if value is None:
        return _EMBEDDING_DIMENSIONS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "'dimensions' must be an integer.", param="dimensions")
    if not 1 <= value <= _MAX_EMBEDDING_DIMENSIONS:
        message = f"'dimensions' must be between 1 and {_MAX_EMBEDDING_DIMENSIONS}."
        raise ApiError(400, message, param="dimensions")
    return value


def _encode_embedding(vector: list[float], encoding_format: Any) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


@dataclass(frozen=True)
class _TextJob:
    """A parsed chat or completions request."""

    fmt: _ReplyFormat
    reply: DemoReply
    prompt_tokens: int
    stream: bool
    include_usage: bool


# -- handlers --------------------------------------------------------------------


class _NotFoundHandler(DemoHandler):
    def prepare(self) -> None:
        message = f"Unknown path {self.request.method} {self.request.path}."
        self.send_api_error(ApiError(404, message, code="not_found"))


def _model_object(model: DemoModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": _MODELS_CREATED, "owned_by": "lumen-demo"}


_MODEL_OBJECTS = {model.id: _model_object(model) for model in DEMO_MODELS}
_MODEL_LIST_BODY = _dumps({"object": "list", "data": list(_MODEL_OBJECTS.values())})


class _ModelsHandler(DemoHandler):
    def get(self) -> None:
        self.state.request_started("models")
        self.state.request_ended()
        self.set_header("Content-Type", "application/json")
        self.finish(_MODEL_LIST_BODY)


class _ModelHandler(DemoHandler):
    def get(self, model_id: str) -> None:
        self.state.request_started("models")
        self.state.request_ended()
        model = _MODEL_OBJECTS.get(model_id)
        if model is None:
            message = f"The model `{model_id}` does not exist or you do not have access to it."
            self.send_api_error(ApiError(404, message, code="model_not_found", param="model"))
        else:
            self.send_json(model)


class _InferenceHandler(FaultAwareHandler):
    """A POST endpoint that faults apply to."""

    endpoint: ClassVar[str]

    async def post(self) -> None:
        self.state.request_started(self.endpoint)
        try:
            await self.serve(_parse_json_object(self.request.body))
        except ApiError as error:
            self.send_api_error(error)
        finally:
            self.state.request_ended()

    async def serve(self, body: dict[str, Any]) -> None:
        raise NotImplementedError


class _TextHandler(_InferenceHandler):
    """Chat completions and completions: a DemoReply, streamed or whole."""

    async def serve(self, body: dict[str, Any]) -> None:
        job = self.parse(body)
        faults = await self.apply_leading_faults(job.stream)
        if faults is None:
            return
        if job.stream:
            await self.stream_reply(job, faults)
        elif job.reply.large:
            await self.send_large_reply(job, faults)
        else:
            self.send_reply(job, faults)

    def parse(self, body: dict[str, Any]) -> _TextJob:
        raise NotImplementedError

    def send_reply(self, job: _TextJob, faults: RequestFaults) -> None:
        text = job.reply.text()
        payload = job.fmt.full(text, job.reply.finish_reason)
        if not faults.no_usage:
            payload["usage"] = _usage(job.prompt_tokens, count_text_tokens(text))
        self.send_json(payload)

    async def send_large_reply(self, job: _TextJob, faults: RequestFaults) -> None:
        head, tail = _split_template(job.fmt.full(_SENTINEL, job.reply.finish_reason))
        self.set_header("Content-Type", "application/json")
        batch, size = [head], len(head)
        for word in job.reply.words():
            batch.append(word.escaped)
            size += len(word.escaped)
            if size >= _LARGE_BODY_BATCH_CHARS:
                if not await self.send_chunk("".join(batch), 0.0, mid_stream=False):
                    return
                batch, size = [], 0
        usage = "" if faults.no_usage else ',"usage":' + _dumps(self._usage(job))
        batch.append(tail[:-1] + usage + "}")
        self.finish("".join(batch))

    async def stream_reply(self, job: _TextJob, faults: RequestFaults) -> None:
        self.state.streams_started += 1
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        fmt, delay, sent = job.fmt, faults.chunk_delay_ms / 1000, 0
        contents = (fmt.content_event(word.escaped) for word in job.reply.words())
        for event in itertools.chain(fmt.opening_events(), contents):
            if faults.mid_stream is not None and sent == faults.after_chunks:
                self.break_stream(faults.mid_stream, sent)
                return
            if not await self.send_chunk(event, delay if sent else 0.0):
                return
            sent += 1
        if faults.mid_stream is not None:
            self.break_stream(faults.mid_stream, sent)
            return
        if not await self.send_chunk(fmt.finish_event(job.reply.finish_reason), delay):
            return
        ending = "data: [DONE]\n\n"
        if job.include_usage and not faults.no_usage:
            ending = fmt.usage_event(self._usage(job)) + ending
        self.state.streams_completed += 1
        self.finish(ending)

    @staticmethod
    def _usage(job: _TextJob) -> dict[str, int]:
        return _usage(job.prompt_tokens, job.reply.tokens)


class _ChatCompletionsHandler(_TextHandler):
    endpoint = "chat_completions"

    def parse(self, body: dict[str, Any]) -> _TextJob:
        model = _require_model(body)
        messages = _require_messages(body)
        stream = body.get("stream") is True
        reply = DemoReply(_last_user_text(messages), _optional_max_tokens(body), _seed(body))
        usage_chunk = stream and _wants_usage_chunk(body)
        prompt_tokens = count_message_tokens(messages)
        return _TextJob(_ChatFormat(model), reply, prompt_tokens, stream, usage_chunk)


class _CompletionsHandler(_TextHandler):
    endpoint = "completions"

    def parse(self, body: dict[str, Any]) -> _TextJob:
        model = _require_model(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)):
            raise ApiError(400, "'prompt' must be a string or an array.", param="prompt")
        stream = body.get("stream") is True
        reply = DemoReply(_prompt_text(prompt), _optional_max_tokens(body), _seed(body))
        usage_chunk = stream and _wants_usage_chunk(body)
        prompt_tokens = count_prompt_tokens(prompt)
        return _TextJob(_CompletionFormat(model), reply, prompt_tokens, stream, usage_chunk)


class _EmbeddingsHandler(_InferenceHandler):
    endpoint = "embeddings"

    async def serve(self, body: dict[str, Any]) -> None:
        model = _require_model(body)
        inputs = _embedding_inputs(body.get("input"))
        dimensions = _embedding_dimensions(body)
        faults = await self.apply_leading_faults(streaming=False)
        if faults is None:
            return
        encoding_format = body.get("encoding_format")
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _encode_embedding(demo_embedding(item, dimensions), encoding_format),
            }
            for index, item in enumerate(inputs)
        ]
        payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not faults.no_usage:
            tokens = count_prompt_tokens(body["input"])
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        self.send_json(payload)


class _FaultsHandler(DemoHandler):
    """``/_demo/faults``: GET lists, POST arms, DELETE clears (``?fault=NAME`` for one)."""

    def get(self) -> None:
        self.send_json({"faults": self.state.armed_faults()})

    def post(self) -> None:
        try:
            body = _parse_json_object(self.request.body)
            name = body.get("fault")
            if not isinstance(name, str) or name not in FAULT_NAMES:
                known = ", ".join(sorted(FAULT_NAMES))
                raise ApiError(400, f"'fault' must be one of: {known}.", param="fault")
            self.state.set_fault(
                name,
                count=body.get("count", 1),
                after_chunks=body.get("after_chunks", 1),
                latency_ms=body.get("latency_ms"),
            )
        except ApiError as error:
            self.send_api_error(error)
            return
        except ValueError as error:
            self.send_api_error(ApiError(400, str(error)))
            return
        self.send_json({"faults": self.state.armed_faults()})

    def delete(self) -> None:
        self.state.clear_faults(self.get_query_argument("fault", None))
        self.send_json({"faults": self.state.armed_faults()})


class _StatsHandler(DemoHandler):
    """``/_demo/stats``: GET reads the counters, DELETE zeroes them."""

    def get(self) -> None:
        self.send_json(self.state.stats())

    def delete(self) -> None:
        self.state.reset_stats()
        self.send_json(self.state.stats())


def _log_quietly(handler: tornado.web.RequestHandler) -> None:
    _log.debug("%d %s", handler.get_status(), handler._request_summary())


def make_app(
    state: DemoState | None = None, *, enable_control: bool = True
) -> tornado.web.Application:
    """The demo backend's routes; ``enable_control`` adds the ``/_demo/...`` endpoints."""
    args = {"state": state if state is not None else DemoState()}
    routes: list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]] = [
        (r"/v1/models", _ModelsHandler, args),
        (r"/v1/models/(.+)", _ModelHandler, args),
        (r"/v1/chat/completions", _ChatCompletionsHandler, args),
        (r"/v1/completions", _CompletionsHandler, args),
        (r"/v1/embeddings", _EmbeddingsHandler, args),
    ]
    if enable_control:
        routes += [(r"/_demo/faults", _FaultsHandler, args), (r"/_demo/stats", _StatsHandler, args)]
    return tornado.web.Application(
        routes,
        default_handler_class=_NotFoundHandler,
        default_handler_args=args,
        log_function=_log_quietly,
        compress_response=False,
        serve_traceback=False,
    )


# -- server ----------------------------------------------------------------------


class _CountingHTTPServer(HTTPServer):
    """An HTTPServer that keeps the demo state's connection gauge up to date."""

    demo_state: DemoState | None = None

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        if self.demo_state is not None:
            self.demo_state.connection_opened()
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        if self.demo_state is not None:
            self.demo_state.connection_closed()
        super().on_close(server_conn)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class DemoBackend:
    """The demo backend as an in-process server on the running event loop.

    ``async with DemoBackend() as backend:`` serves on a free loopback port until
    the block ends; ``backend.base_url`` is the OpenAI base URL.  Non-zero
    ``latency_ms`` / ``chunk_delay_ms`` set the state's global delays.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state: DemoState | None = None,
        latency_ms: float = 0.0,
        chunk_delay_ms: float = 0.0,
        *,
        enable_control: bool = True,
    ) -> None:
        self.host = host
        self.state = state if state is not None else DemoState()
        if latency_ms:
            self.state.latency_ms = float(latency_ms)
        if chunk_delay_ms:
            self.state.chunk_delay_ms = float(chunk_delay_ms)
        self._requested_port = port
        self._enable_control = enable_control
        self._server: _CountingHTTPServer | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the demo backend has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    async def start(self) -> None:
        self.listen()

    def listen(self) -> None:
        """Start serving on the current event loop; usable where no await is possible."""
        if self._server is not None:
            raise RuntimeError("the demo backend is already running")
        sockets = tornado.netutil.bind_sockets(self._requested_port, self.host, backlog=1024)
        server = _CountingHTTPServer(make_app(self.state, enable_control=self._enable_control))
        server.demo_state = self.state
        server.add_sockets(sockets)
        self._server = server
        self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, close every connection and let open handlers return."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        await server.close_all_connections()
        deadline = time.monotonic() + 1.0
        while self.state.active_requests > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    async def __aenter__(self) -> DemoBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# -- command line -------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lumen_jupyter.demo.backend",
        description="Serve Lumen's demo models over an OpenAI-compatible HTTP API.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between chunks")
    parser.add_argument("--no-control", action="store_true", help="disable the /_demo endpoints")
    return parser.parse_args(argv)


async def _serve_until_stopped(args: argparse.Namespace) -> None:
    backend = DemoBackend(
        args.host,
        args.port,
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        enable_control=not args.no_control,
    )
    await backend.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not POSIX
            loop.add_signal_handler(signum, stopped.set)
    print(f"demo backend listening on {backend.base_url}", flush=True)
    try:
        await stopped.wait()
    finally:
        await backend.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the demo backend until SIGINT or SIGTERM."""
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(args))


if __name__ == "__main__":
    main()
