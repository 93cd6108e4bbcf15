"""The redactor: configured secrets literally, known key shapes, request URIs, log records."""

from __future__ import annotations

import logging
import sys

import pytest

from lumen_jupyter.core.redact import MASK, RedactingFilter, Redactor, redact_uri

SHAPED = [
    "sk-" + "a1B2" * 12,
    "sk-proj-" + "Xy_9-" * 10,
    "sk-ant-api03-" + "Q" * 40,
    "sk-proj-abc123***xyz9",  # a provider's partly starred echo
    "sk_" + "k" * 43,
    "lkt_" + "t" * 43,
    "AIzaSy" + "D" * 33,
    "gsk_" + "g1" * 26,
    "xai-" + "x2" * 20,
    "hf_" + "h3" * 17,
    "ghp_" + "p4" * 18,
    "github_pat_" + "11AB" * 10,
    "AKIAIOSFODNN7EXAMPLE",
]


@pytest.mark.parametrize("secret", SHAPED)
def test_known_key_shapes_are_masked(secret: str) -> None:
    redact = Redactor()
    text = f'{{"message": "Incorrect API key provided: {secret}. See the docs"}}'
    cleaned = redact(text)
    assert secret not in cleaned and secret[:8] + secret[8:14] not in cleaned
    assert f"provided: {MASK}" in cleaned and cleaned.endswith('See the docs"}')


def test_bearer_tokens_of_any_shape_are_masked() -> None:
    redact = Redactor()
    assert redact("Authorization: Bearer abc.DEF-123_456~zz==") == f"Authorization: Bearer {MASK}"
    assert redact("header was 'token 0123456789abcdef'") == f"header was 'token {MASK}'"


def test_configured_secrets_are_masked_whatever_their_shape() -> None:
    redact = Redactor()
    plain = "Provider.Secret/value~42"
    assert redact(f"bad key {plain}!") == f"bad key {plain}!"  # no known shape
    redact.add([plain, "short", ""])
    assert redact(f"bad key {plain}!") == f"bad key {MASK}!"
    assert redact("a short word") == "a short word"  # too short to mask literally
    redact.discard(plain)
    assert plain in redact(plain)


def test_ordinary_text_is_left_alone() -> None:
    redact = Redactor()
    text = (
        "max_tokens must be at most 4096; the task key is 'skeleton'; ask_me-later; "
        "tokens: 12 in, 30 out; model demo-pro"
    )
    assert redact(text) == text


def test_request_uris_show_only_harmless_query_values() -> None:
    key = "sk_" + "k" * 43
    assert redact_uri(f"/lumen/api/profile?api_key={key}") == "/lumen/api/profile?api_key=[secret]"
    assert redact_uri(f"/lumen/api/usage?period=month&x={key}") == (
        "/lumen/api/usage?period=month&x=[secret]"
    )
    assert redact_uri(f"/lumen/api/usage?period={key}") == f"/lumen/api/usage?period={MASK}"
    assert redact_uri(f"/lumen/v1/x/{key}") == f"/lumen/v1/x/{MASK}"  # in the path too
    assert redact_uri("/lumen/api/keys") == "/lumen/api/keys"


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    key = "gsk_" + "g1" * 26
    records = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("lumen-redact-test")
    logger.propagate = False
    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("upstream said %s", f"bad key {key}")
        try:
            raise ValueError(f"refused {key}")
        except ValueError:
            logger.exception("failed")
            logger.error("again", exc_info=sys.exc_info())
    finally:
        logger.removeHandler(handler)
    assert len(records) == 3
    assert all(key not in record for record in records)
    assert records[0] == f"upstream said bad key {MASK}"
    assert f"ValueError: refused {MASK}" in records[1]
